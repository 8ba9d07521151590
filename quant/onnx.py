"""ONNX Runtime and TensorRT quantization: Q/DQ ONNX via onnxruntime.quantization.

- ``onnx`` target: static QDQ with uint8 activations and int8 per-channel weights (ONNX Runtime's fastest CPU
  path), or dynamic int8 weights for ``w8``.
- ``tensorrt`` target: explicit, symmetric int8 Q/DQ on both (what TensorRT's explicit quantization takes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgesdk.quant.recipes import Recipe
from edgesdk.runtime.errors import EdgeSDKError


class FeedsReader(CalibrationDataReader):
    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def quantize_onnx(model: bytes, recipe: Recipe, calibration: Sequence[dict[str, np.ndarray]], target: str) -> bytes:
    if recipe.name == "fp32":
        return model
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, out = Path(tmp) / "in.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "out.onnx"
        source.write_bytes(model)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if recipe.is_static:
            if not calibration:
                raise EdgeSDKError(f"recipe '{recipe.name}' needs calibration data and none was given")
            symmetric = target == "tensorrt"
            quantize_static(
                str(prepared), str(out), FeedsReader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                # Symmetric int8 activations (TensorRT's only kind) waste half the range on one-sided tensors;
                # percentile ranges keep the clipping error down where min/max would be dominated by outliers.
                calibrate_method=CalibrationMethod.Percentile if symmetric else CalibrationMethod.MinMax,
                # Only the heavy ops: element-wise glue stays fp32, and so does the timestep, whose value
                # (0..999) an 8-bit grid would blur by several steps before the sinusoidal embedding.
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "CalibPercentile": 99.99},
            )
        else:
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True)
        return out.read_bytes()
