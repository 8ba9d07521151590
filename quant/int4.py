"""The one 4-bit weight grid every target uses, and its fake-quantized twin for quantization-aware training.

A weight matrix (out, in) is cut into groups of ``group`` consecutive input features; each group gets one scale

    s = max(-min(w) / 8, max(w) / 7),   q = clamp(round(w / s), -8, 7),   w ≈ s q

(torchao's "symmetric, no clipping error" mapping). Two properties matter and are tested:
- the extreme value of each group lands exactly on -8 s or 7 s, so quantizing already-quantized weights gives them
  back (idempotent). Weights trained on this grid therefore export with no weight error at all;
- ExecuTorch (torchao 8da4w) and ONNX Runtime (``MatMulNBits``, which we fill ourselves) both store exactly this
  grid, so the same student is the same function on either.
A convolution is seen as the linear layer ``edgesdk.quant.matmul_form`` makes of it: weight permuted to
(out, kh, kw, in) and flattened, so groups run over taps-major, channels-minor features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

QMIN, QMAX = -8, 7
MIN_GROUP = 32  # XNNPACK's blockwise kernels take groups of 32 or more


def group_for(in_features: int, group: int) -> int | None:
    """The group a layer with ``in_features`` inputs gets: ``group``, or the largest smaller power of two >= 32
    dividing it; None (weights stay fp32) when none does, e.g. 3x3x4 = 36 inputs."""
    size = group
    while size >= MIN_GROUP and in_features % size:
        size //= 2
    return size if size >= MIN_GROUP else None


def scales_and_codes(weight: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float weights -> scales (out, in/group) float32 and codes (out, in) int8 in [-8, 7]."""
    out_features, in_features = weight.shape
    blocks = weight.astype(np.float32).reshape(out_features, in_features // group, group)
    scale = np.maximum(-blocks.min(-1) / -QMIN, blocks.max(-1) / QMAX)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)  # an all-zero group keeps code 0
    codes = np.clip(np.round(blocks / scale[..., None]), QMIN, QMAX).astype(np.int8)
    return scale, codes.reshape(out_features, in_features)


def as_matrix(weight: Tensor) -> Tensor:
    """A conv (out, in, kh, kw) or linear (out, in) weight as the (out, features) matrix the 4-bit kernels see."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1) if weight.dim() == 4 else weight


def fake_quantize(weight: Tensor, group: int) -> Tensor:
    """Quantize-dequantize ``weight`` on the grid, with a straight-through gradient (identity inside the range;
    the scale follows the group's extreme, so nothing is ever clipped)."""
    matrix = as_matrix(weight)
    out_features, features = matrix.shape
    blocks = matrix.reshape(out_features, features // group, group)
    scale = torch.maximum(-blocks.amin(-1, keepdim=True) / -QMIN, blocks.amax(-1, keepdim=True) / QMAX)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).detach()
    codes = torch.clamp(torch.round(blocks / scale), QMIN, QMAX)
    snapped = (codes * scale).reshape(out_features, features)
    if weight.dim() == 4:
        out, cin, kh, kw = weight.shape
        snapped = snapped.reshape(out, kh, kw, cin).permute(0, 3, 1, 2)
    return weight + (snapped - weight).detach()


class FakeQuantized4Bit(nn.Module):
    """A parametrization: the layer computes with its weight snapped to the 4-bit grid."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, weight: Tensor) -> Tensor:
        return fake_quantize(weight, self.group)


def quantizable_layers(module: nn.Module, group: int) -> dict[str, tuple[nn.Module, int]]:
    """The layers the w4 recipe makes 4-bit (what ``matmul_form`` turns into linear layers and a group divides):
    name -> (layer, group)."""
    layers: dict[str, tuple[nn.Module, int]] = {}
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear):
            features = layer.in_features
        elif isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.dilation == (1, 1) \
                and not isinstance(layer.padding, str):
            features = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            continue
        size = group_for(features, group)
        if size is not None:
            layers[name] = (layer, size)
    return layers


def make_quant_aware(module: nn.Module, group: int = 64) -> int:
    """Snap every 4-bit-able weight of ``module`` to the grid in the forward pass (training goes on in float
    through the straight-through gradient). Returns how many layers. Undo with ``bake_quant_aware``."""
    from torch.nn.utils import parametrize

    layers = quantizable_layers(module, group)
    for layer, size in layers.values():
        parametrize.register_parametrization(layer, "weight", FakeQuantized4Bit(size))
    return len(layers)


def bake_quant_aware(module: nn.Module) -> None:
    """Remove the parametrizations, leaving each weight exactly on the grid (what the student ships as)."""
    from torch.nn.utils import parametrize

    for layer in module.modules():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
