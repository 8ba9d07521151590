"""edgesdk.quant: quantization recipes and their per-target lowering (PT2E and torchao 8da4w for ExecuTorch; Q/DQ and
MatMulNBits ONNX)."""

from edgesdk.quant.api import quantize
from edgesdk.quant.recipes import (
           FP32,
           RECIPES,
           W4,
           W8,
           W8A8,
           Binary,
           Calibration,
           Recipe,
           check_targets,
           recipe_from_name,
)

__all__ = ["FP32", "RECIPES", "W4", "W8", "W8A8", "Binary", "Calibration", "Recipe", "check_targets", "quantize",
           "recipe_from_name"]
