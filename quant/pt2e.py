"""ExecuTorch quantization on a captured program: int8 through PT2E with the XNNPACK quantizer, 8da4w through torchao.
Which one runs is the config's choice (``edgesdk.quant.configs``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.export import ExportedProgram

from edgesdk.runtime.errors import EdgeSDKError


def int8_module(program: ExportedProgram, static: bool, calibration: Sequence[tuple[Tensor, ...]],
                example_inputs: tuple[Tensor, ...], float_layers: Sequence[str] = (),
                int8_elementwise: bool = False) -> torch.nn.Module:
    """int8 weights per channel through XNNPACK's quantizer: activations per tensor from the calibration inputs
    (``static``) or quantized on the fly. The module before re-capture: from a dynamic-batch program it can be captured
    at any batch, with the same quantization parameters at each. ``float_layers`` (``edgesdk.quant.sensitivity``
    names) stay fp32. ``int8_elementwise`` (static only): the activations, residual adds, squeeze-excitation products
    and poolings between int8 layers stay int8 too (``_close_int8_islands``)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    elementwise = static and int8_elementwise
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=not static)
    quantizer = _quantizer_keeping_float(XNNPACKQuantizer, set(float_layers), config if elementwise else None)()
    if not static:
        quantizer.set_filter_function(not_a_graph_wide_dynamic_input)
    # Convolutions and linear layers only (where the time and the bytes are). Quantizing every element-wise
    # op as well took the tiny-sd UNet from 32 dB to 16 dB SQNR: the timestep (0..999) and one-sided
    # activations lose too much on an 8-bit grid. (Module-type filters missed layers nested in
    # nn.Sequential; operator types catch every one.)
    if static:
        quantizer.set_operator_type(torch.ops.aten.conv2d.default, config)
    quantizer.set_operator_type(torch.ops.aten.linear.default, config)
    module = program.module()
    if elementwise:
        silu_as_sigmoid_product(module)
    prepared = prepare_pt2e(module, quantizer)
    if static:
        if not calibration:
            raise EdgeSDKError("recipe 'w8a8' needs calibration data and none was given")
        with torch.no_grad():
            for inputs in calibration:
                prepared(*inputs)
    else:
        with torch.no_grad():
            prepared(*example_inputs)  # dynamic: one pass only to materialise the observers
    converted = convert_pt2e(prepared)
    forget_cached_modules()
    return converted


def _quantizer_keeping_float(base: type, float_layers: set[str], elementwise_config: object = None) -> type:
    """``base`` (XNNPACK's quantizer) with the annotations of ``float_layers`` removed after it annotates: those
    layers get no observers, so they run in fp32 between a dequantize and a quantize of their neighbours. With
    ``elementwise_config``, the ops between int8 layers are annotated afterwards (``_close_int8_islands``)."""
    if not float_layers and elementwise_config is None:
        return base
    from edgesdk.quant.sensitivity import QUANTIZED_OPS, layer_name

    class KeepingFloat(base):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            if float_layers:
                self._keep_float(model)
            if elementwise_config is not None:
                _fuse_clamps_into_producers(model.graph, elementwise_config)
                _close_int8_islands(model.graph, elementwise_config)
            return model

        def _keep_float(self, model: torch.fx.GraphModule) -> None:
            removed: set[torch.fx.Node] = set()
            for node in model.graph.nodes:
                if node.target in QUANTIZED_OPS and layer_name(node) in float_layers:
                    removed.add(node)
                    for user in node.users:  # a fused activation (conv + relu) carries the pattern's output
                        annotation = user.meta.get("quantization_annotation")
                        if annotation is not None and not annotation.input_qspec_map:
                            removed.add(user)
            for node in removed:
                node.meta.pop("quantization_annotation", None)
            _drop_specs_shared_with(model.graph, removed)

    return KeepingFloat


aten = torch.ops.aten
# What XNNPACK runs on int8 tensors once their inputs and outputs are quantized: residual adds and squeeze-excitation
# products, and (through ``export.executorch``'s partitioner configs) hardswish and sigmoid as 256-entry tables.
# Hardsigmoid has no int8 kernel (it runs as fp32 add / clamp / div), but it only sees the pooled squeeze-excitation
# vector, and its quantized output lets the product with the full feature map stay int8.
INT8_ELEMENTWISE_OPS = {aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor,
                        aten.hardswish.default, aten.hardswish_.default, aten.sigmoid.default, aten.sigmoid_.default,
                        aten.hardsigmoid.default, aten.hardsigmoid_.default}
# Ops whose output takes its input's quantization parameters (XNNPACK's quantizer shares them for these too, but only
# from the layers it annotated itself, before the ops above were).
SAME_RANGE_OPS = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
                  aten.max_pool2d.default, aten.mean.dim, aten.adaptive_avg_pool2d.default, aten.flatten.using_ints,
                  aten.view.default, aten.reshape.default, aten.permute.default, aten.dropout.default,
                  aten.dropout_.default}
# A clamp after one of these fuses into the layer's output range when nothing is quantized between them.
CLAMPED_PRODUCERS = {aten.conv2d.default, aten.conv1d.default, aten.linear.default, aten.batch_norm.default}
CLAMPS = {aten.hardtanh.default, aten.hardtanh_.default}
_ANNOTATION = "quantization_annotation"


def silu_as_sigmoid_product(module: torch.fx.GraphModule) -> int:
    """x * sigmoid(x) in place of silu(x) (EfficientNet's activation), so that the sigmoid and the product can be
    quantized one by one: ExecuTorch decomposes silu only after quantization, leaving both in fp32 between a
    dequantize and a quantize. Only where silu is x's sole reader (an in-place silu_ then aliases nothing)."""
    graph = module.graph
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.silu.default, aten.silu_.default):
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or len(source.users) != 1:
            continue
        with graph.inserting_before(node):
            gate = graph.call_function(aten.sigmoid.default, (source,))
            product = graph.call_function(aten.mul.Tensor, (source, gate))
        for new in (gate, product):
            new.meta = {k: v for k, v in node.meta.items() if k != _ANNOTATION}
        node.replace_all_uses_with(product)
        graph.erase_node(node)
        rewritten += 1
    if rewritten:
        module.recompile()
    return rewritten


def _quantized(value: object) -> bool:
    if not isinstance(value, torch.fx.Node):
        return False
    annotation = value.meta.get(_ANNOTATION)
    return annotation is not None and annotation.output_qspec is not None


def _fuse_clamps_into_producers(graph: torch.fx.Graph, config: object) -> None:
    """conv (+ batch norm) -> hardtanh (ReLU6) with the int8 grid after the clamp, not between: XNNPACK's quantizer
    fuses relu but shares the layer's grid with a hardtanh, and the quantize / dequantize pair between them keeps
    the clamp a separate int8 pass over the feature map instead of the convolution's output range."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    for node in graph.nodes:
        if node.op != "call_function" or node.target not in CLAMPS:
            continue
        producer = node.args[0]
        if (not isinstance(producer, torch.fx.Node) or producer.target not in CLAMPED_PRODUCERS
                or len(producer.users) != 1 or not _quantized(producer)):
            continue
        annotation = producer.meta[_ANNOTATION]
        if isinstance(annotation.output_qspec, SharedQuantizationSpec):
            continue
        annotation.output_qspec = None
        node.meta[_ANNOTATION] = QuantizationAnnotation(input_qspec_map={}, output_qspec=config.output_activation,
                                                        _annotated=True)


def _close_int8_islands(graph: torch.fx.Graph, config: object) -> None:
    """Annotate the element-wise ops (``INT8_ELEMENTWISE_OPS``) and range-sharing ops whose every tensor input is
    already quantized, in graph order so that chains close (conv -> hardswish -> mean -> conv). Left unannotated,
    each runs in fp32 inside the delegate between a qint8->fp32 and an fp32->qint8 convert over the whole feature
    map: on mobilenet_v3_small 36 + 33 converts, on efficientnet_b0 76 + 73, which took the int8 speed-up to ~1x.
    An op fed by anything in fp32 keeps fp32, so no new rounding reaches a layer that was not quantized already
    (the tiny-sd UNet's timestep path, a fallback layer's neighbours)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    for node in graph.nodes:
        if node.op != "call_function" or _ANNOTATION in node.meta:
            continue
        if node.target in SAME_RANGE_OPS:
            source = node.args[0]
            if _quantized(source):
                shared = SharedQuantizationSpec(source)
                node.meta[_ANNOTATION] = QuantizationAnnotation(input_qspec_map={source: shared},
                                                                output_qspec=shared, _annotated=True)
            continue
        if node.target not in INT8_ELEMENTWISE_OPS:
            continue
        inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        activations = [a for a in inputs if a.op != "get_attr"]
        if not activations or not all(_quantized(a) for a in activations):
            continue
        node.meta[_ANNOTATION] = QuantizationAnnotation(
            input_qspec_map={a: config.input_activation for a in inputs}, output_qspec=config.output_activation,
            _annotated=True)


def _drop_specs_shared_with(graph: torch.fx.Graph, removed: set[torch.fx.Node]) -> None:
    """Nodes whose quantization shares the parameters of a node left in float (a pooling or flatten after it) lose
    their annotation too: what they would share no longer exists."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    def refers_to_removed(spec: object) -> bool:
        if not isinstance(spec, SharedQuantizationSpec):
            return False
        edge_or_node = spec.edge_or_node
        nodes = edge_or_node if isinstance(edge_or_node, tuple) else (edge_or_node,)
        return any(n in removed for n in nodes)

    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            annotation = node.meta.get("quantization_annotation")
            if annotation is None:
                continue
            specs = [annotation.output_qspec, *annotation.input_qspec_map.values()]
            if any(refers_to_removed(spec) for spec in specs):
                node.meta.pop("quantization_annotation")
                removed.add(node)
                changed = True


def forget_cached_modules() -> None:
    """Empty the "unique device of a module" caches of torch.ao and torchao (``functools.cache`` keyed by the
    module). PT2E and ``quantize_`` pass them every module they prepare and convert, so without this each one, with
    all its weights, lives as long as the process: for SD-1.5 most of the 18.6 GB its export held after lowering,
    and what pushed the 512-px export's parity stage out of a 24 GB machine."""
    for module_name, function in (("torch.ao.quantization.fx.utils", "assert_and_get_unique_device"),
                                  ("torchao.utils", "_assert_and_get_unique_device")):
        try:
            getattr(importlib.import_module(module_name), function).cache_clear()
        except (ImportError, AttributeError):
            pass  # a release without the cache


def not_a_graph_wide_dynamic_input(node: torch.fx.Node) -> bool:
    """False for a linear layer over a graph input that more than 3 linear layers read (a UNet's text, read by the
    key and value projections of every cross-attention block). Quantized dynamically, they would share one
    choose_qparams, and a partition holding it and its consumers all over the graph has a dependency cycle:
    XNNPACK's partitioner refused the SD UNet ("Invalid partition, found dependency cycles"). Those layers stay
    fp32 (they see the 77 text tokens only: little time, a few % of the weights)."""
    if node.target != torch.ops.aten.linear.default or not node.args:
        return True
    source = node.args[0]
    if not isinstance(source, torch.fx.Node) or source.op != "placeholder":
        return True
    return sum(user.target == torch.ops.aten.linear.default for user in source.users) <= 3


def int4_module(program: ExportedProgram, group_size: int) -> torch.nn.Module:
    """8da4w: every convolution and linear layer as a linear layer (``matmul_form``), its weights 4-bit in groups
    on the grid of ``edgesdk.quant.int4`` and its input quantized to int8 on the fly; XNNPACK runs these as
    qd8-f32-qb4w GEMMs."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    from edgesdk.quant.matmul_form import as_linear_layers

    module, _ = as_linear_layers(program.module())
    for fqn, group in groups_for_layers(module, group_size).items():
        # "no clipping error": scale = max(-min/8, max/7), the grid ONNX Runtime's MatMulNBits gets too and the
        # one quantization-aware training snaps to (it maps already-snapped weights onto themselves)
        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group),
                                                       weight_mapping_type=MappingType.SYMMETRIC_NO_CLIPPING_ERR)
        quantize_(module, config, filter_fn=lambda _m, name, fqn=fqn: name == fqn)
    forget_cached_modules()
    return module


def groups_for_layers(module: torch.nn.Module, group: int) -> dict[str, int]:
    """The group size each linear layer gets (``edgesdk.quant.int4.group_for``); a layer no group divides (e.g.
    3x3x3 = 27 inputs of an RGB convolution) keeps fp32 weights; such layers are tiny."""
    from edgesdk.quant.int4 import group_for

    groups: dict[str, int] = {}
    for fqn, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear) and (size := group_for(layer.in_features, group)) is not None:
            groups[fqn] = size
    return groups
