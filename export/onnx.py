"""Stage 2b: ONNX for ONNX Runtime (dynamic batch) and TensorRT-ready ONNX (static shapes), via the dynamo exporter."""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch.export import ExportedProgram

from edgesdk.runtime.errors import EdgeSDKError

OPSET = 18
# A protobuf message cannot exceed 2 GB; weights past this many bytes go to a ``NAME.onnx.data`` file next to the
# graph (ONNX external data, which ONNX Runtime and TensorRT's parser read from the graph's folder).
EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class LargeOnnx:
    """An ONNX model too big for one protobuf: ``path`` (the graph) with its weights in ``path.name + '.data'``
    beside it, in a temporary folder the bundle writer copies from."""

    path: Path

    @property
    def data_path(self) -> Path:
        return self.path.with_name(self.path.name + ".data")

    def graph(self) -> onnx.ModelProto:
        """The graph without its weights (op counts, inspection)."""
        return onnx.load(str(self.path), load_external_data=False)


OnnxModel = bytes | LargeOnnx  # what every ONNX stage passes on


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_large(model: onnx.ModelProto, name: str) -> LargeOnnx:
    """Write ``model`` with external data into a fresh temporary folder (removed by the bundle writer's copy)."""
    folder = Path(tempfile.mkdtemp(prefix="edgesdk-onnx-"))
    path = folder / f"{name}.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{name}.onnx.data", size_threshold=1024)
    return LargeOnnx(path)


def as_model_file(model: onnx.ModelProto, name: str) -> OnnxModel:
    """Bytes when the model fits in one protobuf, else external data."""
    return save_large(model, name) if weight_bytes(model) > EXTERNAL_DATA_BYTES else model.SerializeToString()


def load_model(data: OnnxModel) -> onnx.ModelProto:
    return onnx.load(str(data.path)) if isinstance(data, LargeOnnx) else onnx.load_from_string(data)


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
        onnx.checker.check_model(model if weight_bytes(model) <= EXTERNAL_DATA_BYTES else str(path))
        # The exporter annotates every node with its PyTorch origin (module path, stack, FX node): useful while
        # debugging an export, dead weight on a device (about 1 MB of the 12 MB tiny-sd UNet).
        for node in model.graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        return as_model_file(model, component)


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
