"""The numpy core of forward-only Textual Inversion (runtime/zo.py) on synthetic problems: spec §13, no model."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.zo import (
    StepLog,
    SubspaceGradient,
    ZOAdam,
    ZOConfig,
    ZOTrainer,
    directional_coefficients,
    jitter_check,
    perturbed_batch,
    rge_gradient,
    word_direction_basis,
)


class Quadratic:
    """L(θ) = ‖Aθ − b + σ·e‖², e ~ N(0, I) drawn once per step in `draw` (the step's shared sampling noise)."""

    def __init__(self, d: int = 16, sigma: float = 0.0, num_timesteps: int = 1000, seed: int = 0,
                 record: bool = False, jitter: float = 0.0) -> None:
        r = np.random.default_rng(seed)
        q1, q2 = np.linalg.qr(r.standard_normal((2, d, d)))[0]
        self.A = q1 @ np.diag(np.linspace(0.5, 1.5, d)) @ q2  # condition number 3: a minimum within reach
        self.b = r.standard_normal(d)
        self.dim, self.num_timesteps, self.sigma = d, num_timesteps, sigma
        self.record, self.jitter = record, jitter
        self.draws: list[tuple[int, np.ndarray]] = []
        self.calls: list[tuple[object, np.ndarray]] = []
        self._noise = np.random.default_rng(seed + 1)  # stands in for a backend's numerical noise

    def draw(self, rng: np.random.Generator, t_range: tuple[int, int]) -> tuple[int, np.ndarray]:
        sample = (int(rng.integers(*t_range)), rng.standard_normal(self.dim))
        if self.record:
            self.draws.append(sample)
        return sample

    def losses(self, sample: tuple[int, np.ndarray], thetas: np.ndarray) -> np.ndarray:
        if self.record:
            self.calls.append((sample, thetas.copy()))
        r = thetas.astype(np.float64) @ self.A.T - self.b + self.sigma * sample[1]
        out = np.sum(r * r, axis=1)
        return out + self.jitter * self._noise.standard_normal(out.shape) if self.jitter else out

    def loss(self, theta: np.ndarray) -> float:
        return float(np.sum((self.A @ theta - self.b) ** 2))

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return 2 * self.A.T @ (self.A @ theta - self.b)


def test_defaults_are_spec_section_7() -> None:
    c = ZOConfig()
    assert (c.n, c.mu, c.lr, c.beta1, c.beta2, c.adam_eps) == (2, 1e-3, 5e-3, 0.9, 0.999, 1e-3)
    assert (c.sg, c.sg_tau, c.sg_nu, c.sg_standardize) == (True, 128, 1e-3, True)  # not argparse's nu = 0.99
    assert (c.puts, c.t_low_frac, c.t_high_frac, c.dim_scale) == (True, 0.5, 0.9, True)


@pytest.mark.parametrize("bad", [{"n": 0}, {"mu": 0.0}, {"lr": -1.0}, {"sg_tau": 1}, {"sg_nu": 0.0}, {"sg_nu": 1.0},
                                 {"t_low_frac": 0.9, "t_high_frac": 0.5}, {"n": 1.5}, {"draws": 0}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(EdgeSDKError):
        ZOConfig(**bad)


def test_puts_range() -> None:
    assert ZOConfig().timestep_range(1000) == (500, 900)
    assert ZOConfig().timestep_range(200) == (100, 180)
    assert ZOConfig(t_low_frac=0.7).timestep_range(1000) == (700, 900)  # SDXL
    assert ZOConfig(puts=False).timestep_range(1000) == (0, 1000)
    problem = Quadratic(d=4, record=True)
    ZOTrainer(problem, ZOConfig(sg_tau=8), np.zeros(4)).run(400)
    ts = np.array([t for t, _ in problem.draws])
    assert ts.min() >= 500 and ts.max() < 900 and len(np.unique(ts)) > 100
    problem = Quadratic(d=4, record=True)
    ZOTrainer(problem, ZOConfig(sg_tau=8, puts=False), np.zeros(4)).run(400)
    ts = np.array([t for t, _ in problem.draws])
    assert ts.min() < 500 and ts.max() >= 900


def test_rge_hand_example() -> None:
    u = np.array([[1.0, 0.0], [0.0, 1.0]])
    g, c = rge_gradient(np.array([1.0, 1.002, 0.999]), u, mu=1e-3, d_eff=2, dim_scale=False)
    np.testing.assert_allclose(c, [2.0, -1.0], rtol=1e-9)
    np.testing.assert_allclose(g, [1.0, -0.5], rtol=1e-9)  # Σ c_i u_i / n
    g_scaled, _ = rge_gradient(np.array([1.0, 1.002, 0.999]), u, mu=1e-3, d_eff=2, dim_scale=True)
    np.testing.assert_allclose(g_scaled, g / np.sqrt(1.5), rtol=1e-9)  # / sqrt((d_eff + n - 1) / n)
    with pytest.raises(EdgeSDKError):
        rge_gradient(np.zeros(2), u, mu=1e-3, d_eff=2)


def test_rge_cosine_to_true_gradient() -> None:
    problem = Quadratic(d=16)
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(16)
    u = rng.standard_normal((256, 16))
    thetas = np.vstack([theta, theta + 1e-3 * u])
    losses = np.array([problem.loss(t) for t in thetas])
    g, _ = rge_gradient(losses, u, 1e-3, d_eff=16, dim_scale=True)
    true = problem.grad(theta)
    assert g @ true / (np.linalg.norm(g) * np.linalg.norm(true)) > 0.9  # expected about sqrt(256 / 272)


def test_two_sided_estimate_cancels_curvature() -> None:
    """On a quadratic, (L(θ + μu) − L(θ − μu)) / 2μ is exactly u·∇L (the μ² term cancels); one-sided is off by
    μ·uᵀAᵀAu. At μ = 0.1 (the int8 bundles' μ) the one-sided slope is visibly biased."""
    problem = Quadratic(d=16)
    rng = np.random.default_rng(5)
    theta, u = rng.standard_normal(16), rng.standard_normal((4, 16))
    exact = u @ problem.grad(theta)
    both = perturbed_batch(theta, u, 0.1, two_sided=True).astype(np.float64)
    assert both.shape == (8, 16)
    np.testing.assert_allclose(both[:4] + both[4:], np.tile(2 * theta, (4, 1)), atol=1e-5)  # θ ± μu pairs
    two = directional_coefficients([problem.loss(t) for t in both], 4, 0.1, two_sided=True)
    one_batch = perturbed_batch(theta, u, 0.1).astype(np.float64)
    one = directional_coefficients([problem.loss(t) for t in one_batch], 4, 0.1)
    assert np.max(np.abs(two - exact)) < 1e-4 * np.max(np.abs(exact))  # only float32 rounding of θ ± μu left
    assert np.max(np.abs(one - exact)) > 0.01 * np.max(np.abs(exact))
    with pytest.raises(EdgeSDKError, match="expected 8 losses"):
        directional_coefficients(np.zeros(5), 4, 0.1, two_sided=True)


def test_draws_share_directions_and_average() -> None:
    problem = Quadratic(d=8, sigma=1.0, record=True)
    config = ZOConfig(n=3, sg_tau=4, draws=3, two_sided=True)
    assert config.queries == 6
    trainer = ZOTrainer(problem, config, np.full(8, 0.1))
    log = trainer.step()
    assert len(problem.draws) == 3 and len(problem.calls) == 3  # three samples, one batched query each
    batches = [thetas for _, thetas in problem.calls]
    assert all(b.shape == (6, 8) for b in batches) and all(np.array_equal(b, batches[0]) for b in batches)
    assert [sample for sample, _ in problem.calls] == problem.draws
    per_draw = [directional_coefficients(problem.losses(sample, batches[0]), 3, config.mu, True)
                for sample in problem.draws]
    np.testing.assert_allclose(log.coefficients, np.mean(per_draw, axis=0), rtol=1e-12)
    # one draw per step takes the generator's numbers as before the option existed: sample, then directions
    a, b = Quadratic(d=8, sigma=1.0), Quadratic(d=8, sigma=1.0)
    one = ZOTrainer(a, ZOConfig(sg_tau=4, draws=1), np.zeros(8))
    one.run(5)
    rng = np.random.Generator(np.random.PCG64(0))
    for _ in range(5):
        b.draw(rng, (500, 900))
        rng.standard_normal((2, 8))
    assert one.rng.bit_generator.state == rng.bit_generator.state


def test_cosine_lr_schedule() -> None:
    config = ZOConfig(lr=1e-2, steps=100, cosine_lr=True)
    assert config.lr_at(1) == 1e-2 and config.lr_at(51) == pytest.approx(5e-3) and config.lr_at(101) == 0.0
    assert all(config.lr_at(s) > config.lr_at(s + 1) for s in range(1, 100))
    assert ZOConfig(lr=1e-2, steps=100).lr_at(100) == 1e-2  # constant unless asked
    # the schedule reaches the update: a step at s = steps + 1 (lr 0) leaves θ where it was
    trainer = ZOTrainer(Quadratic(d=4), ZOConfig(lr=1e-2, steps=2, cosine_lr=True, sg=False), np.zeros(4))
    trainer.run(2)
    before = trainer.theta.copy()
    trainer.step()
    np.testing.assert_array_equal(trainer.theta, before)


def test_word_directions_stay_in_the_words_span() -> None:
    rng = np.random.default_rng(2)
    words = rng.standard_normal((6, 16)).astype(np.float32)
    basis = word_direction_basis(words)
    assert basis.shape == (5, 16)  # six words, centred on their mean: a 5-dimensional span
    np.testing.assert_allclose(basis @ basis.T, np.eye(5), atol=1e-12)  # orthonormal: every direction equally
    centred = words.astype(np.float64) - words.mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(centred - (centred @ basis.T) @ basis, 0.0, atol=1e-6)  # spans the words
    assert word_direction_basis(rng.standard_normal((16, 16))) is None  # words that span everything: no prior
    problem = Quadratic(d=16, record=True)
    problem.direction_basis = basis
    trainer = ZOTrainer(problem, ZOConfig(n=3, word_directions=True, sg=False), np.zeros(16))
    trainer.run(3)
    span = basis
    for _, thetas in problem.calls:
        steps = thetas[1:].astype(np.float64) - thetas[0]
        np.testing.assert_allclose(steps - (steps @ span.T) @ span, 0.0, atol=1e-6)  # perturbed inside the span
    with pytest.raises(EdgeSDKError, match="direction_basis"):
        problem.direction_basis = basis[:, :8]
        ZOTrainer(problem, ZOConfig(word_directions=True), np.zeros(16))
    off = Quadratic(d=16, record=True)
    off.direction_basis = basis
    ZOTrainer(off, ZOConfig(n=3, sg=False), np.zeros(16)).run(1)  # option off: isotropic, outside the span too
    moved = off.calls[0][1][1:].astype(np.float64) - off.calls[0][1][0]
    assert np.abs(moved - (moved @ span.T) @ span).max() > 1e-4


def test_estimator_options_reduce_quadratic_loss() -> None:
    problem = Quadratic(d=16, sigma=0.2)
    config = ZOConfig(n=2, lr=5e-2, sg_tau=8, two_sided=True, draws=2, cosine_lr=True, steps=400)
    trainer = ZOTrainer(problem, config, np.zeros(16))
    trainer.run()
    assert problem.loss(trainer.theta) < 0.1 * problem.loss(np.zeros(16))


def test_common_random_numbers_and_batching() -> None:
    problem = Quadratic(d=8, sigma=1.0, record=True)
    trainer = ZOTrainer(problem, ZOConfig(n=3, sg_tau=4), np.full(8, 0.1))
    trainer.run(3)
    assert len(problem.calls) == 3  # one batched forward of n + 1 rows per step
    for (sample, thetas), drawn in zip(problem.calls, problem.draws, strict=True):
        assert sample is drawn and thetas.shape == (4, 8) and thetas.dtype == np.float32
    (s0, _), (s1, _) = problem.calls[:2]
    assert not np.array_equal(s0[1], s1[1])  # everything is redrawn at the next step
    # Same sample, same θ: identical losses; the batched forward equals the row-by-row one.
    sample, thetas = problem.calls[-1]
    np.testing.assert_array_equal(problem.losses(sample, thetas), problem.losses(sample, thetas))
    rows = np.concatenate([problem.losses(sample, thetas[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(problem.losses(sample, thetas), rows, rtol=1e-12)
    same = np.repeat(thetas[:1], 4, axis=0)
    assert np.ptp(problem.losses(sample, same)) == 0


def test_perturbed_batch_is_out_of_place_fp32() -> None:
    theta = np.array([0.25, -1.5, 3.0])
    u = np.random.default_rng(0).standard_normal((2, 3))
    batch = perturbed_batch(theta, u, 1e-3)
    assert batch.dtype == np.float32 and batch.shape == (3, 3)
    np.testing.assert_array_equal(batch[0], theta.astype(np.float32))
    np.testing.assert_allclose(batch[1:] - batch[0], 1e-3 * u, atol=1e-6)
    np.testing.assert_array_equal(theta, [0.25, -1.5, 3.0])


def _random_walk(seed: int, d: int, tau: int) -> tuple[np.ndarray, np.ndarray]:
    """Three strong orthonormal directions walking with steps of size ~1, plus a 1e-3 random walk in all of R^d."""
    r = np.random.default_rng(seed)
    q = np.linalg.qr(r.standard_normal((d, 3)))[0].T
    walk = np.cumsum(r.standard_normal((tau, 3)) * [1.0, 0.7, 0.5], axis=0)
    return walk @ q + 1e-3 * np.cumsum(r.standard_normal((tau, d)), axis=0), q


@pytest.mark.parametrize("standardize", [True, False])
def test_sg_removes_low_variance_directions_only(standardize: bool) -> None:
    d, tau = 64, 32
    trajectory, strong = _random_walk(1, d, tau)
    sg = SubspaceGradient(d, tau=tau, nu=1e-3, standardize=standardize)
    for s, theta in enumerate(trajectory, start=1):
        refreshed = sg.push(theta, s)
        assert refreshed == (s == tau) and sg.index == s % tau
    P = sg.P
    # i* = 2: the three strong components are kept; the centred buffer's rank is tau - 1, and its numerically null
    # component (an arbitrary direction outside the trajectory's span) is not removed
    assert P is not None and sg.k == P.shape[0] == tau - 1 - 3
    np.testing.assert_allclose(P @ P.T, np.eye(sg.k), atol=1e-10)
    centred = sg.buffer - sg.buffer.mean(axis=0)
    centred /= sg.buffer.std(axis=0) if standardize else 1.0
    # every removed direction lies in the trajectory's span: nothing arbitrary is projected out
    np.testing.assert_allclose(P @ np.linalg.pinv(centred) @ centred, P, atol=1e-8)
    if standardize:  # variance is judged in z-scored coordinates (§6), so check the strong directions there
        strong = strong / sg.buffer.std(axis=0)
        strong /= np.linalg.norm(strong, axis=1, keepdims=True)
    assert np.linalg.norm(strong @ P.T, axis=1).max() < 0.05
    # The projection is an orthogonal projector that leaves the strong directions (almost) alone.
    g = np.random.default_rng(2).standard_normal(d)
    pg = sg.project(g)
    np.testing.assert_allclose(P @ pg, 0, atol=1e-10)
    np.testing.assert_allclose(sg.project(pg), pg, atol=1e-12)


def test_sg_k_at_most_tau_minus_two_on_isotropic_walk() -> None:
    d, tau = 40, 16
    trajectory = np.cumsum(np.random.default_rng(5).standard_normal((tau, d)), axis=0)
    sg = SubspaceGradient(d, tau=tau, nu=1e-3)
    for s, theta in enumerate(trajectory, start=1):
        sg.push(theta, s)
    # rank <= tau - 1 and the first component is always kept; an isotropic walk spreads its variance so evenly that
    # few components (maybe none) fall beyond 1 - nu
    assert 0 <= sg.k <= tau - 2
    if sg.k:
        np.testing.assert_allclose(sg.P @ sg.P.T, np.eye(sg.k), atol=1e-10)
        centred = (sg.buffer - sg.buffer.mean(axis=0)) / sg.buffer.std(axis=0)
        # every removed direction lies in the trajectory's span: nothing arbitrary is projected out
        np.testing.assert_allclose(sg.P @ np.linalg.pinv(centred) @ centred, sg.P, atol=1e-8)


def test_sg_degenerate_buffer_keeps_old_p() -> None:
    d, tau = 16, 8
    sg = SubspaceGradient(d, tau=tau)
    for s in range(1, tau + 1):
        sg.push(np.ones(d), s)
    assert sg.P is None and sg.k == 0  # all rows equal: nothing to learn from, nothing removed
    trajectory, _ = _random_walk(0, d, tau)
    for s, theta in enumerate(trajectory, start=tau + 1):
        sg.push(theta, s)
    old = sg.P.copy()
    for s in range(2 * tau + 1, 3 * tau + 1):
        assert sg.push(np.full(d, 2.0), s) is False
    np.testing.assert_array_equal(sg.P, old)


def test_zo_adam_hand_computed_steps() -> None:
    adam = ZOAdam(2, lr=5e-3)  # β1 0.9, β2 0.999, ε 1e-3
    # s = 1, g = (0.5, −2): m = 0.1 g, v = 0.001 g², so m̂ = g, v̂ = g², √v̂ = |g| = (0.5, 2)
    # θ = 1 − 0.005 · (0.5 / 0.501, −2 / 2.001) = (0.99500998004, 1.00499750125)
    theta = adam.step(np.array([1.0, 1.0]), np.array([0.5, -2.0]), 1)
    np.testing.assert_allclose(adam.m, [0.05, -0.2], atol=1e-12)
    np.testing.assert_allclose(adam.v, [0.00025, 0.004], atol=1e-12)
    np.testing.assert_allclose(theta, [0.99500998004, 1.00499750125], atol=1e-6)
    # s = 2, g = (1, 0): m = (0.145, −0.18), v = (0.00124975, 0.003996)
    # m̂ = m / 0.19 = (0.7631578947, −0.9473684211), v̂ = v / 0.001999, √v̂ = (0.7906880509, 1.4138597879)
    # θ −= 0.005 · m̂ / (√v̂ + 0.001) → (0.9901901656, 1.0083454246)
    theta = adam.step(theta, np.array([1.0, 0.0]), 2)
    np.testing.assert_allclose(adam.m, [0.145, -0.18], atol=1e-12)
    np.testing.assert_allclose(adam.v, [0.00124975, 0.003996], atol=1e-12)
    np.testing.assert_allclose(theta, [0.9901901656, 1.0083454246], atol=1e-6)


def test_trainer_reduces_quadratic_loss_and_logs() -> None:
    problem = Quadratic(d=16)
    trainer = ZOTrainer(problem, ZOConfig(lr=2e-2, sg_tau=8), np.zeros(16))  # tau < d, as with real tokens
    seen: list[StepLog] = []
    logs = trainer.run(400, on_step=seen.append)
    assert len(logs) == 400 and seen == logs and trainer.s == 400
    assert problem.loss(trainer.theta) < 0.1 * problem.loss(np.zeros(16))
    first = logs[0]
    assert first.step == 1 and first.loss == pytest.approx(problem.loss(np.zeros(16)), rel=1e-6)  # L(θ), unperturbed
    assert first.coefficients.shape == (2,) and first.k == 0 and first.seconds >= 0
    assert first.grad_norm == first.grad_norm_projected
    late = logs[-1]
    assert late.k >= 1 and late.grad_norm_projected < late.grad_norm  # SG refreshed at step 8 and is used
    # The projection acts on g before the moments: this step's increment of m lies outside P's row space.
    P, m_before = trainer.sg.P.copy(), trainer.adam.m.copy()
    trainer.step()
    g_used = (trainer.adam.m - 0.9 * m_before) / 0.1
    assert np.linalg.norm(g_used) > 0
    np.testing.assert_allclose(P @ g_used, 0, atol=1e-9 * np.linalg.norm(g_used))
    assert trainer.token().dtype == np.float32


def test_trainer_respects_time_budget() -> None:
    trainer = ZOTrainer(Quadratic(d=4), ZOConfig(sg_tau=4), np.zeros(4))
    assert trainer.run(100, time_budget_s=0.0) == [] and trainer.s == 0


def _config(**changes: object) -> ZOConfig:
    return dataclasses.replace(ZOConfig(lr=2e-2, sg_tau=8, checkpoint_every=5, seed=7), **changes)


class _Kill(Exception):
    pass


def test_checkpoint_kill_resume_is_bit_identical(tmp_path: Path) -> None:
    d = 16
    reference = ZOTrainer(Quadratic(d=d, sigma=0.5), _config(), np.zeros(d))
    ref_logs = reference.run(40)

    ckpt = tmp_path / "zo.npz"

    def kill_at_23(log: StepLog) -> None:
        if log.step == 23:
            raise _Kill

    trainer = ZOTrainer(Quadratic(d=d, sigma=0.5), _config(), np.zeros(d))
    with pytest.raises(_Kill):
        trainer.run(40, checkpoint_path=ckpt, on_step=kill_at_23, extra={"order": np.arange(5)})
    del trainer
    assert not [p for p in tmp_path.iterdir() if p.name != "zo.npz"]  # no temp files left behind

    resumed = ZOTrainer.resume(ckpt, Quadratic(d=d, sigma=0.5), _config(steps=99))  # steps may differ
    assert resumed.s == 20  # the last periodic checkpoint before the kill
    np.testing.assert_array_equal(resumed.extra["order"], np.arange(5))
    logs = resumed.run(40, checkpoint_path=ckpt)
    assert np.array_equal(resumed.theta, reference.theta)
    assert np.array_equal(resumed.adam.m, reference.adam.m) and np.array_equal(resumed.adam.v, reference.adam.v)
    assert np.array_equal(resumed.sg.P, reference.sg.P)
    assert [log.loss for log in logs] == [log.loss for log in ref_logs[20:]]
    assert ZOTrainer.resume(ckpt, Quadratic(d=d, sigma=0.5), _config()).s == 40  # saved at the end


@pytest.mark.parametrize("change", [{"lr": 1e-2}, {"n": 3}, {"mu": 1e-2}, {"seed": 8}, {"sg_nu": 1e-2},
                                    {"sg": False}, {"puts": False}, {"two_sided": True}, {"draws": 2},
                                    {"cosine_lr": True}])
def test_resume_refuses_other_settings(tmp_path: Path, change: dict) -> None:
    ckpt = tmp_path / "zo.npz"
    ZOTrainer(Quadratic(d=8), _config(), np.zeros(8)).run(6, checkpoint_path=ckpt)
    with pytest.raises(EdgeSDKError, match=next(iter(change))):
        ZOTrainer.resume(ckpt, Quadratic(d=8), _config(**change))


def test_resume_refuses_other_width_and_bad_files(tmp_path: Path) -> None:
    ckpt = tmp_path / "zo.npz"
    ZOTrainer(Quadratic(d=8), _config(), np.zeros(8)).run(6, checkpoint_path=ckpt)
    with pytest.raises(EdgeSDKError, match="dim"):
        ZOTrainer.resume(ckpt, Quadratic(d=9), _config())
    with pytest.raises(EdgeSDKError, match="does not exist"):
        ZOTrainer.resume(tmp_path / "missing.npz", Quadratic(d=8), _config())
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EdgeSDKError, match="not a readable"):
        ZOTrainer.resume(tmp_path / "junk.npz", Quadratic(d=8), _config())


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "zo.npz"
    trainer = ZOTrainer(Quadratic(d=8), _config(), np.zeros(8))
    trainer.run(5, checkpoint_path=ckpt)
    before = ckpt.read_bytes()

    def failing_savez(file: object, **arrays: np.ndarray) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    trainer.run(7)
    with pytest.raises(EdgeSDKError, match="disk full"):
        trainer.save(ckpt)
    assert ckpt.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["zo.npz"]
    monkeypatch.undo()
    assert ZOTrainer.resume(ckpt, Quadratic(d=8), _config()).s == 5


def test_jitter_check() -> None:
    theta = np.zeros(16)
    quiet = jitter_check(Quadratic(d=16, sigma=1.0), theta, ZOConfig(), np.random.default_rng(0))
    assert quiet["jitter"] == 0 and quiet["typical_delta"] > 0 and quiet["warning"] is None
    # Noise of 1e-2 against |ΔL| = μ·|∇L·u| ~ 1e-2: far above 10 %.
    noisy = jitter_check(Quadratic(d=16, sigma=1.0, jitter=1e-2), theta, ZOConfig(), np.random.default_rng(0))
    assert noisy["ratio"] > 0.1 and "mu" in noisy["warning"]
    ok = jitter_check(Quadratic(d=16, sigma=1.0, jitter=1e-2), theta, ZOConfig(mu=1.0), np.random.default_rng(0))
    assert ok["warning"] is None
    two_sided = jitter_check(Quadratic(d=16, sigma=1.0), theta, ZOConfig(two_sided=True), np.random.default_rng(0))
    assert two_sided["jitter"] == 0 and two_sided["typical_delta"] > 0


def test_zo_does_not_import_torch() -> None:
    code = "import sys, edgesdk.runtime.zo; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
