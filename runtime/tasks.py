"""Open any bundle for what it does: the manifest names the task, this table maps it to the runtime object.

    pipe = open_pipeline("tiny-sd.edge", backend="onnx")   # TextToImage
    images = pipe.sample(["a red star on a blue background"], seed=0)

A new family whose bundles another task opens adds one line to `TASKS`.
"""

from __future__ import annotations

from pathlib import Path

from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.classify import ImageClassifier
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.onestep import OneStepTextToImage
from edgesdk.runtime.pipeline import ComponentFactory, ComponentPipeline, TextToImage
from edgesdk.runtime.restore import VideoRestorer

Pipeline = TextToImage | OneStepTextToImage | ImageClassifier | VideoRestorer
TASKS: dict[str, type[Pipeline]] = {
    "text-to-image": TextToImage,
    "one-step-text-to-image": OneStepTextToImage,
    "classify": ImageClassifier,
    "restore": VideoRestorer,
}
# which CLI command serves each task, for the error a command gives a bundle of another task
COMMANDS = {"text-to-image": "sample", "one-step-text-to-image": "sample", "classify": "classify",
            "restore": "restore", "run": "run"}


def open_pipeline(bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None) -> Pipeline:
    """The runtime object for the bundle's task (verified first), on ``backend``."""
    opened = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    task = opened.task
    if task not in TASKS:
        raise EdgeSDKError(f"bundle {opened.root.name!r} (task {task!r}) has no pipeline; run its components with "
                           "`edgesdk run`")
    return TASKS[task](opened, backend=backend, threads=threads)


def open_text_to_image(bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None,
                       session_factory: ComponentFactory | None = None) -> ComponentPipeline:
    """``open_pipeline`` for what makes images from prompts (``sample``, prompt accuracy): any other task is a
    one-line error naming the command that serves it. ``session_factory`` replaces the backend (eager references)."""
    opened = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    pipeline = TASKS.get(opened.task)
    if pipeline is None or not issubclass(pipeline, ComponentPipeline):
        command = COMMANDS.get(opened.task, "run")
        raise EdgeSDKError(f"bundle {opened.root.name!r} is a {opened.task!r} bundle, not text-to-image; use "
                           f"`edgesdk {command}`")
    return pipeline(opened, backend=backend, threads=threads, session_factory=session_factory)
