"""The binary-kernel ONNX graph of a BNN component: every binary convolution of the float export, the pattern

    Mul(x, 2^100) -> Clip(-1, 1) -> Conv(+-1 weights, no bias, group 1, dilation 1)

(``delegable_sign`` then ``FoldedBinaryConv2d``, as torch.onnx writes them), replaced by one
``ai.edgesdk::BinaryConv2d(x, W_packed)`` node whose W_packed is a uint8 initializer of one bit per weight in the
kernel's own layout, which the op reads in place (``edgesdk.runtime.binary_ops``; the op computes
s(x) = clamp(x * 2^100, -1, 1) itself). The float layers that follow such a node in a BNN are then fused into it
(``fuse_epilogues``): a chain of

    Relu -> Mul(per-channel constant) -> Add(per-channel constant) -> Add(tensor of the same shape)

(any prefix-preserving subset, in this order: the ReLU, batch norm as scale and shift, and the residual of a basic
block) becomes the op's ``activation`` attribute and its optional scale, shift and residual inputs, which the kernel
applies as it stores each output, rounding each step on its own as the separate nodes do; a residual made by the
BNN's option-A shortcut is read from the shortcut's input in place (``_option_a_shortcut``). A small network is
dominated by per-node cost: the digits ResNet's graph goes from 56 nodes in float to 13. Nothing else changes, so the
graph computes what the float graph does (docs/binary-kernel.md: exactly, but for 0 < |x| < 2^-100).

The float graph stays in the bundle as the fallback for runtimes without the op library; this graph is the second
file a BNN bundle offers (manifest ``components.<name>.binary_kernel.onnx``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgesdk.quant.binary import SIGN_GAIN
from edgesdk.runtime.binary_ops import BINARY_CONV, DOMAIN, OPSET_VERSION, pack_binary_weights
from edgesdk.runtime.errors import EdgeSDKError

OP_NAME = f"{DOMAIN}::{BINARY_CONV}"


@dataclass(frozen=True)
class BinaryGraph:
    data: bytes  # the rewritten model
    binary_layers: int  # BinaryConv2d nodes
    packed_weight_bytes: int  # bytes of their W_packed initializers


def _scalar(value: onnx.TensorProto | None) -> float | None:
    """The value of a one-element initializer, or None (not a constant, or more than one value)."""
    if value is None:
        return None
    array = numpy_helper.to_array(value)
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    """A node attribute as a plain value (ints as a list, a string as str), or ``default`` where it is absent."""
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            if isinstance(value, bytes):
                return value.decode()
            return list(value) if isinstance(value, (list, tuple)) else value
    return default


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """Every value's shape that ONNX shape inference can fully name (dims as sizes or symbols), by value name."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int | str, ...]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                     for d in tensor.shape.dim)
        if all(d is not None and d != "" for d in dims):
            shapes[value.name] = dims
    return shapes


def _per_channel(tensor: onnx.TensorProto | None, channels: int) -> bool:
    """A float32 constant that broadcasts one value per channel over (N, channels, H, W)."""
    if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
        return False
    return tuple(tensor.dims) in ((channels, 1, 1), (1, channels, 1, 1))


def _ints(tensor: onnx.TensorProto | None) -> list[int] | None:
    """An integer initializer's values, or None."""
    if tensor is None or tensor.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return None
    return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]


def _option_a_shortcut(name: str, graph: onnx.GraphProto, shapes: dict[str, tuple[int | str, ...]],
                       only_use: Callable[[str], bool]) -> tuple[str, int, list[onnx.NodeProto]] | None:
    """Where ``name`` is a ResNet option-A shortcut as torch.onnx writes edgesdk's BNN (sdk/zoo/bnn.py, ShortcutA):

        Reshape(x, [N, C, h, 2, w, 2]) -> Slice(axis 3, 0:1) -> Slice(axis 5, 0:1) -> Reshape([N, C, h, w])
            -> Pad(channels: a before, b after; zeros)

    i.e. every other pixel of x (N, C, 2h, 2w), new channels zero: (x, a, those nodes), which the kernel reads in place
    (residual_stride 2, residual_channel_offset a). None where anything differs or an intermediate value has another
    reader."""
    producers = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    pad = producers.get(name)
    if pad is None or pad.op_type != "Pad" or len(pad.input) < 2 or not only_use(pad.input[0]):
        return None
    if _attribute(pad, "mode", "constant") != "constant" or len(pad.input) > 3:
        return None
    if len(pad.input) == 3 and pad.input[2] and _scalar(initializers.get(pad.input[2])) != 0.0:
        return None
    pads = _ints(initializers.get(pad.input[1]))
    if pads is None or len(pads) != 8 or pads[0] or pads[2:5] != [0, 0, 0] or pads[6:] != [0, 0] or min(pads) < 0:
        return None
    merge = producers.get(pad.input[0])
    merged = _ints(initializers.get(merge.input[1])) if merge is not None and merge.op_type == "Reshape" else None
    if merged is None or len(merged) != 4 or not only_use(merge.input[0]):
        return None
    slices, value, axes = [], merge.input[0], set()
    while (node := producers.get(value)) is not None and node.op_type == "Slice":
        starts, ends = _ints(initializers.get(node.input[1])), _ints(initializers.get(node.input[2]))
        axis = _ints(initializers.get(node.input[3])) if len(node.input) > 3 else None
        steps = _ints(initializers.get(node.input[4])) if len(node.input) > 4 and node.input[4] else [1]
        unit = starts == [0] and ends == [1] and steps == [1] and axis is not None and len(axis) == 1
        if not unit or not only_use(node.input[0]):
            return None
        axes.add(axis[0] % 6)
        slices.append(node)
        value = node.input[0]
    split = producers.get(value)
    split_shape = _ints(initializers.get(split.input[1])) if split is not None and split.op_type == "Reshape" else None
    if axes != {3, 5} or len(slices) != 2 or split_shape is None or len(split_shape) != 6:
        return None
    _, channels, rows, two, columns, two_again = split_shape
    source = split.input[0]
    source_shape = shapes.get(source)
    if (two, two_again) != (2, 2) or merged[1:] != [channels, rows, columns] or source_shape is None:
        return None
    if tuple(source_shape[1:]) != (channels, 2 * rows, 2 * columns):
        return None
    return source, pads[1], [split, *slices, merge, pad]


def fuse_epilogues(graph: onnx.GraphProto, shapes: dict[str, tuple[int | str, ...]]) -> int:
    """Fold the Relu / Mul / Add / Add chain after each BinaryConv2d node into it (see the module doc); returns how
    many nodes went. A link is taken only where the value before it feeds that one node and is no graph output, and
    a residual only where shape inference (``shapes``, of the float graph) names both sides of the Add alike: the
    kernel adds element by element, without broadcasting."""
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {value.name for value in graph.output}

    def sole_consumer(name: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in graph_outputs else None

    def other_input(node: onnx.NodeProto, name: str) -> str | None:  # the operand of a binary op that is not `name`
        if len(node.input) != 2 or list(node.input).count(name) != 1:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]

    replaced: dict[int, onnx.NodeProto | None] = {}
    for conv in graph.node:
        if conv.op_type != BINARY_CONV or conv.domain != DOMAIN or len(conv.input) != 2:
            continue
        channels = int(_attribute(conv, "out_channels", 0))
        value, chain = conv.output[0], []
        relu = scale = shift = residual = None
        step = sole_consumer(value)
        if step is not None and step.op_type == "Relu" and step.domain in ("", "ai.onnx"):
            relu, value, chain = True, step.output[0], [*chain, step]
            step = sole_consumer(value)
        if step is not None and step.op_type == "Mul" and step.domain in ("", "ai.onnx"):
            operand = other_input(step, value)
            if operand is not None and _per_channel(initializers.get(operand), channels):
                scale, value, chain = operand, step.output[0], [*chain, step]
                step = sole_consumer(value)
        if step is not None and step.op_type == "Add" and step.domain in ("", "ai.onnx"):
            operand = other_input(step, value)
            if operand is not None and _per_channel(initializers.get(operand), channels):
                shift, value, chain = operand, step.output[0], [*chain, step]
                step = sole_consumer(value)
        shortcut = None
        if step is not None and step.op_type == "Add" and step.domain in ("", "ai.onnx"):
            operand = other_input(step, value)
            if (operand is not None and operand not in initializers and value in shapes
                    and shapes.get(operand) == shapes[value]):
                residual, value, chain = operand, step.output[0], [*chain, step]
                shortcut = _option_a_shortcut(residual, graph, shapes, lambda name: sole_consumer(name) is not None)
                if shortcut is not None and sole_consumer(residual) is None:
                    shortcut = None  # the padded shortcut is read elsewhere too: it stays, the op adds it as made
        if not chain:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if relu:
            attributes["activation"] = "relu"
        if shortcut is not None:
            residual, offset, made_by = shortcut
            attributes["residual_stride"] = 2
            if offset:
                attributes["residual_channel_offset"] = offset
            for node in made_by:  # the shortcut's own nodes go: the kernel reads every other pixel of its input
                replaced[id(node)] = None
        inputs = [*conv.input, scale or "", shift or "", residual or ""]
        while inputs[-1] == "":  # trailing optional inputs are left out
            inputs.pop()
        fused = helper.make_node(BINARY_CONV, inputs, [value], name=conv.name or None, domain=DOMAIN, **attributes)
        # the fused node takes the place of the chain's last node: every input it reads (the residual too) exists there
        replaced[id(conv)] = None
        for node in chain[:-1]:
            replaced[id(node)] = None
        replaced[id(chain[-1])] = fused
    nodes = [replaced.get(id(node), node) for node in graph.node]
    del graph.node[:]
    graph.node.extend(node for node in nodes if node is not None)
    return sum(1 for node in replaced.values() if node is None)


def rewrite_binary_convolutions(data: bytes) -> BinaryGraph:
    """The graph with every binary convolution as BinaryConv2d (see the module doc). A Mul or Clip whose output
    feeds anything else stays (the new node reads the Mul's input either way); a Conv whose weights are not all
    +-1, or that has a bias, groups, dilation or auto_pad, is left in float. Raises EdgeSDKError when the graph has
    no binary convolution at all: a binary recipe on a network the pattern does not find is an export bug."""
    model = onnx.load_from_string(data)
    shapes = _shapes(model)  # of the float graph: shape inference knows no BinaryConv2d
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {value.name for value in graph.output}

    def only_consumer(name: str) -> bool:  # the tensor feeds one node and is no graph output: its producer may go
        return consumers.get(name, 0) == 1 and name not in graph_outputs

    replaced: dict[int, onnx.NodeProto | None] = {}  # id(old node) -> its replacement (None: removed)
    new_initializers: list[onnx.TensorProto] = []
    packed_bytes = 0
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) != 2:
            continue
        clip = producers.get(conv.input[0])
        weights = initializers.get(conv.input[1])
        if clip is None or weights is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        if (_scalar(initializers.get(clip.input[1])), _scalar(initializers.get(clip.input[2]))) != (-1.0, 1.0):
            continue
        mul = producers.get(clip.input[0])
        if mul is None or mul.op_type != "Mul":
            continue
        gains = [_scalar(initializers.get(name)) for name in mul.input]
        if gains[1] == SIGN_GAIN:
            x = mul.input[0]
        elif gains[0] == SIGN_GAIN:
            x = mul.input[1]
        else:
            continue
        w = numpy_helper.to_array(weights)
        if w.ndim != 4 or w.dtype != np.float32 or not np.all(np.abs(w) == 1.0):
            continue
        kernel = _attribute(conv, "kernel_shape", list(w.shape[2:]))
        plain = (_attribute(conv, "group", 1) == 1 and _attribute(conv, "dilations", [1, 1]) == [1, 1]
                 and _attribute(conv, "auto_pad", "NOTSET") == "NOTSET" and kernel == list(w.shape[2:]))
        if not plain:
            continue
        packed = pack_binary_weights(w)
        packed_name = f"{weights.name}.packed"
        new_initializers.append(numpy_helper.from_array(packed, packed_name))
        packed_bytes += packed.nbytes
        replaced[id(conv)] = helper.make_node(
            BINARY_CONV, [x, packed_name], list(conv.output), name=conv.name or None, domain=DOMAIN,
            in_channels=int(w.shape[1]), out_channels=int(w.shape[0]), kernel_shape=kernel,
            strides=_attribute(conv, "strides", [1, 1]), pads=_attribute(conv, "pads", [0, 0, 0, 0]))
        # the sign is inside the op now: its Mul and Clip go where nothing else reads them
        if only_consumer(clip.output[0]):
            replaced[id(clip)] = None
            if only_consumer(mul.output[0]):
                replaced[id(mul)] = None
    layers = sum(1 for node in replaced.values() if node is not None)
    if layers == 0:
        raise EdgeSDKError("the binary recipe found no binary convolution (Mul 2^100 -> Clip -1..1 -> Conv with "
                           "+-1 weights) in the exported ONNX graph; export with --quant fp32")

    nodes = [replaced.get(id(node), node) for node in graph.node]
    del graph.node[:]
    graph.node.extend(node for node in nodes if node is not None)
    fuse_epilogues(graph, shapes)
    # float weights and constants that no node reads any more (the +-1 weights, a removed Mul's gain) are dropped
    used = {name for node in graph.node for name in node.input} | graph_outputs
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *new_initializers])
    produced = {output for node in graph.node for output in node.output}
    values = [value for value in graph.value_info if value.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(values)
    if not any(opset.domain == DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
    onnx.checker.check_model(model)
    return BinaryGraph(model.SerializeToString(), layers, packed_bytes)
