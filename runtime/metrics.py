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


# ------------------------------------------------------------------------------------ colour of a drawn shape
# Personalization quality: how far a generated shape's colour is from the concept's, in CIELAB (D65) with the
# CIEDE2000 difference, where a ΔE of ~1 is a just-noticeable step and differences mean the same across hues
# (an RGB distance overstates greens and understates blues).

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB on the 0–255 scale (any real dtype) -> (..., 3) CIELAB L*, a*, b* (D65), float64."""
    array = np.asarray(rgb, dtype=np.float64)
    if array.shape[-1:] != (3,):
        raise EdgeSDKError(f"expected RGB colours shaped (..., 3), got {array.shape}")
    c = np.clip(array / 255.0, 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB colours (..., 3), broadcast against each other (kL = kC = kH = 1)."""
    lab1, lab2 = np.broadcast_arrays(np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64))
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma_zero = (c1p * c2p) == 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma_zero, 0.0, dh)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_mean, cp_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(chroma_zero, h_sum, h_mean)
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = (-2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
           * np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2)))))
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def shape_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of a drawn shape — those far (in RGB) from the background, read off the four 2x2
    corners (a large shape at an edge can cover most of the border, but not the corners). At most the farthest
    fifth of the image when the shape is small or blurred, all of a large flat shape."""
    array = np.asarray(image, dtype=np.float64)
    corners = np.concatenate([array[:2, :2], array[:2, -2:], array[-2:, :2], array[-2:, -2:]]).reshape(-1, 3)
    distance = np.linalg.norm(array - np.median(corners, axis=0), axis=2)
    return distance >= max(40.0, float(np.percentile(distance, 80)))


def shape_colour_error(images: np.ndarray, target_rgb: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    """(N,) mean CIEDE2000 difference between each image's shape pixels and ``target_rgb`` (0–255). An image whose
    mask is empty (no shape drawn) scores its background's difference instead."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise EdgeSDKError(f"expected images shaped (N, H, W, 3) on the 0-255 scale, got {images.shape}")
    target = srgb_to_lab(np.asarray(target_rgb, dtype=np.float64))
    errors = []
    for image in images:
        mask = shape_mask(image)
        pixels = image[mask] if mask.any() else image.reshape(-1, 3)
        errors.append(float(delta_e2000(srgb_to_lab(pixels), target).mean()))
    return np.array(errors)
