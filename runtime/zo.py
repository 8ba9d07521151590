"""Forward-only (zeroth-order) Textual Inversion: the numpy core of the on-device training loop.

Spec: specs/zo-personalization.md §3-§7 and §11 (method: ZOODiP, Seo et al., CVPR 2025). Each step evaluates the
loss at θ and at n perturbed copies θ + μ·u_i in one batched forward, turns the differences into a random gradient
estimate (RGE), removes the low-variance directions of the recent trajectory (Subspace Gradient, SG) and takes an
Adam step. No backward pass, no torch: this module runs on phones and is written to port line by line to
Kotlin/Swift.

The core sees one flat trainable vector θ of width d. A multi-vector placeholder is concatenated by the caller, so
every vector is trained and every coordinate has its own Adam moments. All optimizer state (θ, m, v, SG buffer, P)
is float64: at least the fp32 that §4 demands, and a checkpoint restores it bit for bit. The model sees float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file
from edgesdk.runtime.limits import MAX_ARRAY_FILE_BYTES, MAX_STEPS, check_finite_array, check_input_file

CHECKPOINT_FORMAT = 1
# Config fields that do not change the trajectory; every other field must match to resume a checkpoint. (`steps`
# is the horizon of a cosine lr schedule: resuming with other steps stretches what is left of it.)
_RUN_ONLY_FIELDS = frozenset({"steps", "checkpoint_every"})


@dataclass(frozen=True)
class ZOConfig:
    """Hyperparameters; the defaults are spec §7 (the reference script's argparse defaults are wrong, §10.1)."""

    n: int = 2  # directions per step: n + 1 forwards
    mu: float = 1e-3  # perturbation size; 1e-2 for bf16 activations, SD 2.1, SDXL
    lr: float = 5e-3  # the paper's η; the reference shell script uses 1e-2
    steps: int = 30_000  # the reference's count; small models need far fewer (pick from the eval curve, §12)
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-3  # 1e-3, not the usual 1e-8 (§4)
    sg: bool = True
    sg_tau: int = 128  # SG trajectory buffer length; P is refreshed every tau steps
    sg_nu: float = 1e-3  # variance fraction left out of the kept components
    sg_standardize: bool = True  # judge variance on z-scored coordinates, as the paper does
    puts: bool = True  # Partial Uniform Timestep Sampling; False samples t uniformly over [0, T)
    t_low_frac: float = 0.5  # PUTS range as fractions of T: [500, 900) for T = 1000
    t_high_frac: float = 0.9
    dim_scale: bool = True  # the reference's extra 1/sqrt((d_eff + n - 1) / n); off only for ablation
    two_sided: bool = False  # antithetic pairs θ ± μu_i (2n queries, no θ row): the O(μ) curvature term cancels
    draws: int = 1  # independent samples (image, noise, t) per step, each queried with the same directions
    cosine_lr: bool = False  # lr · ½(1 + cos(π (s − 1) / steps)): decays over the run's `steps` (else constant)
    word_directions: bool = False  # perturb along the model's own word embeddings (the problem's direction_basis)
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        def is_int(x: object) -> bool:
            return isinstance(x, int | np.integer) and not isinstance(x, bool)

        def positive(x: float) -> bool:
            return math.isfinite(x) and x > 0

        checks = [
            (is_int(self.n) and self.n >= 1, f"n (directions) must be an integer >= 1, got {self.n!r}"),
            (positive(self.mu), f"mu must be > 0, got {self.mu!r}"),
            (positive(self.lr), f"lr must be > 0, got {self.lr!r}"),
            (is_int(self.steps) and self.steps >= 0, f"steps must be an integer >= 0, got {self.steps!r}"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"betas must be in [0, 1), got {self.beta1}, {self.beta2}"),
            (positive(self.adam_eps), f"adam_eps must be > 0, got {self.adam_eps!r}"),
            (is_int(self.sg_tau) and self.sg_tau >= 2, f"sg_tau must be an integer >= 2, got {self.sg_tau!r}"),
            (0 < self.sg_nu < 1, f"sg_nu must be in (0, 1), got {self.sg_nu!r}"),
            (0 <= self.t_low_frac < self.t_high_frac <= 1,
             f"need 0 <= t_low_frac < t_high_frac <= 1, got {self.t_low_frac}, {self.t_high_frac}"),
            (is_int(self.checkpoint_every) and self.checkpoint_every >= 1,
             f"checkpoint_every must be an integer >= 1, got {self.checkpoint_every!r}"),
            (is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}"),
            (is_int(self.draws) and self.draws >= 1, f"draws must be an integer >= 1, got {self.draws!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise EdgeSDKError(message)

    def timestep_range(self, num_timesteps: int) -> tuple[int, int]:
        """[lo, hi) to draw t from: (⌊0.5·T⌋, ⌊0.9·T⌋) with PUTS, else (0, T)."""
        if num_timesteps < 1:
            raise EdgeSDKError(f"num_timesteps must be >= 1, got {num_timesteps}")
        if not self.puts:
            return 0, int(num_timesteps)
        # The epsilon keeps products like 0.29 * 100 = 28.999999999999996 from flooring one step too low.
        lo = math.floor(self.t_low_frac * num_timesteps + 1e-9)
        hi = math.floor(self.t_high_frac * num_timesteps + 1e-9)
        if lo >= hi:
            raise EdgeSDKError(f"timestep range [{lo}, {hi}) is empty for T = {num_timesteps}; widen t_low/high_frac")
        return lo, hi

    @property
    def queries(self) -> int:
        """Loss evaluations per draw: n + 1 (θ and θ + μu_i) one-sided, 2n (θ ± μu_i) two-sided."""
        return 2 * self.n if self.two_sided else self.n + 1

    def lr_at(self, s: int) -> float:
        """The learning rate of update number s (1-based)."""
        if self.cosine_lr and self.steps > 0:
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(s - 1, self.steps) / self.steps))
        return self.lr

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class ZOProblem(Protocol):
    """What the trainer needs from the model side. The runtime implements it over exported graphs."""

    @property
    def dim(self) -> int:
        """d: width of the flat trainable vector (num_vectors · token width, from the embedding table)."""
        ...

    @property
    def num_timesteps(self) -> int:
        """T: the scheduler's training timesteps."""
        ...

    def draw(self, rng: np.random.Generator, t_range: tuple[int, int]) -> Any:
        """Everything the n + 1 queries of one step share (image, flip, noise, caption, t in [lo, hi)).

        Common random numbers are mandatory (§3): the loss differences are O(μ), the sampling noise O(1).
        Must draw only from `rng`, so that a resumed run draws the same numbers.
        """
        ...

    def losses(self, sample: Any, thetas: np.ndarray) -> np.ndarray:
        """Loss of each row of `thetas` ((n + 1, d) float32) on the same `sample`: shape (n + 1,)."""
        ...

    # Optional: `direction_basis` ((k, d) float64, k < d), the rows that `word_directions` perturbs along; a problem
    # without one (or with k >= d) is perturbed in the whole space.


def word_direction_basis(embeddings: np.ndarray) -> np.ndarray | None:
    """B for `word_directions`: an orthonormal basis (k, d) of the span of the vocabulary's word embeddings, centred
    on their mean (modified Gram-Schmidt, words in vocabulary order; a word already in the span of the earlier ones
    adds nothing). Directions u = z B with z ~ N(0, I_k) explore the subspace in which the model's own words lie,
    every direction of it equally. None when the words span the whole space anyway (k >= d, CLIP's 49k tokens).
    Every sum runs in a fixed order, so the C++ runtime computes the same bits."""
    rows = np.asarray(embeddings, dtype=np.float32).astype(np.float64)
    count, width = rows.shape
    if count >= width or count < 2:
        return None
    mean = np.zeros(width)
    for row in rows:
        mean += row
    basis: list[np.ndarray] = []
    for row in rows - mean / count:
        norm0 = _norm(row)
        for q in basis:
            row = row - _dot(row, q) * q
        norm = _norm(row)
        if norm > 1e-9 * norm0:
            basis.append(row / norm)
    return np.array(basis)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        total += x * y
    return total


def _norm(a: np.ndarray) -> float:
    return math.sqrt(_dot(a, a))


def basis_directions(z: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """u = z B, (n, k) @ (k, d), accumulated basis row by basis row (not BLAS: the same bits on every CPU)."""
    u = np.zeros((z.shape[0], basis.shape[1]), dtype=np.float64)
    for j in range(basis.shape[0]):
        u += z[:, j:j + 1] * basis[j]
    return u


@dataclass(frozen=True)
class StepLog:
    """Per-step figures (§10.8): L(θ) itself, not a perturbed loss."""

    step: int
    loss: float  # L(θ): row 0 of the batch (two-sided: the mean of the rows), averaged over the step's draws
    coefficients: np.ndarray  # c_i = (L(θ + μu_i) − L(θ)) / μ (two-sided: (L(θ + μu_i) − L(θ − μu_i)) / 2μ)
    grad_norm: float  # ‖g‖ before the SG projection
    grad_norm_projected: float  # ‖g‖ after it (equal when SG is off or P is not set yet)
    k: int  # rows of P used in this step
    seconds: float


def perturbed_batch(theta: np.ndarray, directions: np.ndarray, mu: float, two_sided: bool = False) -> np.ndarray:
    """Θ = [θ, θ + μu_1, …, θ + μu_n], or two-sided [θ + μu_1, …, θ + μu_n, θ − μu_1, …, θ − μu_n], as float32,
    built out of place (never add-then-subtract, §3)."""
    n = directions.shape[0]
    if two_sided:
        batch = np.empty((2 * n, theta.shape[0]), dtype=np.float32)
        batch[:n] = theta + mu * directions  # float64 sums, each rounded once at the model boundary
        batch[n:] = theta - mu * directions
        return batch
    batch = np.empty((n + 1, theta.shape[0]), dtype=np.float32)
    batch[0] = theta
    batch[1:] = theta + mu * directions
    return batch


def directional_coefficients(losses: np.ndarray, n: int, mu: float, two_sided: bool = False) -> np.ndarray:
    """c_i, the finite-difference slope along u_i: (L(θ + μu_i) − L(θ)) / μ, or (L(θ + μu_i) − L(θ − μu_i)) / 2μ
    two-sided, from the losses of `perturbed_batch`'s rows."""
    losses = np.asarray(losses, dtype=np.float64)
    expected = 2 * n if two_sided else n + 1
    if losses.shape != (expected,):
        raise EdgeSDKError(f"expected {expected} losses for {n} directions, got shape {losses.shape}")
    if two_sided:
        return (losses[:n] - losses[n:]) / (2.0 * mu)
    return (losses[1:] - losses[0]) / mu


def estimate_gradient(coefficients: np.ndarray, directions: np.ndarray, d_eff: int,
                      dim_scale: bool = True) -> np.ndarray:
    """g = Σ c_i u_i / (n · sqrt((d_eff + n − 1) / n)), or / n without `dim_scale` (§4)."""
    u = np.asarray(directions, dtype=np.float64)
    n = u.shape[0]
    scale = n * math.sqrt((d_eff + n - 1) / n) if dim_scale else float(n)
    # Σ c_i u_i accumulated direction by direction, each product and sum rounded on its own: `coefficients @ u`
    # goes to the BLAS, whose kernel (and use of fused multiply-adds) depends on the CPU, so the same run would
    # give other bits on another machine and the C++ runtime could not match it everywhere.
    total = np.zeros(u.shape[1], dtype=np.float64)
    for c_i, u_i in zip(coefficients, u, strict=True):
        total += c_i * u_i
    return total / scale


def rge_gradient(losses: np.ndarray, directions: np.ndarray, mu: float, d_eff: int,
                 dim_scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One-sided random gradient estimate (§3, §4): returns (g, c) with c_i = (L_i − L_0) / μ.

    g = Σ c_i u_i / (n · sqrt((d_eff + n − 1) / n)), or / n without `dim_scale`.
    """
    coefficients = directional_coefficients(losses, np.asarray(directions).shape[0], mu)
    return estimate_gradient(coefficients, directions, d_eff, dim_scale), coefficients


class SubspaceGradient:
    """Subspace Gradient (§6): remove the directions along which the recent trajectory barely moved.

    B holds the last tau values of θ (after each update). Every tau steps a PCA of B picks the components
    beyond the first 1 − ν of variance (within the trajectory's numerical rank, see ``refresh``); their rows form
    P, and g ← g − (g Pᵀ) P until the next refresh.
    """

    def __init__(self, dim: int, tau: int = 128, nu: float = 1e-3, standardize: bool = True) -> None:
        self.tau, self.nu, self.standardize = tau, nu, standardize
        self.buffer = np.zeros((tau, dim), dtype=np.float64)
        self.index = 0  # next slot to write; kept for checkpoints and inspection
        self.P: np.ndarray | None = None

    @property
    def k(self) -> int:
        return 0 if self.P is None else int(self.P.shape[0])

    def project(self, g: np.ndarray) -> np.ndarray:
        if self.P is None:
            return g
        return g - (g @ self.P.T) @ self.P

    def push(self, theta: np.ndarray, step: int) -> bool:
        """Record θ after update number `step` (1-based); refresh P when step % tau == 0. True if P changed."""
        self.buffer[(step - 1) % self.tau] = theta
        self.index = step % self.tau
        return step % self.tau == 0 and self.refresh()

    def refresh(self) -> bool:
        """Recompute P from the buffer; keep the old P (return False) when all rows are equal."""
        b = self.buffer
        constant = np.all(b == b[0], axis=0)
        if constant.all():
            return False
        z = b - b.mean(axis=0)
        # A constant column must stay exactly zero: its mean can round, and dividing that rounding error by an
        # equally tiny std would invent unit-variance noise. Zero spread gets scale 1, as in sklearn.
        z[:, constant] = 0.0
        if self.standardize:
            std = z.std(axis=0)
            std[constant] = 1.0
            z /= std
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        variance = singular**2
        cumulative = np.cumsum(variance) / variance.sum()
        # i* = smallest 0-based index with cumulative[i*] > 1 − ν; the min() only guards the last entry's rounding.
        i_star = min(int(np.searchsorted(cumulative, 1.0 - self.nu, side="right")), len(cumulative) - 1)
        # Deviation from §6 step 4: components with a numerically zero singular value are left out of P. The centred
        # buffer has rank <= tau - 1, so its last right singular vector is any unit vector orthogonal to the
        # trajectory's span (d - tau + 1 candidates): which one LAPACK returns is decided by rounding, and differs
        # between LAPACK builds and the C++ runtime's Jacobi SVD. Removing one arbitrary direction of d carries no
        # information; leaving it out makes P a property of the trajectory alone (numpy's matrix_rank tolerance).
        # Centring takes one dimension exactly, so the rank is at most tau - 1 whatever the rounding: the last singular
        # value is a rounding error near the tolerance (1e-14), on either side of it depending on the SVD.
        rank = int(np.count_nonzero(singular > singular[0] * max(z.shape) * np.finfo(np.float64).eps))
        rank = min(rank, z.shape[0] - 1)
        low = vt[i_star + 1:rank]
        self.P = np.ascontiguousarray(low) if len(low) else None
        return True


class ZOAdam:
    """Adam with the reference constants (§4): ε = 1e-3, no weight decay, no schedule, no clipping."""

    def __init__(self, dim: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-3) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = np.zeros(dim, dtype=np.float64)
        self.v = np.zeros(dim, dtype=np.float64)

    def step(self, theta: np.ndarray, g: np.ndarray, s: int, lr: float | None = None) -> np.ndarray:
        """Return θ after update number s (1-based, for the bias correction), at `lr` (default: the constant one).
        m and v are updated in place."""
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * g
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * g * g
        m_hat = self.m / (1.0 - self.beta1**s)
        v_hat = self.v / (1.0 - self.beta2**s)
        return theta - (self.lr if lr is None else lr) * m_hat / (np.sqrt(v_hat) + self.eps)


class ZOTrainer:
    """The §11 loop over a `ZOProblem`: one PCG64 generator, atomic checkpoints, bit-exact resume."""

    def __init__(self, problem: ZOProblem, config: ZOConfig, theta0: np.ndarray) -> None:
        dim = int(problem.dim)
        theta = np.array(theta0, dtype=np.float64)
        if dim < 1 or theta.shape != (dim,):
            raise EdgeSDKError(f"initial token has shape {theta.shape}, the problem trains a vector of width {dim}")
        if not np.all(np.isfinite(theta)):
            raise EdgeSDKError("initial token contains NaN or inf")
        self.problem, self.config, self.dim = problem, config, dim
        self.t_range = config.timestep_range(int(problem.num_timesteps))
        self.theta = theta
        self.adam = ZOAdam(dim, config.lr, config.beta1, config.beta2, config.adam_eps)
        self.sg = SubspaceGradient(dim, config.sg_tau, config.sg_nu, config.sg_standardize) if config.sg else None
        self.s = 0  # updates done
        self.rng = np.random.Generator(np.random.PCG64(config.seed))
        basis = getattr(problem, "direction_basis", None) if config.word_directions else None
        basis = None if basis is None else np.asarray(basis, dtype=np.float64)
        if basis is not None and (basis.ndim != 2 or basis.shape[1] != dim):
            raise EdgeSDKError(f"direction_basis has shape {basis.shape}, expected (k, {dim})")
        self.basis = None if basis is None or len(basis) >= dim else basis
        self.extra: dict[str, np.ndarray] = {}  # caller state saved with each checkpoint (e.g. data order)
        self._saved_step = -1

    def token(self) -> np.ndarray:
        """The learned vector as the model consumes it (float32)."""
        return self.theta.astype(np.float32)

    def step(self) -> StepLog:
        cfg = self.config
        start = time.perf_counter()
        self.s += 1
        # the first sample, the directions every sample of the step shares, then the further samples one at a time:
        # a one-draw step takes the generator's numbers in the same order as before `draws` existed
        sample = self.problem.draw(self.rng, self.t_range)
        if self.basis is None:
            u = self.rng.standard_normal((cfg.n, self.dim))
        else:
            u = basis_directions(self.rng.standard_normal((cfg.n, len(self.basis))), self.basis)
        batch = perturbed_batch(self.theta, u, cfg.mu, cfg.two_sided)
        coefficients = np.zeros(cfg.n, dtype=np.float64)
        loss = 0.0
        for draw in range(cfg.draws):
            if draw > 0:
                sample = self.problem.draw(self.rng, self.t_range)
            losses = _checked_losses(self.problem, sample, batch, self.s)
            coefficients += directional_coefficients(losses, cfg.n, cfg.mu, cfg.two_sided)
            loss += _loss_at_theta(losses, cfg.two_sided)
        coefficients /= cfg.draws
        loss /= cfg.draws
        k = self.sg.k if self.sg is not None else 0
        span = self.dim if self.basis is None else len(self.basis)  # the dimension the directions explore
        g = estimate_gradient(coefficients, u, max(1, span - k), cfg.dim_scale)
        grad_norm = float(np.linalg.norm(g))
        if self.sg is not None:
            g = self.sg.project(g)  # before the moments (§4)
        self.theta = self.adam.step(self.theta, g, self.s, cfg.lr_at(self.s))
        if self.sg is not None:
            self.sg.push(self.theta, self.s)
        return StepLog(step=self.s, loss=loss, coefficients=coefficients, grad_norm=grad_norm,
                       grad_norm_projected=float(np.linalg.norm(g)), k=k, seconds=time.perf_counter() - start)

    def run(self, steps: int | None = None, checkpoint_path: str | Path | None = None,
            on_step: Callable[[StepLog], None] | None = None, time_budget_s: float | None = None,
            extra: Mapping[str, np.ndarray] | None = None) -> list[StepLog]:
        """Step until `steps` updates in total (config.steps by default; done steps count after a resume) or the
        time budget is spent. Checkpoints every config.checkpoint_every updates and at the end."""
        target = self.config.steps if steps is None else steps
        if target < 0:
            raise EdgeSDKError(f"steps must be >= 0, got {target}")
        if extra is not None:
            self.extra = dict(extra)
        started = time.monotonic()
        logs: list[StepLog] = []
        while self.s < target:
            if time_budget_s is not None and time.monotonic() - started >= time_budget_s:
                break
            log = self.step()
            logs.append(log)
            if checkpoint_path is not None and self.s % self.config.checkpoint_every == 0:
                self.save(checkpoint_path)
            if on_step is not None:
                on_step(log)
        if checkpoint_path is not None and self._saved_step != self.s:
            self.save(checkpoint_path)
        return logs

    def save(self, path: str | Path) -> None:
        """Write the whole state as one .npz, atomically: a temp file in the same folder, then os.replace."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(CHECKPOINT_FORMAT),
            "config": np.array(self.config.to_json()),
            "dim": np.array(self.dim),
            "t_range": np.array(self.t_range, dtype=np.int64),
            "step": np.array(self.s, dtype=np.int64),
            "theta": self.theta,
            "m": self.adam.m,
            "v": self.adam.v,
            "rng_state": np.array(json.dumps(self.rng.bit_generator.state)),
            "sg_buffer": self.sg.buffer if self.sg is not None else np.zeros((0, self.dim)),
            "sg_index": np.array(self.sg.index if self.sg is not None else 0, dtype=np.int64),
            "sg_P": self.sg.P if self.sg is not None and self.sg.P is not None else np.zeros((0, self.dim)),
        }
        for key, value in self.extra.items():
            value = np.asarray(value)
            if value.dtype == object:
                raise EdgeSDKError(f"checkpoint extra {key!r} must be a plain numeric or string array")
            arrays[f"extra_{key}"] = value
        _atomic_savez(Path(path), arrays)
        self._saved_step = self.s

    @classmethod
    def resume(cls, path: str | Path, problem: ZOProblem, config: ZOConfig) -> ZOTrainer:
        """Restore a checkpoint; refuses one made with settings that change the trajectory (steps may differ)."""
        data = _load_checkpoint(Path(path))
        saved = json.loads(str(data["config"]))
        current = json.loads(config.to_json())
        changed = [f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
                   for key in sorted(set(saved) | set(current))
                   if key not in _RUN_ONLY_FIELDS and saved.get(key) != current.get(key)]
        if int(data["dim"]) != int(problem.dim):
            changed.append(f"dim: {int(data['dim'])} -> {int(problem.dim)}")
        if changed:
            raise EdgeSDKError(f"checkpoint {path} was made with other settings ({'; '.join(changed)})")
        try:
            trainer = cls(problem, config, data["theta"])
            saved_range = tuple(int(t) for t in np.asarray(data["t_range"]).reshape(-1))
        except (ValueError, TypeError, OverflowError) as e:
            raise EdgeSDKError(f"checkpoint {path} is corrupt: {e}") from None
        if saved_range != trainer.t_range:
            raise EdgeSDKError(f"checkpoint {path} used timesteps {tuple(data['t_range'])}, now {trainer.t_range}")
        d = trainer.dim
        try:
            _expect_shape(data["m"], (d,))
            _expect_shape(data["v"], (d,))
            trainer.adam.m, trainer.adam.v = data["m"].astype(np.float64), data["v"].astype(np.float64)
            trainer.s = int(data["step"])
            if trainer.sg is not None:
                _expect_shape(data["sg_buffer"], (config.sg_tau, d))
                trainer.sg.buffer = data["sg_buffer"].astype(np.float64)
                trainer.sg.index = int(data["sg_index"])
                p = data["sg_P"]
                if p.ndim != 2 or p.shape[1] != d:
                    raise ValueError(f"P has shape {p.shape}")
                trainer.sg.P = p.astype(np.float64) if len(p) else None
            trainer.rng.bit_generator.state = json.loads(str(data["rng_state"]))
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            raise EdgeSDKError(f"checkpoint {path} is corrupt: {e}") from e
        trainer.extra = {key[len("extra_"):]: value for key, value in data.items() if key.startswith("extra_")}
        trainer._saved_step = trainer.s
        return trainer


def checkpoint_step(path: str | Path) -> int:
    """Updates a checkpoint holds (0 when there is none): where a resumed run's progress starts."""
    path = Path(path)
    return int(_load_checkpoint(path)["step"]) if path.exists() else 0


def jitter_check(problem: ZOProblem, theta: np.ndarray, config: ZOConfig, rng: np.random.Generator,
                 directions: int = 8) -> dict[str, Any]:
    """Is μ large enough for this backend? (§3 "Choosing μ")

    Evaluates the identical input twice and in every batch row, and compares that loss jitter with the typical
    |L(θ + μu) − L(θ)| over a few directions, all on one shared sample. `warning` is set when the jitter exceeds
    10 % of it: the estimate would then be mostly numerical noise.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n, mu = config.n, config.mu
    sample = problem.draw(rng, config.timestep_range(int(problem.num_timesteps)))
    same = np.repeat(theta.astype(np.float32)[None, :], config.queries, axis=0)  # the step's batch: static shapes
    first = _checked_losses(problem, sample, same, 0)
    second = _checked_losses(problem, sample, same, 0)
    repeat_jitter = float(np.max(np.abs(first - second)))
    row_jitter = float(max(np.ptp(first), np.ptp(second)))
    deltas: list[float] = []
    for _ in range(math.ceil(directions / n)):
        u = rng.standard_normal((n, theta.shape[0]))
        losses = _checked_losses(problem, sample, perturbed_batch(theta, u, mu, config.two_sided), 0)
        # one-sided |L(θ + μu) − L(θ)|; two-sided half of |L(θ + μu) − L(θ − μu)|, the same first-order change
        slopes = directional_coefficients(losses, n, mu, config.two_sided)
        deltas.extend(np.abs(slopes * mu).tolist())
    typical = float(np.median(deltas))
    jitter = max(repeat_jitter, row_jitter)
    ratio = jitter / typical if typical > 0 else math.inf
    warning = None
    if typical == 0:
        warning = f"the loss does not change with θ at mu={mu:g}; check that the token reaches the model"
    elif ratio > 0.1:
        warning = (f"loss jitter {jitter:.3g} is {ratio:.0%} of the typical |L(θ+μu) − L(θ)| = {typical:.3g} at "
                   f"mu={mu:g}; raise mu (1e-2 for bf16) or evaluate the loss in higher precision")
    return {"repeat_jitter": repeat_jitter, "row_jitter": row_jitter, "jitter": jitter, "typical_delta": typical,
            "ratio": ratio, "warning": warning}


def _loss_at_theta(losses: np.ndarray, two_sided: bool) -> float:
    """L(θ) from a step's losses: row 0 one-sided; two-sided, the mean of the rows (L(θ) + O(μ²)), summed in row
    order (numpy's pairwise mean would round differently from the C++ runtime's loop)."""
    if not two_sided:
        return float(losses[0])
    total = 0.0
    for value in losses:
        total += float(value)
    return total / len(losses)


def _checked_losses(problem: ZOProblem, sample: Any, thetas: np.ndarray, step: int) -> np.ndarray:
    losses = np.asarray(problem.losses(sample, thetas), dtype=np.float64)
    if losses.shape != (thetas.shape[0],):
        raise EdgeSDKError(f"problem.losses returned shape {losses.shape}, expected ({thetas.shape[0]},)")
    if not np.all(np.isfinite(losses)):
        raise EdgeSDKError(f"non-finite loss at step {step}; lower lr or mu, or check the model outputs")
    return losses


def _expect_shape(array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"expected shape {shape}, got {array.shape}")


def _atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """A crash or error mid-write leaves the previous checkpoint untouched and no temp file behind."""
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except (OSError, EdgeSDKError) as e:  # atomic_file reports write errors as EdgeSDKError "cannot write ..."
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise EdgeSDKError(f"cannot write checkpoint {path}: {reason}") from None


_REQUIRED_KEYS = ("format", "config", "dim", "t_range", "step", "theta", "m", "v", "rng_state", "sg_buffer",
                  "sg_index", "sg_P")


def _load_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """A checkpoint's arrays, checked: a regular file of sane size, every key there, scalars that parse, finite
    floats (a NaN θ or Adam moment would poison every later step) and a non-negative second moment. Only read:
    a refused checkpoint stays byte-identical."""
    if not path.exists() and not path.is_symlink():
        raise EdgeSDKError(f"checkpoint {path} does not exist")
    check_input_file(path, "checkpoint", MAX_ARRAY_FILE_BYTES)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except FileNotFoundError as e:
        raise EdgeSDKError(f"checkpoint {path} does not exist") from e
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as e:
        raise EdgeSDKError(f"checkpoint {path} is not a readable .npz: {e}") from e
    except AttributeError as e:  # np.load returns a bare array for a .npy named .npz
        raise EdgeSDKError(f"checkpoint {path} is not an .npz archive") from e
    if not isinstance(data, dict):
        raise EdgeSDKError(f"checkpoint {path} is not an .npz archive")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise EdgeSDKError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    try:
        if data["format"].size != 1 or int(data["format"]) != CHECKPOINT_FORMAT:
            raise EdgeSDKError(f"checkpoint {path} has format {data['format']!r}, expected {CHECKPOINT_FORMAT}")
        for key in ("dim", "step", "sg_index"):
            value = data[key]
            if value.size != 1 or value.dtype.kind not in "iu" or int(value) < 0 or int(value) > MAX_STEPS:
                raise EdgeSDKError(f"checkpoint {path}: {key} must be a whole number in [0, {MAX_STEPS}], got "
                                   f"{value!r}")
        for key in ("theta", "m", "v", "sg_buffer", "sg_P"):
            if data[key].dtype.kind not in "fiu":
                raise EdgeSDKError(f"checkpoint {path}: {key} must be a float array, got {data[key].dtype}")
            check_finite_array(f"checkpoint {path}: {key}", data[key])
        if data["v"].size and float(np.min(data["v"])) < 0:
            raise EdgeSDKError(f"checkpoint {path}: v (Adam's second moment) is negative")
        for key in ("config", "rng_state"):
            if data[key].dtype.kind != "U" or data[key].size != 1:
                raise EdgeSDKError(f"checkpoint {path}: {key} must be one JSON string")
            if not isinstance(json.loads(str(data[key])), dict):
                raise EdgeSDKError(f"checkpoint {path}: {key} must be a JSON object")
    except (ValueError, TypeError, OverflowError) as e:  # json.JSONDecodeError is a ValueError
        raise EdgeSDKError(f"checkpoint {path} is corrupt: {e}") from None
    return data
