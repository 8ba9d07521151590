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
import onnx
from onnx import helper, numpy_helper
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
    if recipe.weight_bits == 4:
        return quantize_onnx_4bit(model, recipe)
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


def gemm_as_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm(x, W, b) with a constant W as MatMul(x, W') + b, the form MatMulNBits replaces. Returns how
    many were rewritten. (The exporter writes a 2-D linear layer as Gemm; MatMulNBits only takes MatMul.)"""
    initializers = {t.name: t for t in model.graph.initializer}
    rewritten, nodes = 0, []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.input[1]}_kn_{rewritten}"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return rewritten


def quantize_onnx_4bit(model: bytes, recipe: Recipe) -> bytes:
    """MatMulNBits: 4-bit weights in blocks along the input features, symmetric; accuracy level 4 quantizes the
    activations to int8 on the fly, the same regime as ExecuTorch's 8da4w. The graph must already be in
    matrix-product form (convolutions as im2col + MatMul, see ``edgesdk.quant.matmul_form``)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    graph = onnx.load_from_string(model)
    gemm_as_matmul(graph)
    quantizer = MatMulNBitsQuantizer(graph, bits=4, block_size=recipe.group_size or 64, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    return quantizer.model.model.SerializeToString()
