"""Per-layer sensitivity to int8, and the layers to keep in float (``--fallback auto``).

Each convolution and linear layer that the static int8 recipe quantizes is simulated quantized on its own (its input
and output activations per tensor, on the ranges recorded on the calibration data; its weights per output channel,
symmetric), everything else in fp32, on the evaluation (held-out) data. The SQNR of the model's outputs against fp32
says how much that layer alone costs; the share of the noise summed over layers says which few dominate. This is the
usual cheap stand-in for exporting with one layer quantized at a time (which would cost one export per layer); the
real exports then judge the result, target by target.

A layer is named by its weight's parameter path without ``.weight`` (``layer1.0.conv1``): the name the PT2E graph's
``get_attr`` node and the ONNX exporter's initializer both carry, so one list of names excludes the same layers on
every target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx
from torch.export import ExportedProgram

QUANTIZED_OPS = {torch.ops.aten.conv2d.default: "conv2d", torch.ops.aten.linear.default: "linear"}
INT8_LEVELS = 255  # asymmetric activations: -128..127
WEIGHT_LEVEL = 127  # symmetric weights: -127..127
# the simulated SQNR the chosen float layers must reach above the floor: the simulation ignores the targets' own
# rounding (kernel accumulation, fused activations, 7-bit weights on ONNX Runtime), which cost a few dB more
FALLBACK_MARGIN_DB = 3.0
SQNR_CAP_DB = 200.0  # JSON holds no infinity (a layer whose rounding never reaches the outputs)


def layer_name(node: fx.Node) -> str:
    """The name of a conv / linear node's layer: its weight's attribute path without ``.weight`` (the graph node's
    own name where the weight is computed rather than stored)."""
    weight = node.args[1] if len(node.args) > 1 else None
    if isinstance(weight, fx.Node) and weight.op == "get_attr" and isinstance(weight.target, str):
        return weight.target.removesuffix(".weight")
    return node.name


def quantizable_layers(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_function" and n.target in QUANTIZED_OPS]


def fake_quant_activation(x: Tensor, low: float, high: float) -> Tensor:
    """x on the int8 grid spanning [low, high] (widened to hold 0, as affine int8 does)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / INT8_LEVELS
    if scale <= 0.0:
        return x
    zero_point = round(-low / scale) - 128
    return (torch.clamp(torch.round(x / scale) + zero_point, -128, 127) - zero_point) * scale


def fake_quant_weight(weight: Tensor) -> Tensor:
    """Per output channel (dimension 0), symmetric int8."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / WEIGHT_LEVEL).clamp_min(torch.finfo(torch.float32).tiny)
    scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(torch.round(weight / scale), -WEIGHT_LEVEL, WEIGHT_LEVEL) * scale


class _RangeRecorder(fx.Interpreter):
    """Records min / max of every quantizable layer's input and output over the calibration inputs."""

    def __init__(self, module: fx.GraphModule, layers: dict[str, str]) -> None:
        super().__init__(module)
        self.layers = layers  # node name -> layer name
        self.ranges: dict[str, list[float]] = {}  # layer -> [in_low, in_high, out_low, out_high]

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        if n.name in self.layers:
            x = self.env[n.args[0]]
            seen = [float(x.min()), float(x.max()), float(out.min()), float(out.max())]
            old = self.ranges.get(self.layers[n.name])
            self.ranges[self.layers[n.name]] = seen if old is None else [
                min(old[0], seen[0]), max(old[1], seen[1]), min(old[2], seen[2]), max(old[3], seen[3])]
        return out


class _Simulator(fx.Interpreter):
    """Runs the graph with the layers in ``quantized`` on the int8 grid, the rest in fp32."""

    def __init__(self, module: fx.GraphModule, layers: dict[str, str], ranges: dict[str, list[float]],
                 quantized: set[str]) -> None:
        super().__init__(module)
        self.layers, self.ranges, self.quantized = layers, ranges, quantized

    def run_node(self, n: fx.Node) -> object:
        name = self.layers.get(n.name)
        if name is None or name not in self.quantized:
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        in_low, in_high, out_low, out_high = self.ranges[name]
        args = (fake_quant_activation(args[0], in_low, in_high), fake_quant_weight(args[1]), *args[2:])
        return fake_quant_activation(n.target(*args, **kwargs), out_low, out_high)


@dataclass
class LayerSensitivity:
    layer: str
    op: str
    sqnr_db: float  # the model's output SQNR vs fp32 with this layer alone quantized
    noise_share: float  # this layer's share of the noise summed over all layers quantized one at a time

    def to_dict(self) -> dict:
        return {"layer": self.layer, "op": self.op, "sqnr_db": round(min(self.sqnr_db, SQNR_CAP_DB), 2),
                "noise_share": round(self.noise_share, 4)}


@dataclass
class SensitivityReport:
    """Per-layer figures (worst first) and a simulator of any set of float layers, on the evaluation rows."""

    layers: list[LayerSensitivity]
    all_quantized_sqnr_db: float  # simulated: every layer quantized
    rows: int
    simulate: Callable[[Sequence[str]], float] = field(repr=False)

    def to_dict(self) -> dict:
        return {"method": "simulated int8, one layer at a time (per-tensor activations on the calibration ranges, "
                          "per-channel weights), output SQNR vs fp32",
                "rows": self.rows, "all_layers_sqnr_db": round(min(self.all_quantized_sqnr_db, SQNR_CAP_DB), 2),
                "layers": [s.to_dict() for s in self.layers]}

    def float_layers_for(self, target_db: float) -> list[str]:
        """The fewest most sensitive layers to keep in float for the simulated SQNR to reach ``target_db`` (all of
        them if even that does not). Sensitivity order, found by doubling then bisection: a handful of
        simulations, not one per layer."""
        order = [s.layer for s in self.layers]
        if self.all_quantized_sqnr_db >= target_db:
            return []

        def reaches(count: int) -> bool:
            return self.simulate(order[:count]) >= target_db

        high = 1
        while high < len(order) and not reaches(high):
            high *= 2
        high = min(high, len(order))
        low = high // 2  # reaches(low) is false (or low == 0, the all-quantized case, also false)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if reaches(middle) else (middle, high)
        return order[:high]


def _sqnr_db(reference: list[Tensor], candidate: list[Tensor]) -> float:
    """The worst output's SQNR in dB over all rows."""
    worst = math.inf
    for ref, got in zip(reference, candidate, strict=True):
        noise = float(((got.double() - ref.double()) ** 2).sum())
        signal = float((ref.double() ** 2).sum())
        worst = min(worst, math.inf if noise == 0.0 else 10.0 * math.log10(max(signal, 1e-30) / noise))
    return worst


def _outputs(result: object) -> list[Tensor]:
    items = result if isinstance(result, tuple | list) else (result,)
    return [t for t in items if isinstance(t, Tensor)]


@torch.no_grad()
def layer_sensitivity(program: ExportedProgram, calibration: Sequence[tuple[Tensor, ...]],
                      evaluation: Sequence[tuple[Tensor, ...]]) -> SensitivityReport:
    """Sensitivity of every quantizable layer of ``program`` (ranges from ``calibration``, SQNR on ``evaluation``)."""
    module = program.module()
    nodes = quantizable_layers(module.graph)
    layers = {n.name: layer_name(n) for n in nodes}
    ops = {layer_name(n): QUANTIZED_OPS[n.target] for n in nodes}
    recorder = _RangeRecorder(module, layers)
    for inputs in calibration:
        recorder.run(*inputs)
    ranges = recorder.ranges
    reference = [_outputs(module(*inputs)) for inputs in evaluation]
    flat_reference = [torch.cat(parts) for parts in zip(*reference, strict=True)]

    @torch.no_grad()
    def sqnr_with(quantized: set[str]) -> float:
        results = [_outputs(_Simulator(module, layers, ranges, quantized).run(*inputs)) for inputs in evaluation]
        return _sqnr_db(flat_reference, [torch.cat(parts) for parts in zip(*results, strict=True)])

    names = list(dict.fromkeys(layers.values()))
    alone = {name: sqnr_with({name}) for name in names}
    noise = {name: 0.0 if math.isinf(db) else 10.0 ** (-db / 10.0) for name, db in alone.items()}
    total = sum(noise.values()) or 1.0
    figures = sorted((LayerSensitivity(name, ops[name], alone[name], noise[name] / total) for name in names),
                     key=lambda s: s.sqnr_db)
    everything = set(names)

    def simulate(float_layers: Sequence[str]) -> float:
        return sqnr_with(everything - set(float_layers))

    rows = sum(int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1 for inputs in evaluation)
    return SensitivityReport(figures, simulate([]), rows, simulate)
