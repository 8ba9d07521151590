"""The full-size bundles the tests share: each is exported once per test run and read by every test module, every
pytest-xdist worker and the C++ runtime's ctest fixtures (runtime/cpp/tests/*_fixtures.py).

    from tests.bundles import shared_bundle
    path = shared_bundle("tiny-sd")

Where they live: ``$EDGESDK_TEST_BUNDLES`` when set (`make test` points it at build/test-bundles, empties it at the
start of the run and hands the same folder to ctest), else a folder beside pytest's per-run temporary folders,
which every xdist worker of the run sees. The first process that asks for a bundle exports it under a file lock;
the others wait for it and open the same files. A bundle folder is complete when it exists: the export writes it
under a temporary name and renames it at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

QUIET = {"log": lambda _message: None}


def _tiny_sd(out: Path) -> Path:
    from edgesdk.exporting import export_model

    return export_model("tiny-sd", out, "executorch,onnx,tensorrt", **QUIET)


def _bnn(dataset: str) -> Callable[[Path], Path]:
    def build(out: Path) -> Path:
        from edgesdk.exporting import export_model
        from edgesdk.zoo.bnn import default_bnn_path

        return export_model("bnn", out, "executorch,onnx", weights=default_bnn_path(dataset), **QUIET)

    return build


def _onestep(out: Path) -> Path:
    from edgesdk.exporting import export_model

    return export_model("onestep", out, "executorch,onnx", **QUIET)


def _stable_diffusion(out: Path) -> Path:
    """A tiny random SD-1.5-shaped diffusers pipeline (written from configs, no download), imported on both
    backends with every ONNX file through the external-data route that > 2 GB models take. Without the ZO batch
    method (--zo-batch 0: its personalization runs the batch-2 method in chunks): batch methods are tiny-sd's to
    test, on both runtimes, and a second UNet method would double the longest lowering of the suite."""
    import edgesdk.quant.onnx_files as onnx_stage
    from edgesdk.exporting import export_diffusers
    from edgesdk.zoo.diffusers_sd import write_random_pipeline

    folder = write_random_pipeline(out.parent / f".{out.name}.diffusers", "tiny", seed=0)
    saved = onnx_stage.EXTERNAL_DATA_BYTES
    onnx_stage.EXTERNAL_DATA_BYTES = 0
    try:
        return export_diffusers(folder, out, "executorch,onnx", zo_batch=0, **QUIET)
    finally:
        onnx_stage.EXTERNAL_DATA_BYTES = saved
        shutil.rmtree(folder, ignore_errors=True)


# name -> how it is made. Bundles exported from the shipped weights (the defaults of `edgesdk export FAMILY`).
BUNDLES: dict[str, Callable[[Path], Path]] = {
    "tiny-sd": _tiny_sd,  # fp32, every target: the shipped model as users export it
    "bnn-digits": _bnn("digits"),
    "bnn-shapes": _bnn("shapes"),
    "onestep": _onestep,
    "stable-diffusion": _stable_diffusion,
}


def bundle_root(default: Path | None = None) -> Path:
    """``$EDGESDK_TEST_BUNDLES``, else ``default`` (pytest passes a folder all its workers share)."""
    configured = os.environ.get("EDGESDK_TEST_BUNDLES")
    if configured:
        return Path(configured).resolve()
    if default is None:
        raise RuntimeError("set EDGESDK_TEST_BUNDLES to the folder the shared test bundles live in")
    return default


def shared_bundle(name: str, root: Path | None = None) -> Path:
    """The bundle ``name`` of BUNDLES under ``root`` (see bundle_root), exported by whichever process asks first.
    Every bundle handed out is checked against the bundle schema first (docs/bundle-schema.json, both readers): what
    the exporters write must always open, and every shared bundle is asked for by some test in each run."""
    from edgesdk.runtime.bundle import Bundle

    root = bundle_root(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}.edge"
    with FileLock(str(root / f"{name}.lock")):
        if not (target / "manifest.json").exists():
            BUNDLES[name](target)
    Bundle.open(target, verify_checksums=False)  # the schema and cross-field checks; milliseconds
    return target


def link_bundle(source: Path, target: Path) -> Path:
    """``target``: a copy of the bundle ``source`` made of hard links (real copies across file systems), so that
    fixture folders hold the shared bundles without their bytes twice. Readers must not write into it."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)
    return target
