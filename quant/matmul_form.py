"""Matrix-product form of a captured program: every convolution and linear layer as an ``nn.Linear``.

4-bit kernels exist only for matrix products: XNNPACK's (qd8-f32-qb4w, reached through torchao's 8da4w) and
ONNX Runtime's ``MatMulNBits`` both take a GEMM, never a convolution. Most of a diffusion UNet's weights sit
in 3x3 convolutions, so `w4` rewrites each convolution as im2col + linear: pad, take the k*k shifted views of the
input, stack them on the channel axis and multiply by the weight reshaped to (out, k*k*in). The result is the
same function (to float rounding); the linear layers then carry every weight, and 4-bit quantization sees them.

The rewrite works on the graph of a captured program (``ExportedProgram.module()``), so it applies alike to our
models, to a user's ``module:factory`` and to a loaded ``.pt2`` whose modules are gone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, fx, nn
from torch.export import Dim, ExportedProgram

aten = torch.ops.aten


def conv_output_size(height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int]) -> tuple[int, int]:
    """(out_h, out_w) of a 2-D convolution without dilation."""
    return ((height + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (width + 2 * padding[1] - kernel[1]) // stride[1] + 1)


class ConvAsLinear(nn.Module):
    """A 2-D convolution (groups 1, dilation 1) computed as im2col followed by one linear layer."""

    def __init__(self, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], padding: tuple[int, int]) -> None:
        super().__init__()
        out_channels, in_channels, kh, kw = weight.shape
        self.kernel, self.stride, self.padding = (kh, kw), tuple(stride), tuple(padding)
        self.linear = nn.Linear(in_channels * kh * kw, out_channels, bias=bias is not None)
        with torch.no_grad():
            # patch features are ordered tap-major, channel-minor, matching the torch.cat in forward
            self.linear.weight.copy_(weight.permute(0, 2, 3, 1).reshape(out_channels, -1))
            if bias is not None:
                self.linear.bias.copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        out_h, out_w = conv_output_size(x.shape[2], x.shape[3], self.kernel, self.stride, self.padding)
        if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
            patches = x  # a 1x1 convolution is already a linear layer over channels
        else:
            # Extra zeros at the bottom/right let every tap take a whole s*out window (the part past the image
            # is never read after the stride is applied).
            x = F.pad(x, (pw, pw + sw - 1, ph, ph + sh - 1))
            taps = [self._tap(x, i, j, out_h, out_w) for i in range(kh) for j in range(kw)]
            patches = torch.cat(taps, dim=1) if len(taps) > 1 else taps[0]
        # (B, H*W, k*k*C) rows: a 3-D input keeps XNNPACK's channels-last pass from putting a layout copy
        # between the dynamic quantization of the input and the linear layer (which then fails to lower).
        rows = patches.flatten(2).transpose(1, 2)
        return self.linear(rows).transpose(1, 2).reshape(x.shape[0], -1, out_h, out_w)

    def _tap(self, x: Tensor, i: int, j: int, out_h: int, out_w: int) -> Tensor:
        """The input values tap (i, j) of the kernel meets at every output position: (B, C, out_h, out_w)."""
        (sh, sw) = self.stride
        window = x[:, :, i:i + sh * out_h, j:j + sw * out_w]
        if (sh, sw) == (1, 1):
            return window
        # Stride by reshaping and keeping phase 0, not by a stepped slice: XNNPACK delegates contiguous slices
        # and reshapes but not slices with a step, which would fall back to portable kernels.
        phases = window.reshape(x.shape[0], x.shape[1], out_h, sh, out_w, sw)
        return phases[:, :, :, :1, :, :1].reshape(x.shape[0], x.shape[1], out_h, out_w)


def _constant(graph_module: fx.GraphModule, node: object) -> Tensor | None:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = graph_module
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value.detach() if isinstance(value, Tensor) else None
    return None


def patch_bytes(node: fx.Node, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> int | None:
    """Bytes of the fp32 im2col patches ``ConvAsLinear`` builds for one batch row of this convolution (None when
    the captured graph does not record the input's shape)."""
    value = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    if value is None or value.dim() != 4 or any(not isinstance(d, int) for d in value.shape[1:]):
        return None
    channels, height, width = (int(d) for d in value.shape[1:])
    out_h, out_w = conv_output_size(height, width, kernel, stride, padding)
    return out_h * out_w * channels * kernel[0] * kernel[1] * 4


def as_linear_layers(graph_module: fx.GraphModule,
                     max_patch_bytes: int | None = None) -> tuple[fx.GraphModule, dict[str, int]]:
    """Replace aten conv2d / linear calls with constant weights by ``ConvAsLinear`` / ``nn.Linear`` submodules.

    ``max_patch_bytes``: a convolution whose im2col patches (per batch row) would be larger stays a convolution.
    The patches are k*k copies of the input, all live at once inside the backend: SD's VAE at 512 px would build
    1.2 GB for each of its full-resolution 3x3 convolutions, whose weights are among the smallest anyway.

    Returns the rewritten module and how many of each were rewritten (convolutions with groups or dilation, or
    over the patch budget, are left as they are and counted as ``conv_kept``)."""
    counts = {"conv": 0, "linear": 0, "conv_kept": 0}
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.conv2d.default, aten.linear.default):
            continue
        args = list(node.args) + [None] * 7
        weight, bias = _constant(graph_module, args[1]), _constant(graph_module, args[2])
        if weight is None or (args[2] is not None and bias is None):
            continue  # a computed weight: not a layer to quantize
        if node.target == aten.linear.default:
            module: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)
            kind = "linear"
        else:
            stride, padding = args[3] or [1, 1], args[4] or [0, 0]
            dilation, groups = args[5] or [1, 1], args[6] or 1
            if isinstance(padding, str) or list(dilation) != [1, 1] or groups != 1:
                counts["conv_kept"] += 1
                continue
            kernel = (int(weight.shape[2]), int(weight.shape[3]))
            if max_patch_bytes is not None and kernel != (1, 1):  # a 1x1 convolution's rows are its input
                patches = patch_bytes(node, kernel, tuple(stride), tuple(padding))
                if patches is not None and patches > max_patch_bytes:
                    counts["conv_kept"] += 1
                    continue
            module = ConvAsLinear(weight, bias, tuple(stride), tuple(padding))
            kind = "conv"
        name = f"edgesdk_{kind}_{counts[kind]}"
        counts[kind] += 1
        graph_module.add_submodule(name, module)
        with graph.inserting_before(node):
            replacement = graph.call_module(name, (args[0],))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module, counts


def recapture(module: nn.Module, program: ExportedProgram, max_batch: int | None = None) -> ExportedProgram:
    """torch.export ``module`` again on the example inputs of ``program`` (dynamic batch when ``max_batch``)."""
    args, _ = program.example_inputs
    shapes = None
    if max_batch is not None:
        batch = Dim("batch", min=1, max=max_batch)
        shapes = tuple({0: batch} for _ in args)
    with torch.no_grad():
        return torch.export.export(module, tuple(args), dynamic_shapes=shapes)


def linear_layer_program(program: ExportedProgram, max_batch: int | None = None,
                         max_patch_bytes: int | None = None) -> ExportedProgram:
    """``program`` re-captured in matrix-product form (see ``as_linear_layers``)."""
    module, _ = as_linear_layers(program.module(), max_patch_bytes)
    return recapture(module, program, max_batch)
