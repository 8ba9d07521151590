"""Memory truth: do int8 weights stay int8 once a backend has loaded them?

ONNX Runtime optimises a graph at session start; a constant-folding pass can turn DequantizeLinear(int8
weight) into an fp32 initializer, silently giving back the memory quantization saved. We ask ONNX Runtime
for the graph it will actually run (``optimized_model_filepath``) and compare weight bytes by dtype.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgesdk.runtime.onebit import model_source

INT_TYPES = ("int8", "uint8", "int4", "uint4")


def initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    totals: dict[str, int] = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        totals[str(array.dtype)] = totals.get(str(array.dtype), 0) + int(np.asarray(array).nbytes)
    return totals


# The matrix work of a graph, as ONNX Runtime runs it: in integer kernels or in float ones.
INTEGER_KERNELS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
                   "MatMulIntegerToFloat", "MatMulNBits", "QGemm", "DynamicQuantizeLSTM")
FLOAT_KERNELS = ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "NchwcConv", "ConvTranspose")


def session_graph(path: Path, config: dict[str, str] | None = None) -> onnx.ModelProto:
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
        return onnx.load(str(optimized))


def integer_kernel_share(graph: onnx.ModelProto) -> dict:
    """Share of the matrix ops (conv, matmul, gemm) that run in integer kernels."""
    ops = [node.op_type for node in graph.graph.node]
    integer = sum(op in INTEGER_KERNELS for op in ops)
    floating = sum(op in FLOAT_KERNELS for op in ops)
    return {"integer_kernel_share": round(integer / max(1, integer + floating), 4), "integer_ops": integer,
            "float_matrix_ops": floating}


def onnx_weight_residency(path: Path, config: dict[str, str] | None = None) -> dict:
    """Weight bytes by dtype in the file and in ONNX Runtime's optimised graph, and whether int8 survived."""
    in_memory = session_graph(path, config)
    source = model_source(path)
    in_file = onnx.load(str(source)) if isinstance(source, Path) else onnx.load_from_string(source)
    residency = compare_residency(initializer_bytes(in_file), initializer_bytes(in_memory))
    return {**residency, **integer_kernel_share(in_memory)}


def compare_residency(in_file: dict[str, int], in_memory: dict[str, int]) -> dict:
    int_file = sum(v for k, v in in_file.items() if k in INT_TYPES)
    int_memory = sum(v for k, v in in_memory.items() if k in INT_TYPES)
    return {"file_bytes": in_file, "session_bytes": in_memory, "int_weight_bytes_file": int_file,
            "int_weight_bytes_session": int_memory,
            # a few percent may be folded legitimately (e.g. tiny bias tensors); most must stay integer
            "int_weights_kept": int_file == 0 or int_memory >= 0.95 * int_file}
