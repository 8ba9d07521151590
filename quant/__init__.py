"""edgesdk.quant: quantization configs (one typed object per scheme, carrying its behaviour) and the verb that applies
them per target (PT2E and torchao 8da4w for ExecuTorch; Q/DQ and MatMulNBits ONNX)."""

from edgesdk.quant.api import quantize
from edgesdk.quant.configs import (
           CONFIGS,
           BinaryConfig,
           Calibration,
           FP32Config,
           QuantConfig,
           W4Config,
           W8A8Config,
           W8Config,
           config_from_name,
)

__all__ = ["CONFIGS", "BinaryConfig", "Calibration", "FP32Config", "QuantConfig", "W4Config", "W8A8Config", "W8Config",
           "config_from_name", "quantize"]
