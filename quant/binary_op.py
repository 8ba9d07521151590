"""The binary convolution as a torch operator, ``edgesdk::binary_conv2d``, for ExecuTorch programs that compute binary
layers in binary (docs/binary-kernel.md).

    edgesdk::binary_conv2d(Tensor x, Tensor packed_weights, int in_channels, int out_channels, int[] kernel_shape,
                           int[] stride, int[] padding) -> Tensor
    edgesdk::binary_conv2d.out(..., *, Tensor(a!) out) -> Tensor(a!)

y = conv2d(s(x), B, stride, zero padding) with s(x) = clamp(x * 2^100, -1, 1) and B = +1 where W >= 0, -1 where
W < 0: ``FoldedBinaryConv2d``'s function. ``packed_weights`` is uint8 (ceil(O / 8), kh, kw, ceil(C / 64), 8, 8): the
C++ kernel's own layout of (W < 0) as little-endian 64-bit words (``edgesdk.runtime.binary_ops.pack_binary_weights``),
which the kernel reads in place; the ONNX op ``ai.edgesdk::BinaryConv2d`` takes the same format. ``padding`` is
(top/bottom, left/right) as torch's conv2d takes it.

The CPU implementation here is the reference (unpack, float conv2d): it is what torch.export traces through and what
eager runs; the C++ runtime registers the XNOR-popcount kernel under the ``.out`` name (runtime/cpp/src/
binary_kernel.cpp), which ExecuTorch's memory planning calls.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from edgesdk.quant.binary import FoldedBinaryConv2d, delegable_sign
from edgesdk.runtime.binary_ops import pack_binary_weights, packed_weights_shape
from edgesdk.runtime.binary_ops import unpack_binary_weights as unpack_sign_bits
from edgesdk.runtime.errors import EdgeSDKError

NAMESPACE = "edgesdk"
OP_NAME = "binary_conv2d"
OUT_OVERLOAD = f"{NAMESPACE}::{OP_NAME}.out"  # what a .pte names and the C++ runtime registers
_ARGS = ("Tensor x, Tensor packed_weights, int in_channels, int out_channels, int[] kernel_shape, int[] stride, "
         "int[] padding")

# Defined once per process (a module re-import must not define the schema twice).
if not hasattr(torch.ops, NAMESPACE) or not hasattr(getattr(torch.ops, NAMESPACE), OP_NAME):
    _LIBRARY = torch.library.Library(NAMESPACE, "DEF")
    _LIBRARY.define(f"{OP_NAME}({_ARGS}) -> Tensor")
    _LIBRARY.define(f"{OP_NAME}.out({_ARGS}, *, Tensor(a!) out) -> Tensor(a!)")


def _check(x: Tensor, packed: Tensor, in_channels: int, out_channels: int, kernel_shape: list[int],
           stride: list[int], padding: list[int]) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise EdgeSDKError(f"binary_conv2d: x must be (N, {in_channels}, H, W), got {tuple(x.shape)}")
    if len(kernel_shape) != 2 or len(stride) != 2 or len(padding) != 2:
        raise EdgeSDKError("binary_conv2d: kernel_shape, stride and padding take two values each")
    if out_channels < 1:
        raise EdgeSDKError(f"binary_conv2d: out_channels must be positive, got {out_channels}")
    want = packed_weights_shape(out_channels, in_channels, *kernel_shape)
    if packed.dtype != torch.uint8 or tuple(packed.shape) != want:
        raise EdgeSDKError(f"binary_conv2d: packed_weights must be uint8 {want}, got {packed.dtype} "
                           f"{tuple(packed.shape)}")


def unpack_binary_weights(packed: Tensor, in_channels: int, out_channels: int) -> Tensor:
    """The +-1 float weights (out, in, kh, kw) of packed weights (``pack_binary_weights``): +1 where the bit is 0."""
    negative = unpack_sign_bits(packed.detach().cpu().numpy(), in_channels, out_channels)
    return (1.0 - 2.0 * torch.from_numpy(negative.astype(np.float32))).to(packed.device)


def _reference(x: Tensor, packed: Tensor, in_channels: int, out_channels: int, kernel_shape: list[int],
               stride: list[int], padding: list[int]) -> Tensor:
    _check(x, packed, in_channels, out_channels, kernel_shape, stride, padding)
    weights = unpack_binary_weights(packed, in_channels, out_channels).to(x.dtype)
    return F.conv2d(delegable_sign(x), weights, None, list(stride), list(padding))


def _output_shape(x: Tensor, out_channels: int, kernel_shape: list[int], stride: list[int],
                  padding: list[int]) -> list:
    kh, kw = kernel_shape
    return [x.shape[0], out_channels, (x.shape[2] + 2 * padding[0] - kh) // stride[0] + 1,
            (x.shape[3] + 2 * padding[1] - kw) // stride[1] + 1]


@torch.library.impl(f"{NAMESPACE}::{OP_NAME}", "CompositeExplicitAutograd")
def _binary_conv2d(x: Tensor, packed_weights: Tensor, in_channels: int, out_channels: int, kernel_shape: list[int],
                   stride: list[int], padding: list[int]) -> Tensor:
    return _reference(x, packed_weights, in_channels, out_channels, kernel_shape, stride, padding)


@torch.library.impl(f"{NAMESPACE}::{OP_NAME}.out", "CompositeExplicitAutograd")
def _binary_conv2d_out(x: Tensor, packed_weights: Tensor, in_channels: int, out_channels: int,
                       kernel_shape: list[int], stride: list[int], padding: list[int], *, out: Tensor) -> Tensor:
    result = _reference(x, packed_weights, in_channels, out_channels, kernel_shape, stride, padding)
    out.resize_(result.shape).copy_(result)
    return out


@torch.library.register_fake(f"{NAMESPACE}::{OP_NAME}")
def _binary_conv2d_fake(x: Tensor, packed_weights: Tensor, in_channels: int, out_channels: int,
                        kernel_shape: list[int], stride: list[int], padding: list[int]) -> Tensor:
    # shapes only (export traces through this): the input and weight checks need no values
    _check(x, packed_weights, in_channels, out_channels, kernel_shape, stride, padding)
    return x.new_empty(_output_shape(x, out_channels, kernel_shape, stride, padding))


@torch.library.register_fake(f"{NAMESPACE}::{OP_NAME}.out")
def _binary_conv2d_out_fake(x: Tensor, packed_weights: Tensor, in_channels: int, out_channels: int,
                            kernel_shape: list[int], stride: list[int], padding: list[int], *,
                            out: Tensor) -> Tensor:
    return out


def binary_conv2d(x: Tensor, packed_weights: Tensor, in_channels: int, out_channels: int, kernel_shape: list[int],
                  stride: list[int], padding: list[int]) -> Tensor:
    return torch.ops.edgesdk.binary_conv2d(x, packed_weights, in_channels, out_channels, list(kernel_shape),
                                           list(stride), list(padding))


class BinaryConvOp(nn.Module):
    """``FoldedBinaryConv2d`` as one ``edgesdk::binary_conv2d`` call: its +-1 weights packed into the kernel's layout
    (one bit a weight, output channels padded to 8 and input channels to 64), held as a uint8 buffer (a constant of
    the exported program, which the C++ kernel reads in place)."""

    def __init__(self, layer: FoldedBinaryConv2d) -> None:
        super().__init__()
        if not layer.binary_activations:
            raise EdgeSDKError("binary_conv2d needs binary activations; a 1W/32A layer stays a float convolution")
        bits = layer.bits.detach().cpu()
        self.out_channels = int(bits.shape[0])
        self.in_channels = int(bits.shape[1])
        self.kernel_shape = [int(bits.shape[2]), int(bits.shape[3])]
        self.stride = [int(s) for s in layer.stride]
        if not isinstance(layer.padding, tuple | list) or len(layer.padding) != 2:
            raise EdgeSDKError(f"binary_conv2d takes numeric padding, not {layer.padding!r}")
        self.padding = [int(p) for p in layer.padding]
        self.register_buffer("packed", torch.from_numpy(pack_binary_weights(bits.numpy())))

    def forward(self, x: Tensor) -> Tensor:
        return binary_conv2d(x, self.packed, self.in_channels, self.out_channels, self.kernel_shape, self.stride,
                             self.padding)


def with_binary_ops(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of a deployment-form network (``folded_for_inference``) whose binary convolutions with binary
    activations call ``edgesdk::binary_conv2d``, and how many were replaced."""
    copied = copy.deepcopy(model).eval()
    replaced = 0
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FoldedBinaryConv2d) and child.binary_activations:
                setattr(parent, name, BinaryConvOp(child))
                replaced += 1
    return copied, replaced


def packed_weight_bytes(model: nn.Module) -> int:
    return sum(int(m.packed.numel()) for m in model.modules() if isinstance(m, BinaryConvOp))
