"""f-distill's 2-D toy protocol (spec §11): does the weight h(r) change which teacher modes a one-step student finds?

Teacher: an analytic mixture of isotropic Gaussians (per-mode std MODE_STD = 0.4), so its diffused x0-prediction is
exact: under x_t = x0 + σ ε (EDM / VE) component k becomes N(μ_k, (v + σ²) I) with v = MODE_STD². The student
G: R² -> R² starts collapsed on one mode (the heaviest), and then trains with distribution matching weighted by
h(r), r = p/q read off a discriminator. Everything except h is identical across divergences (same seed, same
networks, same noise), so differences in mode coverage come from h alone.

Choices the spec leaves open:
- "real" data for the discriminator = exact samples of the analytic teacher (there is no dataset);
- generator LR 3e-4 (the top of the spec's 1e-4..3e-4 range: more movement within 3000 steps);
- the critic warm-up trains the fake score *and* the discriminator on the initial student, so r carries
  information from the first generator step;
- the generator is evaluated directly (no EMA copy); metrics use a fixed set of evaluation noises;
- the ratio bins are equal-width in σ over [σ_min, σ_max], as the spec's t bins are (σ = t in EDM form).
A 3000-step run at the spec's width 128 / batch 512 costs about 90 s of one CPU core (measured: ~89 s CPU,
~115 s wall with the other core busy; run_toy reports "seconds"), so the spec's sizes are kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from edgesdk.train.fdistill import RatioWeights, discriminator_loss, distribution_matching_loss, generator_gan_loss

MODE_STD = 0.4  # small next to the mode spacing (6 for 2-modes, 3.06 for 8-ring), so nearest-mode labels are clean


def _ring(radius: float, count: int) -> list[tuple[float, float]]:
    return [(radius * math.cos(2 * math.pi * k / count), radius * math.sin(2 * math.pi * k / count))
            for k in range(count)]


# target -> (mode centres, mode weights); the student starts on mode 0, the heaviest
TARGETS: dict[str, tuple[list[tuple[float, float]], list[float]]] = {
    "2-modes": ([(-3.0, 0.0), (3.0, 0.0)], [0.7, 0.3]),
    "8-ring": (_ring(4.0, 8), [0.25, 0.05, 0.2, 0.05, 0.15, 0.05, 0.2, 0.05]),
}


class MixtureTeacher:
    """Isotropic Gaussian mixture with its exact diffused denoiser E[x0 | x_t] (the spec's x̂_teacher)."""

    def __init__(self, means: Tensor, weights: Tensor, std: float = MODE_STD) -> None:
        self.means, self.weights, self.std = means.float(), weights.float() / weights.sum(), std

    @classmethod
    def named(cls, target: str) -> MixtureTeacher:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
        means, weights = TARGETS[target]
        return cls(torch.tensor(means), torch.tensor(weights))

    def sample(self, n: int) -> Tensor:
        modes = torch.multinomial(self.weights, n, replacement=True)
        return self.means[modes] + self.std * torch.randn(n, 2)

    @torch.no_grad()
    def denoise(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x_t]: responsibilities under N(μ_k, (v + σ²) I), each mode shrinking x_t towards μ_k."""
        variance = (self.std**2 + sigma**2).unsqueeze(1)  # (N, 1)
        offsets = x_t.unsqueeze(1) - self.means  # (N, K, 2)
        log_resp = self.weights.log() - 0.5 * offsets.square().sum(-1) / variance  # shared normaliser dropped
        resp = log_resp.softmax(1).unsqueeze(-1)
        shrink = (self.std**2 / variance).unsqueeze(-1)  # Var(x0|k) / Var(x_t|k)
        return (resp * (self.means + shrink * offsets)).sum(1)

    def mode_metrics(self, x: Tensor) -> dict[str, float | int | list[float]]:
        """Nearest-mode histogram against the true weights, and the share of samples near any mode."""
        distance = torch.cdist(x, self.means)
        fractions = torch.bincount(distance.argmin(1), minlength=len(self.weights)).float() / len(x)
        return {"modes_covered": int((fractions > 0.2 * self.weights).sum()),
                "tv": float(0.5 * (fractions - self.weights).abs().sum()),
                "quality": float((distance.min(1).values < 3 * self.std).float().mean()),
                "mode_fractions": [round(float(f), 4) for f in fractions]}


def mlp(inputs: int, outputs: int, width: int, hidden_layers: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(hidden_layers):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(width, outputs))


class FakeDenoiser(nn.Module):
    """EDM-preconditioned x0-predictor of the student's diffused marginals: c_skip x + c_out F(c_in x, log σ)."""

    def __init__(self, width: int, sigma_data: float) -> None:
        super().__init__()
        self.net, self.sigma_data = mlp(3, 2, width), sigma_data

    def forward(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        s, sd = sigma.unsqueeze(1), self.sigma_data
        scale = (s**2 + sd**2).sqrt()
        out = self.net(torch.cat([x_t / scale, s.log()], 1))
        return sd**2 / scale**2 * x_t + s * sd / scale * out

    def loss(self, x0: Tensor, sigma: Tensor) -> Tensor:
        """Denoising score matching with EDM's weight (σ⁻² + σ_data⁻²), i.e. unit weight in the net's output."""
        x_t = x0 + sigma.unsqueeze(1) * torch.randn_like(x0)
        weight = sigma.pow(-2) + self.sigma_data**-2
        return (weight * (self(x_t, sigma) - x0).square().sum(1)).mean()


class Discriminator(nn.Module):
    """logit of 'teacher' vs 'student' at noise level σ; real -> +logit, so r = p/q = exp(logit)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = mlp(3, 1, width)

    def forward(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        s = sigma.unsqueeze(1)
        return self.net(torch.cat([x_t / (1 + s**2).sqrt(), s.log()], 1)).squeeze(1)


@dataclass
class ToyConfig:
    width: int = 128
    batch: int = 512
    generator_lr: float = 3e-4
    critic_lr: float = 1e-3  # fake score and discriminator share one AdamW
    critic_steps: int = 4  # critic steps per generator step
    sigma_min: float = 0.05  # σ ~ log-uniform in [sigma_min, sigma_max]
    sigma_max: float = 2.0
    sigma_data: float = 1.0  # EDM preconditioning of the fake denoiser
    gan_weight: float = 0.0  # λ_GAN; 0 isolates h, but D is still trained because r needs it
    ratio_ema: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    pretrain_steps: int = 1000  # G onto one mode
    warmup_steps: int = 1000  # critic steps on the initial student
    eval_every: int = 500
    eval_samples: int = 8192


def _sample_sigma(n: int, config: ToyConfig) -> Tensor:
    log_min, log_max = math.log(config.sigma_min), math.log(config.sigma_max)
    return (log_min + (log_max - log_min) * torch.rand(n)).exp()


def _adamw(params: list[nn.Parameter], lr: float, config: ToyConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)


def _pretrain_on_one_mode(generator: nn.Module, teacher: MixtureTeacher, config: ToyConfig) -> None:
    """Skewed init: regress G(z) onto μ_0 + std·z, so the student reproduces mode 0 exactly and nothing else."""
    optimizer = torch.optim.AdamW(generator.parameters(), lr=1e-3)
    for _ in range(config.pretrain_steps):
        z = torch.randn(config.batch, 2)
        loss = (generator(z) - (teacher.means[0] + teacher.std * z)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def run_toy(target: str, divergence: str, seed: int, generator_steps: int = 3000,
            config: ToyConfig | None = None) -> dict:
    """Train one student with one divergence; metrics at step 0 and every config.eval_every generator steps.

    The global torch RNG is reseeded with `seed` inside and restored afterwards, so every divergence sees the same
    initial networks and the same pretraining.
    """
    config = config or ToyConfig()
    teacher = MixtureTeacher.named(target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(teacher, target, divergence, seed, generator_steps, config)


def _train(teacher: MixtureTeacher, target: str, divergence: str, seed: int, generator_steps: int,
           config: ToyConfig) -> dict:
    start = time.perf_counter()
    generator = mlp(2, 2, config.width)
    fake, disc = FakeDenoiser(config.width, config.sigma_data), Discriminator(config.width)
    _pretrain_on_one_mode(generator, teacher, config)
    critic_params = [*fake.parameters(), *disc.parameters()]
    critic_opt = _adamw(critic_params, config.critic_lr, config)
    generator_opt = _adamw(list(generator.parameters()), config.generator_lr, config)
    weights = RatioWeights(divergence, config.sigma_min, config.sigma_max, ema=config.ratio_ema)
    eval_z = torch.randn(config.eval_samples, 2, generator=torch.Generator().manual_seed(10_000 + seed))

    def critic_step() -> None:
        with torch.no_grad():
            x = generator(torch.randn(config.batch, 2))
        sigma, real = _sample_sigma(config.batch, config), teacher.sample(config.batch)
        sigma_real = _sample_sigma(config.batch, config)  # independent noise level and noise for real data
        logit_fake = disc(x + sigma.unsqueeze(1) * torch.randn_like(x), sigma)
        logit_real = disc(real + sigma_real.unsqueeze(1) * torch.randn_like(real), sigma_real)
        loss = fake.loss(x, _sample_sigma(config.batch, config)) + discriminator_loss(logit_real, logit_fake)
        critic_opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(critic_params, config.grad_clip)
        critic_opt.step()

    def generator_step() -> Tensor:
        x = generator(torch.randn(config.batch, 2))
        sigma = _sample_sigma(config.batch, config)
        x_t = x + sigma.unsqueeze(1) * torch.randn_like(x)
        with torch.no_grad():
            x0_teacher, x0_fake = teacher.denoise(x_t, sigma), fake(x_t, sigma)
        with torch.set_grad_enabled(config.gan_weight > 0):  # the GAN term alone needs D's gradient w.r.t. x_t
            logit = disc(x_t, sigma)
        h = weights(logit, sigma)
        loss = distribution_matching_loss(x, x0_teacher, x0_fake, h)
        if config.gan_weight > 0:
            loss = loss + config.gan_weight * generator_gan_loss(logit)
        generator_opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
        generator_opt.step()
        return h

    def evaluate(step: int, h_window: list[Tensor]) -> dict:
        with torch.no_grad():
            metrics = {"step": step, **teacher.mode_metrics(generator(eval_z))}
        if h_window:  # per-step h statistics over the steps since the last evaluation
            metrics.update(h_mean=float(torch.stack([h.mean() for h in h_window]).mean()),
                           h_max=float(max(h.max() for h in h_window)))
        return metrics

    for _ in range(config.warmup_steps):
        critic_step()
    history, h_window = [evaluate(0, [])], []
    for step in range(1, generator_steps + 1):
        for _ in range(config.critic_steps):
            critic_step()
        h_window.append(generator_step())
        if step % config.eval_every == 0 or step == generator_steps:
            history.append(evaluate(step, h_window))
            h_window = []
    return {"target": target, "divergence": divergence, "seed": seed, "generator_steps": generator_steps,
            "config": asdict(config), "final": history[-1], "history": history,
            "seconds": round(time.perf_counter() - start, 2)}
