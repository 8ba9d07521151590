"""Stage 1 of an export: describe each component and capture it with torch.export.

A component is captured in at most two shape regimes, each once:
- static: every dim fixed (batch = ``static_batch``). ExecuTorch and the TensorRT-ready ONNX use it,
  because XNNPACK delegates a fully static graph in one piece (with a dynamic batch, every reshape falls
  out of the delegate) and TensorRT wants fixed shapes or explicit profiles.
- dynamic batch: ONNX Runtime uses it, so one file serves batch 1..max (CFG pairs, ZO query batches).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from edgesdk.runtime.errors import EdgeSDKError


@dataclass
class ComponentSpec:
    """What to export: a module, example inputs at the static batch, and the names of its tensors."""

    name: str
    module: nn.Module
    example_inputs: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    static_batch: int = 1
    max_batch: int = 8
    # more static batches for ExecuTorch, as extra methods of the same .pte (weights stored once): e.g. the n+1
    # queries of one zeroth-order personalization step run as one forward at batch 3
    extra_batches: tuple[int, ...] = ()
    # inputs parity (and a recipe's SQNR floor) is judged on, each a tuple at the static batch: held-out real data
    # where the user gave some. Empty: the example inputs, which are for tracing and may be unlike real data.
    evaluation_inputs: tuple[tuple[Tensor, ...], ...] = ()
    # the same network with its binary convolutions as edgesdk::binary_conv2d (quant/binary_op.py): with recipe
    # binary, lowered to a second ExecuTorch program whose binary layers compute in binary (C++ runtime only)
    binary_module: nn.Module | None = None

    def __post_init__(self) -> None:
        # torch.export records the example's memory layout: an ExecuTorch program traced on a channels-last view
        # (e.g. numpy's transpose of an HWC image batch) expects that layout, and the runtime feeds contiguous
        # arrays, so the program would read every pixel in the wrong place. Trace on contiguous inputs.
        self.example_inputs = tuple(t.contiguous() for t in self.example_inputs)

    def io_metadata(self, outputs: tuple[Tensor, ...]) -> tuple[list[dict], list[dict]]:
        """Manifest entries: dim 0 is the symbolic "batch", the rest are fixed."""

        def describe(name: str, tensor: Tensor) -> dict:
            return {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                    "shape": ["batch", *tensor.shape[1:]]}

        inputs = [describe(n, t) for n, t in zip(self.input_names, self.example_inputs, strict=True)]
        outs = [describe(n, t) for n, t in zip(self.output_names, outputs, strict=True)]
        return inputs, outs


@dataclass
class CapturedComponent:
    spec: ComponentSpec
    static: ExportedProgram
    dynamic: ExportedProgram | None
    example_outputs: tuple[Tensor, ...] = field(default_factory=tuple)
    why_static: str = ""  # why no dynamic-batch capture exists (when one was asked for)


def to_eval(module: nn.Module) -> nn.Module:
    """module.eval(), except for the module of a loaded .pt2 program, which is already in inference form
    (and refuses .eval())."""
    try:
        module.eval()
    except NotImplementedError:
        pass
    return module


def _as_tuple(value: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def capture(spec: ComponentSpec, dynamic_batch: bool = True) -> CapturedComponent:
    """torch.export the component (static, and with a dynamic batch when asked)."""
    module = to_eval(spec.module)
    try:
        with torch.no_grad():
            outputs = _as_tuple(module(*spec.example_inputs))
            static = torch.export.export(module, spec.example_inputs)
    except Exception as exc:  # torch.export raises many types; the user needs the component and the reason
        raise EdgeSDKError(f"torch.export could not capture component '{spec.name}': {_first_line(exc)}") from exc
    dynamic, why_static = None, ""
    if dynamic_batch:
        batch = Dim("batch", min=1, max=spec.max_batch)
        # torch.export specialises a dim whose example size is 1, so trace the dynamic one at batch 2.
        examples = tuple(torch.cat([t, t]) if t.shape[0] == 1 else t for t in spec.example_inputs)
        try:
            with torch.no_grad():
                dynamic = torch.export.export(module, examples,
                                              dynamic_shapes=tuple({0: batch} for _ in spec.example_inputs))
        except Exception as exc:  # a model whose batch is baked in: its ONNX file keeps the static batch
            why_static = _first_line(exc)
    return CapturedComponent(spec=spec, static=static, dynamic=dynamic, example_outputs=outputs,
                             why_static=why_static)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def inputs_at_batch(inputs: tuple[Tensor, ...], batch: int) -> tuple[Tensor, ...]:
    """Example inputs with ``batch`` rows (rows repeated cyclically)."""
    return tuple(t[torch.arange(batch) % t.shape[0]] for t in inputs)
