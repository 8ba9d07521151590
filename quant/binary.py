"""Binary (1-bit) layers trained with the Rectified Straight-Through Estimator (spec: ../shared/specs/reste-bnn.md).

Forward, per binary convolution: Y = conv(sign(A), sign(W) * alpha) with alpha = mean|W|, one scalar per layer,
not detached (W also learns through it). sign(0) = 0, as in torch.

Backward: sign is treated as f(z) = sign(z) |z|^(1/o) (o >= 1; o = 1 is the identity, o -> inf is sign), so the
incoming gradient is multiplied by
    m^((1-o)/o)               for |z| <= m = 0.1   (the secant slope f(m)/m: no singularity at 0)
    (1/o) |z|^((1-o)/o)       for m < |z| <= t = 1.5
    0                         for |z| > t          (clip)
o follows a cosine ramp from 1 to o_end over the epochs (`o_schedule`). The clipped STE baseline passes the
gradient unchanged inside |z| <= clip (1 by default; 1.5 makes it ReSTE at o = 1).

Indicators (spec §4): the estimating error sum_layers ||f_o(W) - sign(W)||_2 (no clip) and the gradient
instability sum_layers var(|dL/dW|), over the binary convolutions' weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from edgesdk.runtime.errors import EdgeSDKError

ESTIMATORS = ("reste", "ste", "fp")  # "fp": a full-precision twin of the same network (no binarization)
DEFAULT_T = 1.5
DEFAULT_M = 0.1
DEFAULT_O_END = 3.0


def rectified_multiplier(z: Tensor, o: float, t: float = DEFAULT_T, m: float = DEFAULT_M) -> Tensor:
    """What ReSTE multiplies the incoming gradient by, elementwise (vectorised: no masks scattered, no host sync)."""
    a = z.abs()
    k = (1.0 - o) / o
    slope = torch.where(a <= m, torch.full_like(a, m ** k), a.clamp_min(m).pow(k) / o)
    return slope * (a <= t)


class ReSTESign(torch.autograd.Function):
    """sign(z) forward; the rectified power-function gradient backward. No gradient to o, t or m."""

    @staticmethod
    def forward(ctx, z: Tensor, o: float, t: float = DEFAULT_T, m: float = DEFAULT_M) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(z)
        ctx.o, ctx.t, ctx.m = o, t, m
        return torch.sign(z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN001
        (z,) = ctx.saved_tensors
        return grad * rectified_multiplier(z, ctx.o, ctx.t, ctx.m), None, None, None


class ClippedSTESign(torch.autograd.Function):
    """sign(z) forward; the gradient unchanged where |z| <= clip, zero elsewhere."""

    @staticmethod
    def forward(ctx, z: Tensor, clip: float = 1.0) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(z)
        ctx.clip = clip
        return torch.sign(z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (z,) = ctx.saved_tensors
        return grad * (z.abs() <= ctx.clip), None


def o_schedule(epoch: int, epochs: int, o_end: float = DEFAULT_O_END) -> float:
    """o at ``epoch`` (0 .. epochs-1): 1 + (o_end - 1)(1 - cos(pi/2 * epoch / epochs)), a cosine ramp that starts
    slowly. A short run scales the ramp to its own length."""
    if epochs < 1 or not 0 <= epoch < epochs:
        raise EdgeSDKError(f"epoch {epoch} is outside a {epochs}-epoch schedule")
    return 1.0 + (o_end - 1.0) * (1.0 - math.cos(math.pi / 2.0 * epoch / epochs))


def power_sign(z: Tensor, o: float) -> Tensor:
    """f_o(z) = sign(z) |z|^(1/o): the function ReSTE's backward differentiates."""
    return torch.sign(z) * z.abs().pow(1.0 / o)


class BinaryConv2d(nn.Conv2d):
    """A convolution with 1-bit weights (sign(W) * mean|W|) and, unless ``binary_activations`` is False (the 1W/32A
    variant), 1-bit inputs (sign(A), no scale). Zero padding is applied to the +-1 map, so border taps see 0.

    ``estimator``: "reste" (o from the schedule, clip t), "ste" (clipped STE, clip ``ste_clip``), or "fp" (no
    binarization: the full-precision twin). o and t are plain floats, outside the state dict (a tensor would cost a
    device sync in every forward to reach the autograd function): the trainer sets o every epoch
    (``set_o``) and restores it from the epoch on resume."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 estimator: str = "reste", binary_activations: bool = True, ste_clip: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        if estimator not in ESTIMATORS:
            raise EdgeSDKError(f"unknown estimator '{estimator}'; choose from {', '.join(ESTIMATORS)}")
        self.estimator, self.binary_activations, self.ste_clip = estimator, binary_activations, ste_clip
        self.o, self.t = 1.0, DEFAULT_T

    def binarize(self, z: Tensor) -> Tensor:
        if self.estimator == "reste":
            return ReSTESign.apply(z, self.o, self.t)
        return ClippedSTESign.apply(z, self.ste_clip)

    def binary_weight(self) -> Tensor:
        """sign(W) * alpha, what the layer computes with (alpha = mean|W| over every weight of the layer)."""
        alpha = self.weight.abs().mean()
        return self.binarize(self.weight) * alpha

    def forward(self, x: Tensor) -> Tensor:
        if self.estimator == "fp":
            return super().forward(x)
        inputs = self.binarize(x) if self.binary_activations else x
        return F.conv2d(inputs, self.binary_weight(), None, self.stride, self.padding)


def binary_layers(model: nn.Module) -> list[BinaryConv2d]:
    return [m for m in model.modules() if isinstance(m, BinaryConv2d)]


def set_o(model: nn.Module, o: float) -> None:
    """Set o on the binary layers only (full-precision layers have none)."""
    for layer in binary_layers(model):
        layer.o = float(o)


def estimating_error(model: nn.Module, o: float) -> float:
    """sum over binary layers of ||f_o(W) - sign(W)||_2 (no clip): how far the backward's surrogate is from sign."""
    with torch.no_grad():
        return float(sum(torch.linalg.vector_norm(power_sign(l.weight, o) - torch.sign(l.weight))
                         for l in binary_layers(model)))  # noqa: E741


def gradient_instability(layers: Iterable[BinaryConv2d]) -> float:
    """sum over binary layers of var(|dL/dW|), read after backward (larger: less stable)."""
    return float(sum(l.weight.grad.abs().var() for l in layers if l.weight.grad is not None))  # noqa: E741


# ------------------------------------------------------------------------------------------- inference form


class FoldedBinaryConv2d(nn.Module):
    """Inference form of a binary convolution: conv(sign(A), B) with B the +-1 weights and alpha kept aside (the
    network folds it into the affine after the ReLU). Computes the training layer's function divided by alpha."""

    def __init__(self, layer: BinaryConv2d) -> None:
        super().__init__()
        self.stride, self.padding = layer.stride, layer.padding
        self.binary_activations = layer.binary_activations
        with torch.no_grad():
            self.register_buffer("bits", torch.where(layer.weight >= 0, 1.0, -1.0))  # sign(0) -> +1 (see pack_bits)
            self.alpha = float(layer.weight.abs().mean())

    def forward(self, x: Tensor) -> Tensor:
        inputs = delegable_sign(x) if self.binary_activations else x
        return F.conv2d(inputs, self.bits, None, self.stride, self.padding)


SIGN_GAIN = 2.0 ** 100  # a power of two: the product is exact until it saturates the clamp


def delegable_sign(x: Tensor) -> Tensor:
    """sign(x) as clamp(x * 2^100, -1, 1): exact for x = 0 and every |x| >= 2^-100 (7.9e-31; smaller fp32 values
    give a fraction). XNNPACK takes multiply and clamp but not sign, so the whole network stays in one delegated
    graph on ExecuTorch instead of splitting at every binary layer."""
    return torch.clamp(x * SIGN_GAIN, -1.0, 1.0)
