"""ONNX models as the export and quantization stages pass them on: serialized bytes, or a graph file with its
weights as external data beside it once they pass what one protobuf message can hold (2 GB).

They live in quant because both rooms handle them and the arrow runs export -> quant: export lowers to them,
quant rewrites them, the bundle writer moves them into place.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

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
