"""Stage 2b: ONNX for ONNX Runtime (dynamic batch) and TensorRT-ready ONNX (static shapes), via the dynamo exporter."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import onnx
import torch
from torch.export import ExportedProgram

from edgesdk.quant import onnx_files
from edgesdk.quant.onnx_files import LargeOnnx, OnnxModel, as_model_file, weight_bytes
from edgesdk.runtime.errors import EdgeSDKError

OPSET = 18


def lower_to_onnx(program: ExportedProgram, input_names: list[str], output_names: list[str],
                  component: str) -> OnnxModel:
    """The component as ONNX: bytes, or a ``LargeOnnx`` with external data past ``EXTERNAL_DATA_BYTES`` of weights
    (the fp32 SD-1.5 UNet is 3.4 GB)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{component}.onnx"
        # torch configures its own loggers when the exporter loads; quiet the "torchvision is not installed"
        # notes it prints for every export (we use no torchvision ops).
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        try:
            onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=input_names,
                                             output_names=output_names, opset_version=OPSET, verbose=False)
            onnx_program.save(str(path))
        except Exception as exc:
            raise EdgeSDKError(f"ONNX export failed for component '{component}': {_reason(exc)}") from exc
        model = onnx.load(str(path))  # loads external weights too, if the exporter wrote any
        # the checker takes the path form past 2 GB (it cannot serialise the message)
        onnx.checker.check_model(model if weight_bytes(model) <= onnx_files.EXTERNAL_DATA_BYTES else str(path))
        name_layer_nodes(model, program)
        # The exporter annotates every node with its PyTorch origin (module path, stack, FX node): useful while
        # debugging an export, dead weight on a device (about 1 MB of the 12 MB tiny-sd UNet).
        for node in model.graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        return as_model_file(model, component)


LAYER_OPS = ("Conv", "MatMul", "Gemm")
_WEIGHT_ARG = re.compile(r"args = \(%\w+, %(\w+)")


def name_layer_nodes(model: onnx.ModelProto, program: ExportedProgram) -> None:
    """Name each Conv / MatMul / Gemm node that applies a parameter ``<layer>/<op>``, ``<layer>`` its weight's path
    without ``.weight`` (``edgesdk.quant.sensitivity``'s names): the exporter folds a 3-D linear layer's transposed
    weight into an anonymous initializer, so only the node's origin (the FX node it came from, read before that
    annotation is dropped) still says which layer it is. Per-layer choices (``--fallback``) find their nodes by it."""
    parameters = program.graph_signature.inputs_to_parameters  # placeholder -> parameter path
    taken = {n.name for n in model.graph.node}
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        origin = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.fx_node"), "")
        found = _WEIGHT_ARG.search(origin)
        path = parameters.get(found.group(1)) if found else None
        if path is None or not path.endswith(".weight"):
            continue
        name, count = f"{path.removesuffix('.weight')}/{node.op_type}", 1
        while name in taken:
            count += 1
            name = f"{path.removesuffix('.weight')}/{node.op_type}_{count}"
        taken.add(name)
        node.name = name


def _reason(exc: Exception) -> str:
    """The line that names the op the exporter could not translate, if there is one."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    found = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)'", str(exc))
    if found:
        return f"no ONNX translation for operator {found.group(1)}"
    return lines[0]


def onnx_op_counts(data: OnnxModel) -> dict[str, int]:
    counts: dict[str, int] = {}
    graph = data.graph() if isinstance(data, LargeOnnx) else onnx.load_from_string(data)
    for node in graph.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
