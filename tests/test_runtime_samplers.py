"""Analytic checks: with the ideal epsilon of a known data distribution the samplers must land on it."""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk.runtime import SAMPLERS, EdgeSDKError, timesteps

ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # DDPM linear schedule


def test_timesteps_trailing() -> None:
    ts = timesteps(25, 1000)
    assert ts[0] == 999 and len(ts) == 25 and ts.dtype == np.int64
    assert np.all(np.diff(ts) < 0) and ts[-1] == 39
    np.testing.assert_array_equal(timesteps(1000, 1000), np.arange(999, -1, -1))
    with pytest.raises(EdgeSDKError):
        timesteps(0, 1000)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 4, 30])
def test_point_mass_is_recovered(name: str, steps: int) -> None:
    target = np.array([0.7, -1.3, 2.0])

    def denoise(x: np.ndarray, t: float) -> np.ndarray:
        abar = ABAR[int(t)]
        return (x - np.sqrt(abar) * target) / np.sqrt(1 - abar)

    x_T = np.random.default_rng(1).standard_normal(3).astype(np.float32) * 3
    x0 = SAMPLERS[name](denoise, x_T, ABAR, steps)
    assert x0.dtype == np.float32
    np.testing.assert_allclose(x0, target, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_gaussian_data_moments(name: str) -> None:
    m, s = 1.5, 0.4

    def denoise(x: np.ndarray, t: float) -> np.ndarray:
        # x_t = sqrt(abar) x0 + sqrt(1-abar) n with x0 ~ N(m, s^2): E[x0 | x_t] is linear in x_t
        abar = ABAR[int(t)]
        mean_x0 = m + np.sqrt(abar) * s**2 / (abar * s**2 + 1 - abar) * (x - np.sqrt(abar) * m)
        return (x - np.sqrt(abar) * mean_x0) / np.sqrt(1 - abar)

    x_T = np.random.default_rng(0).standard_normal(20000)
    x0 = SAMPLERS[name](denoise, x_T, ABAR, 200)
    assert abs(x0.mean() - m) < 0.02
    assert abs(x0.std() - s) < 0.02
