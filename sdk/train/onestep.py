"""Distil tiny-sd into a one-step text-to-image generator with f-distill (spec: ../shared/specs/f-distill.md).

Networks: the frozen teacher (tiny-sd's UNet, classifier-free guidance distilled into the student), the student
G (a copy of the teacher's UNet read at t = T-1, `zoo/onestep.py`), a fake score network (another copy, trained
by denoising score matching on G's samples), and a discriminator head on the frozen teacher's mid-block features
whose logit gives the density ratio r = exp(logit) (real data -> +logit). Iteration k updates G when
k % update_freq == 0, otherwise the critic (fake network and head in one optimizer step).

"Real" data for the discriminator are the procedural shapes tiny-sd was trained on, encoded by its VAE, with
their captions; so r approximates p_data,t / q_t (spec §4).

Single process: ``edgesdk train onestep --divergence js``; several: ``torchrun --nproc_per_node 2 -m
edgesdk.cli train onestep ...`` (the batch is split across ranks, gradients and the ratio statistics are averaged
over all of them). Checkpoints every ``checkpoint_every`` iterations (atomic); rerunning the command resumes.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch import distributed as dist

from edgesdk.data import ShapesDataset, random_caption
from edgesdk.progress import TrainProgress
from edgesdk.runtime.bundle import file_sha256
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.train.common import (
    DistContext,
    atomic_torch_save,
    distributed,
    load_checkpoint,
    save_weights,
)
from edgesdk.train.fdistill import (
    DIVERGENCES,
    RatioWeights,
    discriminator_loss,
    distribution_matching_loss,
    generator_gan_loss,
)
from edgesdk.zoo.onestep import OneStepGenerator, student_from_teacher
from edgesdk.zoo.tiny_sd import GroupNorm, TinySD, UNet, default_weights_path, load_tiny_sd, silu


@dataclass
class OneStepTrainConfig:
    divergence: str = "js"
    iterations: int = 2_000  # critic and generator iterations together (400 generator steps)
    update_freq: int = 5  # G on every 5th iteration, the critic on the other 4 (spec §7)
    batch: int = 32  # global; split across ranks
    lr: float = 1e-4  # G, fake network and head alike (spec §7); higher than SD 1.5's 1e-5 for a short CPU run
    gan_weight: float = 1e-3  # λ_GAN (spec §5)
    guidance: float = 4.0  # teacher CFG distilled into the student (the tiny-sd bundle's default)
    t_min_frac: float = 0.02  # DM and GAN noise levels t ~ U[0.02 T, 0.98 T] (spec §7, SD-style teachers)
    t_max_frac: float = 0.98
    ratio_ema: float = 0.0
    ema_decay: float = 0.99  # generator EMA for the shipped weights (short runs need a short horizon)
    grad_clip: float = 10.0
    dataset_size: int = 4_000
    caption_dropout: float = 0.3  # drop size / position / background from a caption, as tiny-sd was trained
    checkpoint_every: int = 100
    seed: int = 0

    def validate(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise EdgeSDKError(f"--divergence {self.divergence!r}: choose one of {', '.join(DIVERGENCES)}")
        if self.iterations < 1 or self.update_freq < 2 or self.batch < 2:
            raise EdgeSDKError("iterations >= 1, update_freq >= 2 and batch >= 2 are required")


def teacher_mid_features(unet: UNet, latent: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
    """The UNet's mid-block activations (B, C1, 4, 4): the discriminator's input (SD-style, spec §4)."""
    temb = unet.time(timestep)
    h0 = unet.attn_down0(unet.down0(unet.conv_in(latent), temb), text)
    h1 = unet.attn_down1(unet.down1(unet.downsample(h0), temb), text)
    return unet.mid2(unet.attn_mid(unet.mid1(h1, temb), text), temb)


class DiscriminatorHead(nn.Module):
    """Small trainable head on frozen teacher features: conv + GroupNorm + SiLU, 4x4 -> 1x1, a 1x1 conv to a logit."""

    def __init__(self, channels: int, width: int = 128, groups: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.norm = GroupNorm(groups, width)
        self.reduce = nn.Conv2d(width, width, 4)  # 4x4 -> 1x1
        self.norm_reduced = GroupNorm(groups, width)
        self.logit = nn.Conv2d(width, 1, 1)

    def forward(self, features: Tensor) -> Tensor:
        x = silu(self.norm(self.conv(features)))
        x = silu(self.norm_reduced(self.reduce(x)))
        return self.logit(x).flatten(1).mean(1)


class Distillation:
    """All networks, optimizers and the ratio state of one f-distill run; `step(k)` runs iteration k."""

    def __init__(self, teacher: TinySD, cfg: OneStepTrainConfig, ctx: DistContext, latents: Tensor,
                 captions: list[str]) -> None:
        self.teacher, self.cfg, self.ctx = teacher, cfg, ctx
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.generator: OneStepGenerator = student_from_teacher(teacher)
        self.fake = copy.deepcopy(teacher.unet)
        for p in self.fake.parameters():
            p.requires_grad_(True)
        self.head = DiscriminatorHead(teacher.config.unet_channels[1])
        adamw = {"lr": cfg.lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
        self.opt_generator = torch.optim.AdamW(self.generator.parameters(), **adamw)
        self.opt_critic = torch.optim.AdamW([*self.fake.parameters(), *self.head.parameters()], **adamw)
        self.ema = {k: v.detach().clone() for k, v in self.generator.unet.state_dict().items()}
        total = teacher.config.train_timesteps
        self.t_range = (int(cfg.t_min_frac * total), int(cfg.t_max_frac * total))
        self.ratio = RatioWeights(cfg.divergence, *self.t_range, ema=cfg.ratio_ema)
        self.latents, self.captions = latents, captions
        self.local_batch = max(1, cfg.batch // ctx.world_size)
        with torch.no_grad():
            self.uncond = teacher.encode_text([""])

    # ------------------------------------------------------------------ pieces
    def _draw(self, rng: np.random.Generator, gen: torch.Generator) -> tuple[Tensor, list[str]]:
        """Noise and prompts for G (captions of random dataset items, so prompts follow the data)."""
        index = rng.integers(0, len(self.captions), self.local_batch)
        prompts = [self.captions[i] for i in index]
        cfg = self.teacher.config
        z = torch.randn(self.local_batch, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=gen)
        return z, prompts

    def _diffuse(self, x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        t = torch.randint(self.t_range[0], self.t_range[1] + 1, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        abar = self.teacher.alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t.float(), eps

    def _x0(self, eps_prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        abar = self.teacher.alphas_cumprod[t.long()].view(-1, 1, 1, 1)
        return (x_t - (1 - abar).sqrt() * eps_prediction) / abar.sqrt()

    def _teacher_x0(self, x_t: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """Guided teacher prediction (CFG in x0 space, x̂_c + (g-1)(x̂_c - x̂_u)), no gradient."""
        with torch.no_grad():
            both = self.teacher.unet(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                     torch.cat([text, self.uncond.expand(len(x_t), -1, -1)]))
            cond, uncond = both.chunk(2)
            eps = cond + (self.cfg.guidance - 1.0) * (cond - uncond)
        return self._x0(eps, x_t, t)

    def _logit(self, x_t: Tensor, t: Tensor, text: Tensor) -> Tensor:
        return self.head(teacher_mid_features(self.teacher.unet, x_t, t, text))

    def _update(self, optimizer: torch.optim.Optimizer, loss: Tensor, params: list[nn.Parameter]) -> None:
        """Backward, average gradients over ranks, clip, step. A plain all-reduce rather than DDP: the frozen
        teacher sits inside both graphs, and D's head is used by both steps."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.ctx.enabled:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.ctx.world_size
        torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        optimizer.step()

    # ------------------------------------------------------------------ the two steps
    def critic_step(self, rng: np.random.Generator, gen: torch.Generator) -> dict[str, float]:
        z, prompts = self._draw(rng, gen)
        with torch.no_grad():
            text = self.teacher.encode_text(prompts)
            x = self.generator(z, text)
        x_t, t, eps = self._diffuse(x, gen)
        dsm = F.mse_loss(self.fake(x_t, t, text), eps)  # denoising score matching in eps space
        real_index = torch.from_numpy(rng.integers(0, len(self.latents), self.local_batch))
        with torch.no_grad():
            real_text = self.teacher.encode_text([self.captions[i] for i in real_index.tolist()])
        real_t, real_time, _ = self._diffuse(self.latents[real_index], gen)  # independent t', ε' (spec §6)
        d_loss = discriminator_loss(self._logit(real_t, real_time, real_text), self._logit(x_t, t, text))
        self._update(self.opt_critic, dsm + d_loss, [*self.fake.parameters(), *self.head.parameters()])
        return {"dsm": dsm.item(), "d": d_loss.item()}

    def generator_step(self, rng: np.random.Generator, gen: torch.Generator) -> dict[str, float]:
        z, prompts = self._draw(rng, gen)
        with torch.no_grad():
            text = self.teacher.encode_text(prompts)
        x = self.generator(z, text)
        x_t, t, _ = self._diffuse(x, gen)
        x0_teacher = self._teacher_x0(x_t, t, text)
        with torch.no_grad():
            x0_fake = self._x0(self.fake(x_t, t, text), x_t, t)
        logit = self._logit(x_t, t, text)  # not under no_grad: the GAN term reaches G through the frozen teacher
        h = self.ratio(logit.detach(), t)
        loss = distribution_matching_loss(x, x0_teacher, x0_fake, h)
        if self.cfg.gan_weight > 0:
            loss = loss + self.cfg.gan_weight * generator_gan_loss(logit)
        self._update(self.opt_generator, loss, list(self.generator.parameters()))
        with torch.no_grad():
            for name, value in self.generator.unet.state_dict().items():
                self.ema[name].lerp_(value, 1.0 - self.cfg.ema_decay)
        return {"g": loss.item(), "h_min": h.min().item(), "h_mean": h.mean().item(), "h_max": h.max().item()}

    def step(self, iteration: int) -> tuple[str, dict[str, float]]:
        # per-iteration seeds: a resumed run draws exactly what an uninterrupted one would
        seed = (self.cfg.seed * 1_000_003 + iteration) * 64 + self.ctx.rank
        rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        if iteration % self.cfg.update_freq == 0:
            return "generator", self.generator_step(rng, gen)
        return "critic", self.critic_step(rng, gen)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, iteration: int) -> dict:
        return {"iteration": iteration, "generator": self.generator.state_dict(), "fake": self.fake.state_dict(),
                "head": self.head.state_dict(), "opt_generator": self.opt_generator.state_dict(),
                "opt_critic": self.opt_critic.state_dict(), "ema": self.ema, "ratio": self.ratio.state_dict(),
                "train_config": asdict(self.cfg)}

    def load_state_dict(self, state: dict) -> int:
        self.generator.load_state_dict(state["generator"])
        self.fake.load_state_dict(state["fake"])
        self.head.load_state_dict(state["head"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.ema = state["ema"]
        self.ratio.load_state_dict(state["ratio"])
        return int(state["iteration"])


def real_latents(teacher: TinySD, count: int, seed: int, part_dropout: float = 0.3) -> tuple[Tensor, list[str]]:
    """The procedural dataset through the teacher's VAE (scaled latent means) and one full caption per image."""
    from edgesdk.train.tiny_sd import encode_latent_means

    data = ShapesDataset.generate(count, seed=seed + 17)  # not the images tiny-sd was trained on
    with torch.no_grad():
        latents = encode_latent_means(teacher, data.images) * teacher.config.latent_scale
    rng = np.random.default_rng(seed)
    return latents, [random_caption(spec, rng, part_dropout) for spec in data.specs]


def train_onestep(output: Path, checkpoint_dir: Path, cfg: OneStepTrainConfig | None = None,
                  teacher_path: Path | None = None, show_progress: bool = True,
                  log_every: int = 50) -> Path:
    """Run (or resume) a distillation and write the EMA student's UNet (fp16) with its metadata to ``output``."""
    cfg = cfg or OneStepTrainConfig()
    cfg.validate()
    teacher_file = teacher_path or default_weights_path()
    checkpoint = checkpoint_dir / f"onestep-{cfg.divergence}.pt"
    with distributed() as ctx:
        torch.manual_seed(cfg.seed)  # discriminator head init: same on every rank
        teacher = load_tiny_sd(teacher_path)
        latents, captions = real_latents(teacher, cfg.dataset_size, cfg.seed, cfg.caption_dropout)
        run = Distillation(teacher, cfg, ctx, latents, captions)
        start = 0
        state = load_checkpoint(checkpoint)
        if state is not None:
            # a resumed run may go on longer, or checkpoint at another interval; anything else would mix two runs
            free = ("iterations", "checkpoint_every")
            saved = {k: v for k, v in state.get("train_config", {}).items() if k not in free}
            if saved != {k: v for k, v in asdict(cfg).items() if k not in free}:
                raise EdgeSDKError(f"checkpoint {str(checkpoint)!r} was written with other settings; pass the same "
                                   "options to resume, or delete it to start over")
            start = run.load_state_dict(state)
            if ctx.is_main and show_progress:
                print(f"resuming from iteration {start} ({checkpoint})", file=sys.stderr, flush=True)
        last: dict[str, float] = {}
        with TrainProgress(f"onestep {cfg.divergence}", cfg.iterations, start,
                           enabled=show_progress and ctx.is_main) as bar:
            for iteration in range(start, cfg.iterations):
                kind, stats = run.step(iteration)
                last.update(stats)
                if kind == "generator" and math.isnan(stats["g"]):
                    raise EdgeSDKError(f"generator loss is NaN at iteration {iteration}; lower --lr")
                if (iteration + 1) % 10 == 0 or iteration + 1 == cfg.iterations:
                    bar.update(iteration + 1, ctx.mean(last.get("g", last.get("dsm", 0.0))))
                if ctx.is_main and show_progress and log_every and (iteration + 1) % log_every == 0:
                    print(f"  it {iteration + 1}: " + " ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())),
                          file=sys.stderr, flush=True)
                done = iteration + 1
                if ctx.is_main and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
                    atomic_torch_save(run.state_dict(done), checkpoint)
        if ctx.is_main:
            tensors = {k: v.half() for k, v in run.ema.items()}
            save_weights(tensors, output, {
                "family": "onestep", "timestep": run.generator.timestep, "divergence": cfg.divergence,
                "guidance": cfg.guidance, "train_config": asdict(cfg),
                "teacher_sha256": file_sha256(teacher_file)})
        ctx.barrier()
    return output
