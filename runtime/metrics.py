"""Restoration metrics of spec §7 (viws-net.md): PSNR and SSIM on the BT.601 Y channel, numpy only.

This module runs on the device side, so it must never import torch or scipy; the Gaussian filter is done by hand.

- Y = 16 + 65.481 R + 128.553 G + 24.966 B with RGB in [0, 1] and Y on the 0–255 scale (BasicSR's "only_y").
- PSNR uses a data range of 255 on Y. Identical images would give +inf; we cap PSNR at ``PSNR_CAP`` (100 dB) so
  that means over many frames stay finite. A capped value only ever means "numerically identical".
- SSIM uses an 11x11 Gaussian window (sigma 1.5), statistics in the valid region only (no padding), population
  (not sample) covariance, C1 = (0.01*255)^2, C2 = (0.03*255)^2, and the mean of the SSIM map.
Inputs are clipped to [0, 1] first, as the reference evaluation reads 8-bit images that cannot leave that range.
"""

from __future__ import annotations

import math

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError

PSNR_CAP = 100.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_WINDOW = 11
_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) RGB float in [0, 1] -> (..., H, W) Y on the 0–255 scale (float64)."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim < 3 or array.shape[-1] != 3:
        raise EdgeSDKError(f"expected an RGB image shaped (..., H, W, 3), got {array.shape}; pass float RGB in [0, 1]")
    return 16.0 + np.clip(array, 0.0, 1.0) @ _Y_WEIGHTS


def _pair_to_y(restored: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(restored), np.asarray(reference)
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise EdgeSDKError(
            f"restored {a.shape} and reference {b.shape} must both be (H, W, 3) RGB images of the same size"
        )
    return rgb_to_y(a), rgb_to_y(b)


def psnr_y(restored: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB on Y (data range 255), capped at 100 dB for identical images."""
    y_restored, y_reference = _pair_to_y(restored, reference)
    mse = float(np.mean((y_restored - y_reference) ** 2))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def _gaussian_taps(size: int = _WINDOW, sigma: float = _SIGMA) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 2-D Gaussian filter over the last two axes, 'valid' mode (output shrinks by len(taps) - 1)."""
    # The 2-D Gaussian is the outer product of two 1-D ones, so two 11-tap passes replace one 121-tap pass.
    rows = np.lib.stride_tricks.sliding_window_view(image, taps.size, axis=-2) @ taps
    return np.lib.stride_tricks.sliding_window_view(rows, taps.size, axis=-1) @ taps


def ssim_y(restored: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM on Y (0–255) with the 11x11 sigma-1.5 Gaussian window over the valid region."""
    y1, y2 = _pair_to_y(restored, reference)
    if min(y1.shape) < _WINDOW:
        raise EdgeSDKError(f"SSIM needs images of at least {_WINDOW}x{_WINDOW} pixels, got {y1.shape[0]}x{y1.shape[1]}")
    taps = _gaussian_taps()
    mu1, mu2 = _filter_valid(y1, taps), _filter_valid(y2, taps)
    # Population moments: E[xy] - E[x]E[y] under the same window, as the reference (and skimage with
    # use_sample_covariance=False) computes them.
    var1 = _filter_valid(y1 * y1, taps) - mu1 * mu1
    var2 = _filter_valid(y2 * y2, taps) - mu2 * mu2
    cov = _filter_valid(y1 * y2, taps) - mu1 * mu2
    numerator = (2.0 * mu1 * mu2 + _C1) * (2.0 * cov + _C2)
    denominator = (mu1 * mu1 + mu2 * mu2 + _C1) * (var1 + var2 + _C2)
    return float(np.mean(numerator / denominator))
