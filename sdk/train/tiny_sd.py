"""Train tiny-sd in two stages: the VAE, then the text encoder + token table + UNet on cached latents.

Single process: ``edgesdk train tiny-sd``. Several processes (DDP, gloo on CPU, NCCL on GPUs):
``torchrun --nproc_per_node 2 -m edgesdk.cli train tiny-sd``. The global batch is split across ranks.
A checkpoint is written every ``checkpoint_every`` steps (atomically); rerunning the same command resumes.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from edgesdk.data import ShapesDataset, random_caption, vocabulary
from edgesdk.progress import TrainProgress
from edgesdk.train.common import (
    DistContext,
    atomic_torch_save,
    distributed,
    ema_update,
    load_checkpoint,
    save_weights,
)
from edgesdk.zoo.tiny_sd import TinySD, TinySDConfig


@dataclass
class TinySDTrainConfig:
    dataset_size: int = 40_000
    palette: str = "continuous"  # any shade, named only when close to a named colour (edgesdk.data.shapes)
    vae_steps: int = 1_200
    vae_batch: int = 64
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    unet_steps: int = 6_000
    unet_batch: int = 128
    unet_lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # empty prompt, so classifier-free guidance has an unconditional model
    part_dropout: float = 0.3  # drop size / position / background from a caption
    checkpoint_every: int = 250
    seed: int = 0


class VAEObjective(nn.Module):
    """Reconstruction (MSE) + a light KL term; returns the loss so DDP can wrap it."""

    def __init__(self, model: TinySD, kl_weight: float) -> None:
        super().__init__()
        self.vae, self.kl_weight = model.vae, kl_weight
        self.latent_channels = model.config.latent_channels

    def forward(self, images: Tensor) -> Tensor:
        moments = self.vae.encoder(images)
        mean, logvar = moments[:, : self.latent_channels], moments[:, self.latent_channels :].clamp(-20, 10)
        latent = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        recon = self.vae.decoder(latent)  # latent_scale is still 1.0 while the VAE trains
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return (recon - images).pow(2).mean() + self.kl_weight * kl


class DiffusionObjective(nn.Module):
    """Epsilon-prediction loss of the UNet conditioned on the text encoder over looked-up token embeddings."""

    def __init__(self, model: TinySD) -> None:
        super().__init__()
        # Only the trained parts, so DDP does not wait for gradients of the frozen VAE.
        self.token_embedding = model.token_embedding
        self.text_encoder, self.unet = model.text_encoder, model.unet
        self.register_buffer("alphas_cumprod", model.alphas_cumprod, persistent=False)

    def forward(self, token_ids: Tensor, latents: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        abar = self.alphas_cumprod[timesteps].reshape(-1, 1, 1, 1)
        noisy = abar.sqrt() * latents + (1.0 - abar).sqrt() * noise
        text = self.text_encoder(self.token_embedding[token_ids])
        return (self.unet(noisy, timesteps.float(), text) - noise).pow(2).mean()


def _lr_at(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _diffusion_params(model: TinySD) -> dict[str, Tensor]:
    named = dict(model.named_parameters())
    return {k: v for k, v in named.items() if not k.startswith("vae.")}


def train_vae(model: TinySD, data: ShapesDataset, cfg: TinySDTrainConfig, ctx: DistContext, ckpt: Path,
              show_progress: bool) -> None:
    state = load_checkpoint(ckpt) or {}
    objective: nn.Module = VAEObjective(model, cfg.kl_weight)
    if ctx.enabled:
        objective = DistributedDataParallel(objective)
    optimizer = torch.optim.AdamW(model.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if state.get("stage") == "vae":
        model.vae.load_state_dict(state["vae"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if ctx.is_main:
            print(f"resuming vae from step {start} ({ckpt})", file=sys.stderr, flush=True)
    rng = np.random.default_rng(cfg.seed * 1000 + 1 + ctx.rank)
    rng.bit_generator.advance(start * 4096)  # a resumed run does not replay the same batches
    torch.manual_seed(cfg.seed * 1000 + start + ctx.rank)
    images = torch.from_numpy(data.images)
    local_batch = cfg.vae_batch // ctx.world_size
    with TrainProgress("vae", cfg.vae_steps, start, enabled=show_progress and ctx.is_main) as bar:
        for step in range(start, cfg.vae_steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, cfg.vae_lr, 50, cfg.vae_steps)
            batch = images[rng.integers(0, len(images), local_batch)]
            flip = torch.from_numpy(rng.random(local_batch) < 0.5)
            batch = torch.where(flip.reshape(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = objective(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % 10 == 0 or step + 1 == cfg.vae_steps:
                bar.update(step + 1, ctx.mean(loss.item()))
            if ctx.is_main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps):
                atomic_torch_save(
                    {"stage": "vae", "step": step + 1, "vae": model.vae.state_dict(),
                     "optimizer": optimizer.state_dict(), "train_config": asdict(cfg)}, ckpt)


@torch.no_grad()
def encode_latent_means(model: TinySD, images: np.ndarray, batch: int = 512) -> Tensor:
    """Unscaled latent means of a whole image array."""
    latent_channels = model.config.latent_channels
    outs = [model.vae.encoder(torch.from_numpy(images[i : i + batch]))[:, :latent_channels]
            for i in range(0, len(images), batch)]
    return torch.cat(outs)


def train_diffusion(model: TinySD, data: ShapesDataset, latents: Tensor, cfg: TinySDTrainConfig,
                    ctx: DistContext, ckpt: Path, show_progress: bool) -> dict[str, Tensor]:
    state = load_checkpoint(ckpt) or {}
    objective: nn.Module = DiffusionObjective(model)
    if ctx.enabled:
        objective = DistributedDataParallel(objective)
    params = _diffusion_params(model)
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.unet_lr, weight_decay=0.01)
    ema = {k: v.detach().clone() for k, v in params.items()}
    start = 0
    if state.get("stage") == "diffusion":
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        ema = state["ema"]
        start = state["step"]
        if ctx.is_main:
            print(f"resuming diffusion from step {start} ({ckpt})", file=sys.stderr, flush=True)
    rng = np.random.default_rng(cfg.seed * 1000 + 2 + ctx.rank)
    rng.bit_generator.advance(start * 4096)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + start * 7 + ctx.rank)
    local_batch = cfg.unet_batch // ctx.world_size
    timesteps_total = model.config.train_timesteps
    with TrainProgress("diffusion", cfg.unet_steps, start, enabled=show_progress and ctx.is_main) as bar:
        for step in range(start, cfg.unet_steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, cfg.unet_lr, cfg.warmup, cfg.unet_steps)
            index = rng.integers(0, len(latents), local_batch)
            captions = [
                "" if rng.random() < cfg.caption_dropout else random_caption(data.specs[i], rng, cfg.part_dropout)
                for i in index
            ]
            token_ids = model.token_ids(captions)
            timesteps = torch.randint(0, timesteps_total, (local_batch,), generator=generator)
            noise = torch.randn(local_batch, *latents.shape[1:], generator=generator)
            loss = objective(token_ids, latents[torch.from_numpy(index)], timesteps, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
            ema_update(ema, params, cfg.ema_decay)
            if (step + 1) % 10 == 0 or step + 1 == cfg.unet_steps:
                bar.update(step + 1, ctx.mean(loss.item()))
            if ctx.is_main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.unet_steps):
                atomic_torch_save(
                    {"stage": "diffusion", "step": step + 1, "model": model.state_dict(), "ema": ema,
                     "optimizer": optimizer.state_dict(), "train_config": asdict(cfg)}, ckpt)
    return ema


def train_tiny_sd(output: Path, checkpoint_dir: Path, cfg: TinySDTrainConfig | None = None,
                  model_config: TinySDConfig | None = None, show_progress: bool = True) -> Path:
    """Train both stages (resuming from ``checkpoint_dir``) and write EMA weights to ``output``."""
    cfg = cfg or TinySDTrainConfig()
    model_config = model_config or TinySDConfig()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with distributed() as ctx:
        torch.manual_seed(cfg.seed)
        model = TinySD(model_config, vocabulary())
        data = ShapesDataset.generate(cfg.dataset_size, seed=cfg.seed, palette=cfg.palette)
        vae_ckpt, diffusion_ckpt = checkpoint_dir / "vae.pt", checkpoint_dir / "diffusion.pt"

        vae_state = load_checkpoint(vae_ckpt)
        if not (vae_state and vae_state["step"] >= cfg.vae_steps):
            train_vae(model, data, cfg, ctx, vae_ckpt, show_progress)
            ctx.barrier()
            vae_state = load_checkpoint(vae_ckpt)
        assert vae_state is not None
        model.vae.load_state_dict(vae_state["vae"])
        model.vae.eval()

        latents = encode_latent_means(model, data.images)
        model.config.latent_scale = float(1.0 / latents.std())
        latents = latents * model.config.latent_scale

        ema = train_diffusion(model, data, latents, cfg, ctx, diffusion_ckpt, show_progress)
        if ctx.is_main:
            tensors = {**{k: v for k, v in model.state_dict().items() if k.startswith("vae.")}, **ema}
            # Shipped in fp16 (half the download); loaded back into the fp32 model, which computes in fp32.
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
            save_weights(tensors, output, {"family": "tiny-sd", "config": model.config.to_dict(),
                                           "vocabulary": model.vocabulary.words, "train_config": asdict(cfg)})
        ctx.barrier()
    return output
