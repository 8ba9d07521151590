"""edgesdk.quant: quantization recipes and their per-target lowering (PT2E for ExecuTorch, Q/DQ ONNX)."""

from edgesdk.quant.api import quantize
from edgesdk.quant.recipes import FP32, RECIPES, W8, W8A8, Calibration, Recipe, check_targets, recipe_from_name

__all__ = ["FP32", "RECIPES", "W8", "W8A8", "Calibration", "Recipe", "check_targets", "quantize", "recipe_from_name"]
