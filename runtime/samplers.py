"""Diffusion samplers as pure functions over `denoise(x, t) -> eps` (epsilon prediction).

Classifier-free guidance lives inside the `denoise` callable the pipeline builds, so samplers only know the
noise schedule. Arithmetic is float64 (cheap next to the network and keeps the 1/sqrt(abar) division at
t ~ T exact); the network sees float32. Both samplers end with a jump to abar = 1, i.e. they return x_0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError

Denoise = Callable[[np.ndarray, float], np.ndarray]


def timesteps(steps: int, train_timesteps: int) -> np.ndarray:
    """Descending int64 timesteps with "trailing" spacing: T-1, T-1-T/steps, ..., about T/steps - 1.

    Trailing spacing starts exactly at T-1, so sampling starts from (almost) pure noise, and the last
    step's jump to abar = 1 covers the remaining T/steps - 1 timesteps.
    """
    if not 1 <= steps <= train_timesteps:
        raise EdgeSDKError(f"steps must be between 1 and {train_timesteps}, got {steps}")
    return (np.round(np.arange(train_timesteps, 0, -train_timesteps / steps)) - 1).astype(np.int64)[:steps]


def _alpha_sigma(alphas_cumprod: np.ndarray, t: int) -> tuple[float, float]:
    abar = float(alphas_cumprod[t])
    return np.sqrt(abar), np.sqrt(1.0 - abar)


def _eps(denoise: Denoise, x: np.ndarray, t: int) -> np.ndarray:
    return np.asarray(denoise(x.astype(np.float32), float(t)), dtype=np.float64)


def sample_ddim(denoise: Denoise, x_T: np.ndarray, alphas_cumprod: np.ndarray, steps: int, eta: float = 0.0,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """DDIM (Song et al. 2020). eta=0 is deterministic; eta=1 matches DDPM's posterior noise."""
    ts = timesteps(steps, len(alphas_cumprod))
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.asarray(x_T, dtype=np.float64)
    for i, t in enumerate(ts):
        abar = float(alphas_cumprod[t])
        abar_next = float(alphas_cumprod[ts[i + 1]]) if i + 1 < len(ts) else 1.0  # final step: to clean data
        eps = _eps(denoise, x, t)
        x0 = (x - np.sqrt(1.0 - abar) * eps) / np.sqrt(abar)
        sigma = eta * np.sqrt((1.0 - abar_next) / (1.0 - abar) * (1.0 - abar / abar_next))
        x = np.sqrt(abar_next) * x0 + np.sqrt(max(1.0 - abar_next - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def sample_dpmpp_2m(denoise: Denoise, x_T: np.ndarray, alphas_cumprod: np.ndarray, steps: int) -> np.ndarray:
    """DPM-Solver++(2M) (Lu et al. 2022): data-prediction multistep in lambda = log(alpha / sigma).

    The first step is first order (no history yet); the last step is first order into x_0 (lambda = inf).
    """
    ts = timesteps(steps, len(alphas_cumprod))
    x = np.asarray(x_T, dtype=np.float64)
    x0_prev: np.ndarray | None = None
    h_prev = 0.0
    for i, t in enumerate(ts):
        alpha, sigma = _alpha_sigma(alphas_cumprod, int(t))
        x0 = (x - sigma * _eps(denoise, x, t)) / alpha
        if i + 1 == len(ts):
            return x0.astype(np.float32)  # sigma_next = 0: the first-order update is exactly x0
        alpha_next, sigma_next = _alpha_sigma(alphas_cumprod, int(ts[i + 1]))
        h = np.log(alpha_next / sigma_next) - np.log(alpha / sigma)
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
        x = (sigma_next / sigma) * x - alpha_next * np.expm1(-h) * d
        x0_prev, h_prev = x0, h
    raise AssertionError("unreachable: the loop returns on its last step")


SAMPLERS: dict[str, Callable[[Denoise, np.ndarray, np.ndarray, int], np.ndarray]] = {
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
}
