"""Memory truth: do int8 weights stay int8 once a backend has loaded them?

ONNX Runtime optimises a graph at session start; a constant-folding pass can turn DequantizeLinear(int8
weight) into an fp32 initializer, silently giving back the memory quantization saved. We ask ONNX Runtime
for the graph it will actually run (``optimized_model_filepath``) and compare weight bytes by dtype.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgesdk.runtime.onebit import model_source

INT_TYPES = ("int8", "uint8", "int4", "uint4")

# ONNX TensorProto.DataType -> (numpy's name for it, bytes per element as numpy_helper.to_array holds it: 4-bit
# types one byte per element, unpacked). STRING (8) has no size and is left out.
_DTYPES: dict[int, tuple[str, int]] = {
    1: ("float32", 4), 2: ("uint8", 1), 3: ("int8", 1), 4: ("uint16", 2), 5: ("int16", 2), 6: ("int32", 4),
    7: ("int64", 8), 9: ("bool", 1), 10: ("float16", 2), 11: ("float64", 8), 12: ("uint32", 4), 13: ("uint64", 8),
    14: ("complex64", 8), 15: ("complex128", 16), 16: ("bfloat16", 2), 17: ("float8_e4m3fn", 1),
    18: ("float8_e4m3fnuz", 1), 19: ("float8_e5m2", 1), 20: ("float8_e5m2fnuz", 1), 21: ("uint4", 1), 22: ("int4", 1),
    23: ("float4_e2m1fn", 1),
}


@dataclass(frozen=True)
class GraphSummary:
    """What the memory checks need from an ONNX model: its main graph's operators and weight bytes by dtype."""

    op_types: list[str]
    initializer_bytes: dict[str, int]


# The onnx package (31 MB, the export extra) is not needed to read that much: an ONNX file is a protobuf ModelProto,
# and the protobuf wire format is stable. Only the fields below are read; external weight data is never loaded.
_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_INITIALIZER, _NODE_OP_TYPE, _TENSOR_DIMS, _TENSOR_DATA_TYPE = 7, 1, 5, 4, 1, 2


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of a protobuf message: an int for varints and fixed-size fields (their bits),
    a view for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, wire, int.from_bytes(data[pos:pos + size], "little")
            pos += size
        else:
            raise ValueError(f"not an ONNX protobuf (wire type {wire} at byte {pos})")


def _tensor_bytes(tensor: memoryview) -> tuple[str, int] | None:
    dims: list[int] = []
    data_type = 0
    for number, wire, value in _fields(tensor):
        if number == _TENSOR_DIMS:
            if wire == 2:  # packed repeated int64
                assert isinstance(value, memoryview)
                pos = 0
                while pos < len(value):
                    dim, pos = _varint(value, pos)
                    dims.append(dim)
            else:
                assert isinstance(value, int)
                dims.append(value)
        elif number == _TENSOR_DATA_TYPE:
            assert isinstance(value, int)
            data_type = value
    if data_type not in _DTYPES:
        return None
    name, size = _DTYPES[data_type]
    count = 1
    for dim in dims:
        count *= dim
    return name, count * size


def read_graph(model: Path | bytes) -> GraphSummary:
    """The main graph's operators (in order) and initializer bytes by dtype of an ONNX file or its bytes."""
    data = memoryview(model.read_bytes() if isinstance(model, Path) else model)
    op_types: list[str] = []
    totals: dict[str, int] = {}
    for number, _, graph in _fields(data):
        if number != _MODEL_GRAPH or not isinstance(graph, memoryview):
            continue
        for field, _, value in _fields(graph):
            if field == _GRAPH_NODE and isinstance(value, memoryview):
                op_types += [bytes(v).decode() for f, _, v in _fields(value)
                             if f == _NODE_OP_TYPE and isinstance(v, memoryview)]
            elif field == _GRAPH_INITIALIZER and isinstance(value, memoryview):
                sized = _tensor_bytes(value)
                if sized:
                    totals[sized[0]] = totals.get(sized[0], 0) + sized[1]
    return GraphSummary(op_types, totals)


# The matrix work of a graph, as ONNX Runtime runs it: in integer kernels or in float ones.
INTEGER_KERNELS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
                   "MatMulIntegerToFloat", "MatMulNBits", "QGemm", "DynamicQuantizeLSTM")
FLOAT_KERNELS = ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "NchwcConv", "ConvTranspose")


def session_graph(path: Path, config: dict[str, str] | None = None) -> GraphSummary:
    """The graph ONNX Runtime actually runs, after its optimisations at session start, with the session options
    the runtime's own sessions use (``config`` overrides entries, e.g. to show what folding looks like)."""
    import onnxruntime as ort

    from edgesdk.runtime.backends import onnx_session_options

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = onnx_session_options(config=config)
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3  # the "hardware specific optimizations" notice is expected here
        # weights go to a file of their own beside the optimised graph: a model past 2 GB cannot be written as one
        # protobuf, and one with external data would otherwise point back at files this folder does not have
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         "optimized.onnx.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        source = model_source(path)  # a .1bit container: its unpacked bytes
        ort.InferenceSession(str(source) if isinstance(source, Path) else source, sess_options=options,
                             providers=["CPUExecutionProvider"])
        return read_graph(optimized)


def integer_kernel_share(graph: GraphSummary) -> dict:
    """Share of the matrix ops (conv, matmul, gemm) that run in integer kernels."""
    ops = graph.op_types
    integer = sum(op in INTEGER_KERNELS for op in ops)
    floating = sum(op in FLOAT_KERNELS for op in ops)
    return {"integer_kernel_share": round(integer / max(1, integer + floating), 4), "integer_ops": integer,
            "float_matrix_ops": floating}


def onnx_weight_residency(path: Path, config: dict[str, str] | None = None) -> dict:
    """Weight bytes by dtype in the file and in ONNX Runtime's optimised graph, and whether int8 survived."""
    in_memory = session_graph(path, config)
    residency = compare_residency(read_graph(model_source(path)).initializer_bytes, in_memory.initializer_bytes)
    return {**residency, **integer_kernel_share(in_memory)}


def compare_residency(in_file: dict[str, int], in_memory: dict[str, int]) -> dict:
    int_file = sum(v for k, v in in_file.items() if k in INT_TYPES)
    int_memory = sum(v for k, v in in_memory.items() if k in INT_TYPES)
    return {"file_bytes": in_file, "session_bytes": in_memory, "int_weight_bytes_file": int_file,
            "int_weight_bytes_session": int_memory,
            # a few percent may be folded legitimately (e.g. tiny bias tensors); most must stay integer
            "int_weights_kept": int_file == 0 or int_memory >= 0.95 * int_file}
