"""One verb: ``quantize(model, config, ...)`` for a torch model, a captured program, or an ONNX graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgesdk.quant.configs import QuantConfig
from edgesdk.runtime.errors import EdgeSDKError

if TYPE_CHECKING:  # torch is imported when a torch model is quantized: reading a config (the CLI, the families'
    # table) costs nothing
    from torch import Tensor, nn
    from torch.export import ExportedProgram


def quantize(model: nn.Module | ExportedProgram | bytes, config: QuantConfig, *,
             example_inputs: tuple[Tensor, ...] | None = None,
             calibration: Sequence[tuple[Tensor, ...]] = (), target: str = "executorch",
             input_names: Sequence[str] | None = None) -> ExportedProgram | bytes:
    """Quantize for one target.

    - an ``nn.Module`` (with ``example_inputs``) or an ``ExportedProgram``, for ExecuTorch: a quantized
      ``ExportedProgram`` ready for ``to_edge_transform_and_lower``;
    - ONNX bytes, for ``target="onnx"`` or ``"tensorrt"``: quantized Q/DQ ONNX bytes (calibration tuples are
      matched to ``input_names``). With ``W4Config`` only MatMul / Gemm weights become 4-bit here; convolutions do too
      when the graph was exported from ``edgesdk.quant.matmul_form.linear_layer_program`` (as ``edgesdk export``
      does).
    """
    if isinstance(model, bytes):
        if target not in ("onnx", "tensorrt"):
            raise EdgeSDKError(f"an ONNX graph is quantized for target onnx or tensorrt, not '{target}'")
        names = list(input_names or [])
        if calibration and len(names) != len(calibration[0]):
            raise EdgeSDKError("pass input_names matching the calibration tuples to quantize an ONNX graph")
        feeds = [{n: np.asarray(t) for n, t in zip(names, inputs, strict=True)} for inputs in calibration]
        return config.quantize_onnx(model, feeds, target)
    import torch
    from torch.export import ExportedProgram

    if target != "executorch":
        raise EdgeSDKError(f"a torch model is quantized here for target executorch; for '{target}' export it to "
                           "ONNX first (edgesdk.export.onnx.lower_to_onnx) and pass the bytes")
    if isinstance(model, ExportedProgram):
        program = model
        example_inputs = example_inputs or tuple(model.example_inputs[0])
    else:
        if example_inputs is None:
            raise EdgeSDKError("quantizing an nn.Module needs example_inputs")
        with torch.no_grad():
            program = torch.export.export(model.eval(), example_inputs)
    return config.quantize_program(program, calibration, example_inputs)
