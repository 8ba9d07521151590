"""Stage 2a: lower a captured program to ExecuTorch with the XNNPACK partitioner, and count what it delegated."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch.fx.traceback as fx_traceback
from executorch.backends.xnnpack._passes.conv1d_unsqueeze_pass import Conv1dUnsqueezePass
from executorch.backends.xnnpack._passes.decompose_batch_norm import DecomposeBatchNorm
from executorch.backends.xnnpack._passes.decompose_cat import DecomposeConcatenate
from executorch.backends.xnnpack._passes.fuse_batch_norm import FuseBatchNormPass
from executorch.backends.xnnpack._passes.prelu_reshape_pass import PReLUReshapePass
from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
from executorch.backends.xnnpack.partition.config.generic_node_configs import HardswishConfig, SigmoidConfig
from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassResult

from edgesdk.export.xnnpack_form import FoldConstantConversions, xnnpack_form
from edgesdk.runtime.errors import EdgeSDKError

# Graph bookkeeping, not computation: left out of the op counts.
_NOT_OPS = ("getitem", "sym_size", "executorch_call_delegate")


class Int8HardswishConfig(HardswishConfig):
    """Hardswish on int8 tensors as well. ExecuTorch 1.5.1's partitioner offers it for fp32 only, but the XNNPACK it
    runs takes quantized unary ops (as a lookup table); without this, a quantized hardswish is decomposed and runs
    in fp32 between converts (mobilenet_v3: 19 over whole feature maps)."""

    def supported_precision_types(self) -> list[ConfigPrecisionType]:
        return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]


class Int8SigmoidConfig(SigmoidConfig):
    """Sigmoid on int8 tensors as well (a lookup table in XNNPACK; EfficientNet's SiLU gate and squeeze-excitation)."""

    def supported_precision_types(self) -> list[ConfigPrecisionType]:
        return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]


_INT8_CAPABLE = {HardswishConfig: Int8HardswishConfig, SigmoidConfig: Int8SigmoidConfig}
# Only a graph whose hardswish / sigmoid sit between a dequantize and a quantize (``int8_elementwise``) differs.
PARTITIONER_CONFIGS = [_INT8_CAPABLE.get(config, config) for config in ALL_PARTITIONER_CONFIGS]


@dataclass
class DelegationReport:
    """How much of a graph XNNPACK took. Ops outside the delegate run on portable kernels (often ~1000x slower)."""

    delegated_ops: int
    total_ops: int
    segments: int
    not_delegated: dict[str, int] = field(default_factory=dict)

    @property
    def delegated_share(self) -> float:
        return self.delegated_ops / self.total_ops if self.total_ops else 1.0

    def to_dict(self) -> dict:
        return {"delegated_share": round(self.delegated_share, 4), "delegated_ops": self.delegated_ops,
                "total_ops": self.total_ops, "segments": self.segments, "not_delegated": self.not_delegated}


def _op_name(target: object) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return name.split("::")[-1]


def _compute_ops(graph_module: GraphModule) -> list[str]:
    return [
        _op_name(node.target)
        for node in graph_module.graph.nodes
        if node.op == "call_function" and not any(skip in str(node.target) for skip in _NOT_OPS)
    ]


def delegation_report(lowered_graph: GraphModule) -> DelegationReport:
    delegated, segments = 0, 0
    for node in lowered_graph.graph.nodes:
        if node.op == "call_function" and "executorch_call_delegate" in str(node.target):
            segments += 1
            lowered_module = getattr(lowered_graph, node.args[0].target)
            delegated += len(_compute_ops(lowered_module.original_module.graph_module))
    outside = Counter(_compute_ops(lowered_graph))
    return DelegationReport(delegated_ops=delegated, total_ops=delegated + sum(outside.values()),
                            segments=segments, not_delegated=dict(outside))


@dataclass
class ExecuTorchProgram:
    buffer: bytes
    delegation: DelegationReport  # of the "forward" method (every method is the same graph at another batch)
    methods: list[str] = field(default_factory=lambda: ["forward"])


# ------------------------------------------------------------------------------------------ lowering time
# Lowering costs ~25 ms per graph node, most of it re-tracing the whole graph once per pass (~30 passes). Two costs of
# that are bookkeeping, removed while we lower (the .pte is byte-identical; tests/test_export.py checks it):
# - every re-trace records each node's provenance (torch.fx NodeSource) with a deep copy of the node's whole history,
#   which grows by one record per pass: quadratic in the passes. The records are never changed once made, so the new
#   record shares the history's records instead of copying them.
# - five XNNPACK passes re-trace the graph even where the ops they rewrite are absent (batch norm, prelu, 1-D
#   convolutions, concatenations of more than five inputs); they are skipped then.
# Together -20 % of lowering time (the tiny-sd UNet: 29 -> 23 s).

def _target_name(node: Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _is_conv1d(node: Node) -> bool:
    if not _target_name(node).startswith("aten.convolution"):
        return False
    weight = node.args[1].meta.get("val") if isinstance(node.args[1], Node) else None
    return weight is None or weight.dim() == 3  # unknown rank: let the pass decide


# pass -> does this node give it work? (each pass's own test of a node, or a looser one)
_PASS_TRIGGERS: dict[type, Callable[[Node], bool]] = {
    DecomposeConcatenate: lambda n: _target_name(n).startswith("aten.cat") and len(n.args[0]) > 5,
    Conv1dUnsqueezePass: _is_conv1d,
    FuseBatchNormPass: lambda n: "batch_norm" in _target_name(n),
    DecomposeBatchNorm: lambda n: "batch_norm" in _target_name(n),
    PReLUReshapePass: lambda n: "prelu" in _target_name(n),
}


def _skipping_when_idle(call: Callable, triggers: Callable[[Node], bool]) -> Callable:
    def call_if_needed(self: object, graph_module: GraphModule) -> PassResult:
        if any(node.op == "call_function" and triggers(node) for node in graph_module.graph.nodes):
            return call(self, graph_module)
        return PassResult(graph_module, False)
    return call_if_needed


def _sharing_history(init: Callable) -> Callable:
    def init_sharing(self: fx_traceback.NodeSource, node: Node | None, pass_name: str = "",
                     action: object = None) -> None:
        history = node.meta.pop("from_node", None) if node is not None else None
        try:
            init(self, node, pass_name, action)  # without the history: nothing to deep-copy
        finally:
            if history is not None:
                node.meta["from_node"] = history
        if history is not None:
            self.from_node = list(history)
    return init_sharing


@contextmanager
def faster_lowering() -> Iterator[None]:
    """The two savings above, for the duration of a lowering (restored after: nothing else is changed)."""
    saved = {cls: cls.call for cls in _PASS_TRIGGERS}
    saved_init = fx_traceback.NodeSource.__init__
    try:
        for cls, triggers in _PASS_TRIGGERS.items():
            cls.call = _skipping_when_idle(saved[cls], triggers)
        fx_traceback.NodeSource.__init__ = _sharing_history(saved_init)
        yield
    finally:
        for cls, call in saved.items():
            cls.call = call
        fx_traceback.NodeSource.__init__ = saved_init


def lower_to_executorch(program: ExportedProgram | dict[str, ExportedProgram], component: str,
                        fast: bool = True) -> ExecuTorchProgram:
    """One .pte. Several programs (the same graph at several static batches) become methods of one file; their
    weights are stored once (ExecuTorch keys constant data by content). ``fast=False``: without
    ``faster_lowering``, for the test that both give the same file."""
    programs = program if isinstance(program, dict) else {"forward": program}
    try:
        with faster_lowering() if fast else nullcontext():
            # norms, attention and squeezes rewritten into XNNPACK's ops first, constants' dtype conversions folded
            # before partitioning (export/xnnpack_form.py): otherwise they run outside the delegate and split it
            programs = {name: xnnpack_form(p) for name, p in programs.items()}
            edge = to_edge_transform_and_lower(programs, transform_passes=[FoldConstantConversions()],
                                               partitioner=[XnnpackPartitioner(configs=PARTITIONER_CONFIGS)])
            report = delegation_report(edge.exported_program("forward").graph_module)
            buffer = edge.to_executorch().buffer
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgeSDKError(f"ExecuTorch lowering failed for component '{component}': {first_line}") from exc
    return ExecuTorchProgram(buffer=buffer, delegation=report, methods=list(programs))
