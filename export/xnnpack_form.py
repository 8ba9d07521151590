"""Rewrite a captured program into ops XNNPACK takes, before it is lowered to ExecuTorch.

ExecuTorch 1.5.1's XNNPACK partitioner leaves several common pieces of a user's model outside the delegate, where
they run on portable kernels and split the graph into many delegates with tensors passed between them:

- ``layer_norm`` / ``group_norm``: XNNPACK has no normalisation node; the partitioner keeps
  ``native_layer_norm`` whole and does not take it.
- ``scaled_dot_product_attention``: the default decomposition is a "safe" softmax (eq / logical_not / any / where /
  full_like, to zero rows that are all -inf), 4-D matmuls as expand copies plus 3-D products, and the scale as
  ``mul.Scalar`` on q and k; none of those are XNNPACK nodes.
- ``unbind`` / ``select`` / ``squeeze``: lowered to ``squeeze_copy`` / ``select_copy``, which it does not take.
- a Python int in float arithmetic (``x + 3`` in hardsigmoid's decomposition, ``(x + 1) / 2``): lowered to an int64
  scalar constant and a ``_to_dim_order_copy`` to float32, and XNNPACK's copy node converts layouts, not dtypes.

The first three are rewritten on the ATen graph (``xnnpack_form``) from ops XNNPACK does take: a 4-D mean over the
two innermost dims (its global average pooling), rsqrt, sub/mul/add, 3-D bmm + softmax, slice and view. Each
rewrite computes the same function (float rounding aside: two-pass variance, scale applied to q). The last is
folded on the edge graph (``FoldConstantConversions``): the conversion of a constant is done once, at export.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult
from torch import Tensor
from torch.export import ExportedProgram

aten = torch.ops.aten


def _normalized_rows(x: Tensor, width: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x - mean) / sqrt(var + eps) over the last ``width`` elements of each row, with the mean and 1/sqrt(var + eps)
    per row, computed on a 4-D (1, rows, 1, width) view: XNNPACK's mean is global average pooling over the two
    innermost dims of a channels-last tensor, so the rows become its channels and the reduction runs across them in
    vector lanes. (Rows as the batch with one channel moves no data in the layout conversion but reduces one lane
    at a time: 42 us per mean of deit's (197, 192) tokens against 2.5 us; 0.90 -> 0.27 ms for 8 layer norms.)"""
    rows = x.reshape(1, -1, 1, width)
    mean = rows.mean(dim=(2, 3), keepdim=True)
    centred = rows - mean
    inverse_std = torch.rsqrt((centred * centred).mean(dim=(2, 3), keepdim=True) + eps)
    return centred * inverse_std, mean, inverse_std


def _affine(normed: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is not None:
        normed = normed * weight
    return normed + bias if bias is not None else normed


def _layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
                bias: Tensor | None = None, eps: float = 1e-5, cudnn_enable: bool = True) -> Tensor:
    normed, _, _ = _normalized_rows(x, math.prod(normalized_shape), eps)
    return _affine(normed.reshape(x.shape), weight, bias)


def _native_layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None, bias: Tensor | None,
                       eps: float) -> tuple[Tensor, Tensor, Tensor]:
    # the form of a program saved after core-ATen decomposition: (output, mean, rstd), statistics shaped like x with
    # the normalized dims at size 1 (inference reads only the output; the others are dropped as dead code)
    normed, mean, inverse_std = _normalized_rows(x, math.prod(normalized_shape), eps)
    statistics_shape = [*x.shape[:x.dim() - len(normalized_shape)], *([1] * len(normalized_shape))]
    return (_affine(normed.reshape(x.shape), weight, bias), mean.reshape(statistics_shape),
            inverse_std.reshape(statistics_shape))


def _group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                eps: float = 1e-5, cudnn_enable: bool = True) -> Tensor:
    if x.dim() < 2:
        return NotImplemented
    channels = x.shape[1]
    normed, _, _ = _normalized_rows(x, math.prod(x.shape[1:]) // num_groups, eps)
    affine_shape = [1, channels] + [1] * (x.dim() - 2)
    return _affine(normed.reshape(x.shape), None if weight is None else weight.reshape(affine_shape),
                   None if bias is None else bias.reshape(affine_shape))


def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
               is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor | object:
    """softmax(q k^T * scale + mask) v as 3-D bmm + softmax. Causal, boolean-masked, grouped-query and dropout
    attention keep the default decomposition: a boolean mask can empty a row, which only the safe softmax zeroes."""
    if is_causal or enable_gqa or dropout_p or (attn_mask is not None and not attn_mask.is_floating_point()):
        return NotImplemented
    queries, keys, width = query.shape[-2], key.shape[-2], query.shape[-1]
    value_width = value.shape[-1]
    leading = list(query.shape[:-2])
    scale = scale if scale is not None else 1.0 / math.sqrt(width)
    q = query.reshape(-1, queries, width) * scale  # on q, not on the scores: keys x fewer multiplications
    k = key.reshape(-1, keys, width)
    v = value.reshape(-1, keys, value_width)
    scores = torch.bmm(q, k.transpose(1, 2))
    if attn_mask is not None:
        scores = (scores.reshape([*leading, queries, keys]) + attn_mask).reshape(-1, queries, keys)
    out = torch.bmm(torch.softmax(scores, dim=-1), v)
    return out.reshape([*leading, queries, value_width])


def _without_dim(x: Tensor, dim: int) -> list[int]:
    return [size for d, size in enumerate(x.shape) if d != dim]


def _select(x: Tensor, dim: int, index: int) -> Tensor:
    dim = dim % x.dim()
    index = index % x.shape[dim]
    return x.narrow(dim, index, 1).view(_without_dim(x, dim))


def _unbind(x: Tensor, dim: int = 0) -> list[Tensor]:
    dim = dim % x.dim()
    return [x.narrow(dim, i, 1).view(_without_dim(x, dim)) for i in range(x.shape[dim])]


def _squeeze(x: Tensor, dims: int | Sequence[int] | None = None) -> Tensor:
    # a view that drops size-1 dims (XNNPACK's reshape) instead of squeeze_copy (not an XNNPACK node)
    if dims is None:
        keep = [size for size in x.shape if size != 1]
    else:
        drop = {d % max(x.dim(), 1) for d in ([dims] if isinstance(dims, int) else dims)}
        keep = [size for d, size in enumerate(x.shape) if d not in drop or size != 1]
    return x.view(keep)


def _expand(x: Tensor, size: Sequence[int], implicit: bool = False) -> Tensor:
    # an expand to the shape the tensor already has (a class token at batch 1, a matmul's operands) copies nothing
    target = [x.shape[i - (len(size) - x.dim())] if s == -1 else s for i, s in enumerate(size)]
    if target == list(x.shape):
        return x.view(target)
    return NotImplemented


XNNPACK_DECOMPOSITIONS: dict[torch._ops.OpOverload, Callable[..., object]] = {
    aten.layer_norm.default: _layer_norm,
    aten.native_layer_norm.default: _native_layer_norm,
    aten.group_norm.default: _group_norm,
    aten.scaled_dot_product_attention.default: _attention,
    aten.select.int: _select,
    aten.unbind.int: _unbind,
    aten.squeeze.dims: _squeeze,
    aten.squeeze.dim: _squeeze,
    aten.squeeze.default: _squeeze,
    aten.expand.default: _expand,
}


def xnnpack_form(program: ExportedProgram) -> ExportedProgram:
    """The program with the ops above rewritten into XNNPACK's; other ops as they were."""
    present = {node.target for node in program.graph.nodes if node.op == "call_function"}
    table = {op: fn for op, fn in XNNPACK_DECOMPOSITIONS.items() if op in present}
    return program.run_decompositions(table) if table else program


# A constant up to this many elements is converted at export: a scalar or a small broadcast operand. A large one (a
# float16 weight read as float32) would grow the file, so it is left to the runtime.
FOLD_MAX_ELEMENTS = 4096
_CONVERSIONS = ("_to_dim_order_copy.default", "_to_copy.default")


class FoldConstantConversions(ExportedProgramPassBase):
    """Edge-graph pass: a dtype conversion of a small constant (parameter, buffer or lifted tensor constant) is
    replaced by a constant of the converted value, so the op it fed takes a constant operand inside the delegate
    instead of a tensor made by a portable kernel on every run."""

    def call(self, exported_program: ExportedProgram) -> ExportedProgramPassResult:
        from executorch.backends.transforms.utils import create_constant_placeholder, delete_constant_placeholder
        from executorch.exir.passes.constant_prop_pass import get_constant_placeholder_dict
        from torch.export.graph_signature import InputKind

        graph = exported_program.graph_module.graph
        constants = get_constant_placeholder_dict(exported_program)
        first_input = next((n for n in graph.nodes if n.op == "placeholder" and n not in constants), None)
        folded = 0
        for node in list(graph.nodes):
            if node.op != "call_function" or not getattr(node.target, "__name__", "").endswith(_CONVERSIONS):
                continue
            source = node.args[0]
            if source not in constants or constants[source].numel() > FOLD_MAX_ELEMENTS:
                continue
            dim_order = node.kwargs.get("dim_order")
            if dim_order is not None and list(dim_order) != list(range(constants[source].dim())):
                continue  # a layout change too: left to the partitioner, which takes those
            dtype = node.kwargs.get("dtype") or constants[source].dtype
            value = constants[source].detach().to(dtype).contiguous()
            insert_before = first_input if first_input is not None else next(iter(graph.nodes))
            with graph.inserting_before(insert_before):
                replacement = create_constant_placeholder(exported_program, graph, f"{node.name}_folded",
                                                          InputKind.CONSTANT_TENSOR, value)
            node.replace_all_uses_with(replacement)
            graph.erase_node(node)
            if not source.users:
                delete_constant_placeholder(exported_program, source)
            folded += 1
        if folded:
            exported_program.graph_module.recompile()
        return ExportedProgramPassResult(exported_program, folded > 0)
