"""Standard architectures with weights that behave like trained ones: what users bring, for tests and benchmarks.

torchvision's ``resnet18``, ``mobilenet_v2``, ``mobilenet_v3_small``, ``efficientnet_b0`` and timm's
``deit_tiny_patch16_224``, unchanged but for a 10-class head, at 224x224 with ImageNet normalisation. No
pretrained weights can be downloaded here, so each is trained briefly from scratch on the photo image set
(``edgesdk.data.photos``: real photo pixels, 10 shape classes), its BatchNorm statistics estimated on photo crops at
224, by ``edgesdk train standard ARCH`` (``edgesdk.train.standard``); the weights live in a cache outside git,
``$EDGESDK_CACHE/standard/ARCH.safetensors`` (default ``~/.cache/edgesdk``).

Each architecture is a factory for ``edgesdk export --model edgesdk.zoo.standard:resnet18``: it returns the module
in eval mode, a batch of 8 training images as the (tracing) example, and the input/output names.

torchvision and timm are installed without their dependencies (``pip install --no-deps torchvision==0.29.1
timm==1.0.31``), so that no resolver replaces the CPU torch; ``vision_libraries()`` imports them.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from edgesdk.data.photos import CLASSES, IMAGENET_MEAN, IMAGENET_STD, PhotoShapes, normalised
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.torchvision_ops import make_torchvision_importable
from edgesdk.zoo.weights import load_weights

ARCHITECTURES: tuple[str, ...] = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "deit_tiny")
CNNS: tuple[str, ...] = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")
TIMM_NAMES: dict[str, str] = {"deit_tiny": "deit_tiny_patch16_224"}
INPUT_SIZE = 224
EXAMPLE_BATCH = 8
INPUT_NAMES, OUTPUT_NAMES = ["image"], ["logits"]
INSTALL = "pip install --no-deps torchvision==0.29.1 timm==1.0.31"

def _missing(module: str, exc: BaseException) -> EdgeSDKError:
    return EdgeSDKError(f"the standard architectures need torchvision and timm ({module} cannot be imported: "
                        f"{type(exc).__name__}); install them with: {INSTALL}")


def _import_torchvision() -> ModuleType:
    try:
        if make_torchvision_importable():
            return sys.modules["torchvision"]
    except (ImportError, RuntimeError) as exc:
        raise _missing("torchvision", exc) from None
    raise _missing("torchvision", ModuleNotFoundError("No module named 'torchvision'"))


def vision_libraries() -> tuple[ModuleType, ModuleType]:
    """(torchvision, timm), imported, or the one-line error that says how to install them."""
    torchvision = _import_torchvision()
    try:
        timm = importlib.import_module("timm")
    except (ImportError, RuntimeError) as exc:
        raise _missing("timm", exc) from None
    return torchvision, timm


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise EdgeSDKError(f"unknown standard architecture '{arch}'; choose from {', '.join(ARCHITECTURES)}")


def build_architecture(arch: str, num_classes: int = len(CLASSES), image_size: int = INPUT_SIZE,
                       **options: object) -> nn.Module:
    """The library's own definition, randomly initialised (by torch's generator), with a ``num_classes`` head.
    ``image_size`` matters to the ViT only (its position table); the CNNs take any size. ``options`` go to the
    library's constructor (training turns regularisation that is inactive in eval mode down with them)."""
    _check_arch(arch)
    torchvision, timm = vision_libraries()
    if arch in TIMM_NAMES:
        return timm.create_model(TIMM_NAMES[arch], pretrained=False, num_classes=num_classes, img_size=image_size,
                                 **options)
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, **options)


def cache_root() -> Path:
    """Where trained weights of the standard zoo live: ``$EDGESDK_CACHE`` or ``~/.cache/edgesdk``, never in git."""
    return Path(os.environ.get("EDGESDK_CACHE") or Path.home() / ".cache" / "edgesdk")


def weights_path(arch: str) -> Path:
    _check_arch(arch)
    return cache_root() / "standard" / f"{arch}.safetensors"


def load_standard(arch: str, path: Path | None = None) -> tuple[nn.Module, dict[str, object]]:
    """The architecture with its trained weights (from the cache by default), in eval mode, and the weights'
    metadata (training configuration, held-out accuracy, seconds spent)."""
    path = path or weights_path(arch)
    if not path.exists():
        raise EdgeSDKError(f"no trained weights for '{arch}' at {path}: make them with `edgesdk train standard "
                           f"{arch}` (a few minutes on one core; $EDGESDK_CACHE moves the cache)")
    tensors, metadata = load_weights(path)
    if metadata.get("arch") != arch:
        raise EdgeSDKError(f"{path} holds weights of '{metadata.get('arch')}', not '{arch}'")
    with torch.random.fork_rng():  # building draws an initialisation that the weights replace
        model = build_architecture(arch)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EdgeSDKError(f"{path} does not fit {arch}: {len(missing)} tensors missing, {len(unexpected)} unexpected "
                           "(retrain it with `edgesdk train standard`)")
    return model.eval(), metadata


def example_inputs(batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """A batch of training images at 224, normalised: the tracing example (parity is judged on data users give)."""
    images, _ = PhotoShapes("train").images(0, batch, INPUT_SIZE)
    return torch.from_numpy(normalised(images, IMAGENET_MEAN, IMAGENET_STD))


def standard_model(arch: str) -> tuple[nn.Module, tuple[torch.Tensor], tuple[list[str], list[str]]]:
    """What a factory returns: (module, example inputs, (input names, output names))."""
    model, _ = load_standard(arch)
    return model, (example_inputs(),), (list(INPUT_NAMES), list(OUTPUT_NAMES))


def resnet18() -> tuple[nn.Module, tuple[torch.Tensor], tuple[list[str], list[str]]]:
    return standard_model("resnet18")


def mobilenet_v2() -> tuple[nn.Module, tuple[torch.Tensor], tuple[list[str], list[str]]]:
    return standard_model("mobilenet_v2")


def mobilenet_v3_small() -> tuple[nn.Module, tuple[torch.Tensor], tuple[list[str], list[str]]]:
    return standard_model("mobilenet_v3_small")


def efficientnet_b0() -> tuple[nn.Module, tuple[torch.Tensor], tuple[list[str], list[str]]]:
    return standard_model("efficientnet_b0")


def deit_tiny() -> tuple[nn.Module, tuple[torch.Tensor], tuple[list[str], list[str]]]:
    return standard_model("deit_tiny")
