"""torchvision beside our CPU torch: the registry's wheel is a CUDA build whose compiled ops do not load, yet
``import torchvision`` registers Python fallbacks for two of them (``nms``, ``qnms``) and fails without their
schemas. transformers imports torchvision whenever it is installed, so this matters to the Stable Diffusion import
and the CLIP tests as much as to the standard architectures (``edgesdk.zoo.standard``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import torch

# The library defining the schemas must live as long as the process (it unregisters them when collected).
_OPS_SCHEMAS: torch.library.Library | None = None


def make_torchvision_importable() -> bool:
    """Import torchvision, defining the two op schemas first when its compiled ops cannot load. False when it is not
    installed (or ``sys.modules`` says it is absent); other import failures propagate."""
    global _OPS_SCHEMAS
    if sys.modules.get("torchvision", False) is None or (
            "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None):
        return False
    try:
        importlib.import_module("torchvision")
        return True
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc) or _OPS_SCHEMAS is not None:
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package: import it again once the schemas exist
    _OPS_SCHEMAS = torch.library.Library("torchvision", "DEF")
    _OPS_SCHEMAS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _OPS_SCHEMAS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    importlib.import_module("torchvision")
    return True
