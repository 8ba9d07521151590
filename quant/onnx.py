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

from edgesdk.quant.onnx_files import LargeOnnx, OnnxModel, as_model_file

# ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2; AVX-512 without VNNI) sum pairs of products in
# int16 (VPMADDUBSW), which saturates on full-range 8-bit weights: a graph that computes at 34 dB SQNR ran at 18 dB
# on such a CPU (tests/test_quant.py), and a one-step generator fell to 4 dB. 7-bit weights cannot saturate and cost
# ~1 dB; a bundle is exported once and run on whatever CPU the app lands on, so every ONNX Runtime bundle gets them.
REDUCE_RANGE = True


class FeedsReader(CalibrationDataReader):
    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def quantize_onnx_int8(model: OnnxModel, static: bool, calibration: Sequence[dict[str, np.ndarray]],
                       target: str, float_layers: Sequence[str] = (), percentile: bool = False,
                       float_activation_matmuls: bool = False) -> OnnxModel:
    """int8 Q/DQ: static (activation ranges from the calibration feeds, per target as the module says) or dynamic
    (int8 weights, activations quantized on the fly). ``float_layers`` (``edgesdk.quant.sensitivity`` names) stay
    fp32. ``percentile``: asymmetric activation ranges at the 99.999th percentile instead of min / max.
    ``float_activation_matmuls``: MatMuls of two activations stay fp32 (static only; see below)."""
    large = isinstance(model, LargeOnnx)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, out = Path(tmp) / "pre.onnx", Path(tmp) / "out.onnx"
        if large:
            # past 2 GB the pre-processing (shape inference over one in-memory message) cannot run; the quantizer
            # reads and writes external data itself
            prepared = model.path
        else:
            source = Path(tmp) / "in.onnx"
            source.write_bytes(model)
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = nodes_of_layers(prepared, float_layers) if float_layers else []
        if static and float_activation_matmuls:
            # A MatMul of two activations (attention's query x key and probabilities x value) has no weight to
            # quantize per channel: both sides would get one per-tensor range, and softmax probabilities on a uint8
            # grid cost a ViT most of its accuracy (trained deit_tiny on photos: 17.2 dB, top-1 87.5 % with them
            # at int8; 28.5 dB, 96.9 % with them in fp32, as XNNPACK's quantizer leaves them).
            excluded += activation_matmuls(prepared, may_rename=not large)
        if static:
            symmetric = target == "tensorrt"
            quantize_static(
                str(prepared), str(out), FeedsReader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                reduce_range=not symmetric and REDUCE_RANGE,
                # Symmetric int8 activations (TensorRT's only kind) waste half the range on one-sided tensors;
                # percentile ranges keep the clipping error down where min/max would be dominated by outliers.
                calibrate_method=CalibrationMethod.Percentile if symmetric or percentile else CalibrationMethod.MinMax,
                # Only the heavy ops: element-wise glue stays fp32, and so does the timestep, whose value
                # (0..999) an 8-bit grid would blur by several steps before the sinusoidal embedding.
                op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=excluded,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "CalibPercentile": 99.99 if symmetric else 99.999},
                use_external_data_format=large,
            )
        else:
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=REDUCE_RANGE, use_external_data_format=large, nodes_to_exclude=excluded)
        if not large:
            return out.read_bytes()
        return as_model_file(onnx.load(str(out)), model.path.stem)


def activation_matmuls(path: Path, may_rename: bool) -> list[str]:
    """Names of the MatMul nodes none of whose inputs is a constant (an initializer or a Constant node's output).
    Unnamed ones are named in the file first (``edgesdk_matmul_<i>``) where ``may_rename``, since the quantizer
    excludes nodes by name. (The exporter names every node.)"""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants |= {output for node in graph.node if node.op_type == "Constant" for output in node.output}
    found, renamed = [], False
    for i, node in enumerate(graph.node):
        if node.op_type == "MatMul" and not any(name in constants for name in node.input):
            if not node.name and not may_rename:
                continue  # a file we must not rewrite (a large model's own): the node stays int8
            if not node.name:
                node.name, renamed = f"edgesdk_matmul_{i}", True
            found.append(node.name)
    if renamed:
        onnx.save(model, str(path))
    return found


def nodes_of_layers(path: Path, layers: Sequence[str]) -> list[str]:
    """The Conv / MatMul / Gemm nodes of these layers: named ``<layer>/<op>`` at export
    (``edgesdk.export.onnx.name_layer_nodes``), or reading the initializer ``<layer>.weight``."""
    wanted = set(layers)
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1
            and (n.name.split("/")[0] in wanted or n.input[1].removesuffix(".weight") in wanted)]


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
    replace_nodes(model, nodes)
    return rewritten


def replace_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> None:
    """Give the graph these nodes, dropping initializers no node reads any more."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def quantize_onnx_4bit(model: bytes, group_size: int) -> bytes:
    """MatMulNBits: 4-bit weights in blocks along the input features, on the grid of ``edgesdk.quant.int4`` (the
    one ExecuTorch gets; ONNX Runtime's own quantizer picks other scales); accuracy level 4 quantizes the
    activations to int8 on the fly, the same regime as ExecuTorch's 8da4w. The graph must already be in
    matrix-product form (convolutions as im2col + MatMul, see ``edgesdk.quant.matmul_form``). A MatMul whose input
    width no block of 32 or more divides keeps fp32 weights, as on ExecuTorch."""
    from edgesdk.quant.int4 import group_for, scales_and_codes

    graph = onnx.load_from_string(model)
    gemm_as_matmul(graph)
    initializers = {t.name: t for t in graph.graph.initializer}
    nodes = []
    for node in graph.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        matrix = numpy_helper.to_array(weight) if weight is not None else None
        group = group_for(matrix.shape[0], group_size) if matrix is not None and matrix.ndim == 2 \
            else None
        if group is None:
            nodes.append(node)
            continue
        k, n = matrix.shape
        scales, codes = scales_and_codes(matrix.T, group)  # (N, K/group), (N, K)
        unsigned = (codes.astype(np.int16) + 8).astype(np.uint8).reshape(n, k // group, group)
        packed = unsigned[..., 0::2] | (unsigned[..., 1::2] << 4)  # element 2i in the low nibble
        prefix = f"{node.input[1]}_q4"
        graph.graph.initializer.extend([numpy_helper.from_array(packed, f"{prefix}_blocks"),
                                        numpy_helper.from_array(scales.reshape(-1), f"{prefix}_scales")])
        nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{prefix}_blocks", f"{prefix}_scales"],
                                      list(node.output), name=f"{node.name}_q4", domain="com.microsoft",
                                      K=k, N=n, bits=4, block_size=group, accuracy_level=4))
    replace_nodes(graph, nodes)
    if not any(o.domain == "com.microsoft" for o in graph.opset_import):
        graph.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return graph.SerializeToString()
