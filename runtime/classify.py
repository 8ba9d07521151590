"""Image classification over a `bnn` bundle (or any bundle whose model says task "classify"), torch-free.

Images arrive as files or (H, W, C) uint8 arrays; each is converted to the network's channel count and resized to
its input size when it differs (with a note saying so), normalised with the bundle's mean and std, and run in
batches. Results are the top-k classes with softmax probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesdk.runtime.backends import Session, executorch_runtime, open_session, session_kernel
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.image import center_crop

COMPONENT = "classifier"


@dataclass
class Prediction:
    source: str
    top: list[tuple[str, float]]  # (class, probability), best first
    notes: list[str] = field(default_factory=list)  # conversions applied to the input


def read_image(path: Path) -> np.ndarray:
    """A file as an (H, W, C) uint8 array (C = 1, 3 or 4 as stored); a clear error when it is not an image."""
    from edgesdk.runtime.image import read_picture

    array = np.asarray(read_picture(path), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def fit_image(image: np.ndarray, size: int, channels: int) -> tuple[np.ndarray, list[str]]:
    """Convert (H, W, C) uint8 to the network's channels and size; say what was changed."""
    from PIL import Image

    notes: list[str] = []
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise EdgeSDKError(f"an image is (H, W, C) with 1, 3 or 4 channels; got shape {tuple(image.shape)}")
    have = image.shape[2]
    pil = Image.fromarray(image[..., 0] if have == 1 else image)
    if have != channels:
        mode = "L" if channels == 1 else "RGB"
        notes.append(f"converted {have} channel(s) to {channels} ({pil.mode} -> {mode})")
        pil = pil.convert(mode)
    elif have == 4:
        pil = pil.convert("RGB")
    if pil.size != (size, size):
        cropped = " and center-cropped" if pil.size[0] != pil.size[1] else ""
        notes.append(f"resized {pil.size[0]}x{pil.size[1]} -> {size}x{size}{cropped}")
        array = center_crop(pil, size)  # as personalization fits its images: aspect kept, no distortion
    else:
        array = np.asarray(pil, dtype=np.uint8)
    return (array[..., None] if array.ndim == 2 else array), notes


def normalise_images(images_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, H, W, C) uint8 -> contiguous (N, C, H, W) float32, (x/255 - mean) / std per channel: a classifier's
    input, the same in training (``edgesdk.data.classification``) and here."""
    x = np.ascontiguousarray(images_uint8.astype(np.float32).transpose(0, 3, 1, 2)) / 255.0
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ImageClassifier:
    def __init__(self, bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        model = self.bundle.manifest.get("model", {})
        if model.get("task") != "classify":
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r} is a {self.bundle.family or 'unnamed'!r} bundle, "
                               "not an image classifier (family bnn)")
        self.classes: list[str] = list(model["classes"])
        self.image_size, self.channels = int(model["image_size"]), int(model["channels"])
        self.mean, self.std = list(model["mean"]), list(model["std"])
        self.backend = backend
        self.session: Session = open_session(self.bundle, COMPONENT, backend, threads)
        # which convolution kernel runs ("binary avx2 ...", "float"; None where the bundle offers no binary program)
        # and, where a binary program is offered but not run, the one-line reason
        self.kernel, self.kernel_note = session_kernel(self.session)
        binary = self.bundle.component(COMPONENT).binary_kernel.get("executorch")
        if backend == "executorch" and binary is not None and executorch_runtime() != "cpp":
            # checked: the binding's kernel registry is linked into its own library and exports no way to add to
            # it, so loading the binary program fails with OperatorMissing for edgesdk::binary_conv2d.out
            self.kernel = "float"
            self.kernel_note = (f"ExecuTorch's Python binding cannot load the {binary['op']} kernel of "
                                f"{binary['file']}; running the float program (edgesdk-run, the C++ runtime, runs "
                                "the binary one)")

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for (N, H, W, C) uint8 images already at the network's size and channels."""
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, self.channels):
            raise EdgeSDKError(f"expected (N, {self.image_size}, {self.image_size}, {self.channels}) uint8 images, got "
                               f"{tuple(images.shape)}; use classify() to convert and resize")
        return self.session.run({"image": normalise_images(images, self.mean, self.std)})["logits"]

    def classify(self, images: list[np.ndarray | str | Path], top_k: int = 3) -> list[Prediction]:
        if top_k < 1:
            raise EdgeSDKError(f"top-k must be at least 1, got {top_k}")
        if not images:
            raise EdgeSDKError("no images to classify")
        fitted, notes, sources = [], [], []
        for item in images:
            is_file = isinstance(item, (str, Path))
            array = read_image(Path(item)) if is_file else np.asarray(item)
            if not is_file and array.dtype != np.uint8:
                raise EdgeSDKError(f"image arrays must be uint8 (H, W, C), got {array.dtype}")
            image, changed = fit_image(array, self.image_size, self.channels)
            fitted.append(image)
            notes.append(changed)
            sources.append(str(item) if is_file else f"array {len(sources)}")
        probabilities = softmax(self.logits(np.stack(fitted)).astype(np.float64))
        k = min(top_k, len(self.classes))
        predictions = []
        for source, row, changed in zip(sources, probabilities, notes, strict=True):
            order = np.argsort(-row, kind="stable")[:k]
            predictions.append(Prediction(source, [(self.classes[i], float(row[i])) for i in order], changed))
        return predictions
