"""Train ViWS-Net on synthetic weather clips: `edgesdk train viws`.

Loss on the centre frame only (spec §6): SmoothL1(y, gt) + 0.04 * perceptual(y, gt) + 0.001 * CE(weather logits,
label), the CE computed through gradient reversal whose strength follows the DANN ramp over training progress. The
perceptual term is the mean of MSEs on three depths of the in-project evaluator's trunk (frozen): VGG16 cannot be
downloaded here. Every batch holds whole items of one rain, one haze and one snow clip (the discriminator needs all
three classes), augmented with vertical flip, horizontal mirror and 180-degree rotation (p = 0.5 each).

Optimizer: Adam (0.9, 0.999, eps 1e-8), the learning rate halved after every fifth of the run (the spec halves
every 100 of 500 epochs). The default rate is 1e-3 rather than the spec's 2e-4: a CPU run of a few thousand steps
from random initialisation (no ImageNet weights offline) learns little at 2e-4.

Ablations: ``discriminator=False`` (no weather discriminator), ``single_frame=True`` (the same network fed its
centre frame T times: no temporal information), ``refiner=False``.

Single process: ``edgesdk train viws``; several: ``torchrun --nproc_per_node 2 -m edgesdk.cli train viws``
(DistributedDataParallel; each rank takes its share of the items). Checkpoints every ``checkpoint_every`` steps
(atomic); rerunning resumes bit-exactly (every step's randomness derives from (seed, step)).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from edgesdk.progress import TrainProgress
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.train.common import atomic_torch_save, distributed, resume, save_weights
from edgesdk.zoo.viws import (
    PRESETS,
    WEATHERS,
    ViWSConfig,
    ViWSNet,
    dann_alpha,
    inference_parameter_count,
    parameter_count,
)


@dataclass
class ViWSTrainConfig:
    steps: int = 2_000
    batch: int = 2  # items per step (global; each item is one clip of every weather, so 3x this many clips)
    lr: float = 1e-3
    clips_per_weather: int = 240  # training pool, generated once per run (deterministic)
    size: int = 64
    frames: int = 5
    perceptual_weight: float = 0.04
    weather_weight: float = 0.001
    discriminator: bool = True
    single_frame: bool = False
    refiner: bool = True
    checkpoint_every: int = 100
    seed: int = 19
    preset: str = "default"  # edgesdk.zoo.viws.PRESETS ("tiny": tests)
    init: str | None = None  # weights to start from (a second stage, fine-tuning) instead of random initialisation

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.clips_per_weather < 1:
            raise EdgeSDKError("steps, batch and clips per weather must be positive")
        if self.size % 32 or self.size < 32:
            raise EdgeSDKError(f"--size must be a multiple of 32 (at least 32), got {self.size}")
        if self.preset not in PRESETS:
            raise EdgeSDKError(f"unknown preset '{self.preset}'; choose from {', '.join(PRESETS)}")
        if self.lr <= 0:
            raise EdgeSDKError(f"--lr must be positive, got {self.lr}")

    def model_config(self) -> ViWSConfig:
        return replace(PRESETS[self.preset], frames=self.frames, image_size=self.size, refiner=self.refiner)

    @property
    def variant(self) -> str:
        name = "single-frame" if self.single_frame else "full" if self.discriminator else "no-discriminator"
        return name if self.refiner else f"{name}-no-refiner"


def learning_rate(cfg: ViWSTrainConfig, step: int) -> float:
    return cfg.lr * 0.5 ** min(4, step * 5 // cfg.steps)


class PerceptualLoss(nn.Module):
    """Mean of MSEs between the features of three depths of the frozen evaluator trunk (the VGG16 relu1_2 /
    relu2_2 / relu3_3 stand-in). Inputs in [0, 1]; the evaluator reads [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        from edgesdk.zoo.evaluator import load_evaluator

        trunk = load_evaluator().trunk
        # trunk = block, pool, block, pool, block, avgpool, flatten: keep the three blocks (fully convolutional)
        self.stages = nn.ModuleList([trunk[0], nn.Sequential(trunk[1], trunk[2]), nn.Sequential(trunk[3], trunk[4])])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:  # frozen: batch norms stay in eval mode
        return super().train(False)

    def forward(self, restored: Tensor, target: Tensor) -> Tensor:
        x, y = restored * 2 - 1, target * 2 - 1
        total = restored.new_zeros(())
        for stage in self.stages:
            x, y = stage(x), stage(y)
            total = total + F.mse_loss(x, y)
        return total / len(self.stages)


POOL_VERSION = 1  # bump when edgesdk.data.weather renders clips differently: cached pools are then rebuilt


def clip_pool(cfg: ViWSTrainConfig, workers: int = 1,
              cache_dir: Path | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The training pool as tensors: degraded (N, T, 3, H, W), clean centre frames (N, 3, H, W), labels (N,);
    ordered in (rain, haze, snow) triples. With ``cache_dir``, the pool is kept there (one file per clip count,
    frames, size and seed), so ablations, resumed runs and a time probe render it once."""
    cached = None
    if cache_dir is not None:
        cached = cache_dir / (f"pool-v{POOL_VERSION}-c{cfg.clips_per_weather}-t{cfg.frames}-s{cfg.size}"
                              f"-seed{cfg.seed}.pt")
        if cached.exists():
            try:
                pool = torch.load(cached, map_location="cpu", weights_only=True)
                return pool["degraded"], pool["centre"], pool["labels"]
            except Exception:  # a damaged cache file is rebuilt, never trusted
                pass
    from edgesdk.data.weather import make_clip_set

    clips = make_clip_set("train", cfg.clips_per_weather, frames=cfg.frames, size=cfg.size, seed=cfg.seed,
                          workers=workers)
    degraded = torch.from_numpy(np.stack([c.degraded for c in clips])).permute(0, 1, 4, 2, 3).contiguous()
    centre = torch.from_numpy(np.stack([c.clean[cfg.frames // 2] for c in clips])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([c.label for c in clips], dtype=torch.long)
    if cached is not None:
        atomic_torch_save({"degraded": degraded, "centre": centre, "labels": labels}, cached)
    return degraded, centre, labels


def augment(frames: Tensor, target: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per clip: vertical flip, horizontal mirror, 180-degree rotation, each with p = 0.5 (same on input and target).
    frames (N, T, 3, H, W), target (N, 3, H, W)."""
    flips = torch.rand(frames.shape[0], 3, generator=generator) < 0.5
    x, y = frames, target
    # whole-batch selects instead of a loop over clips: the same result, three operations per flip on any device
    for column, dims in enumerate(((-2,), (-1,), (-2, -1))):
        chosen = flips[:, column].to(x.device)
        x = torch.where(chosen.view(-1, 1, 1, 1, 1), x.flip(dims), x)
        y = torch.where(chosen.view(-1, 1, 1, 1), y.flip(dims), y)
    return x, y


def as_single_frame(frames: Tensor) -> Tensor:
    """The centre frame repeated T times: what the single-frame ablation sees."""
    centre = frames[:, frames.shape[1] // 2]
    return centre.unsqueeze(1).expand_as(frames).contiguous()


class TrainStep(nn.Module):
    """What DistributedDataParallel wraps: the training forward (restored centre frames and weather logits)."""

    def __init__(self, model: ViWSNet, discriminator: bool) -> None:
        super().__init__()
        self.model, self.discriminator = model, discriminator

    def forward(self, frames: Tensor, alpha: float) -> tuple[Tensor, Tensor | None]:
        if self.discriminator:
            return self.model.forward_train(frames, alpha)
        return self.model(frames), None


def training_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` (a GPU when torch sees one, else the CPU), ``cpu`` or ``cuda``; under torchrun each rank takes the
    GPU of its local rank."""
    if requested not in ("auto", "cpu", "cuda"):
        raise EdgeSDKError(f"unknown device '{requested}'; choose auto, cpu or cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise EdgeSDKError("--device cuda: torch sees no GPU here (CPU-only torch, or no driver); use --device cpu")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    # TF32 matrix products (cuDNN's convolutions already use it): fp32 training at tensor-core speed
    torch.backends.cuda.matmul.allow_tf32 = True
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def initial_weights(model: ViWSNet, path: Path) -> None:
    """Load ``path`` (a viws weights file of the same configuration, discriminator included) into ``model``."""
    from edgesdk.zoo.weights import load_weights

    if not path.is_file():
        raise EdgeSDKError(f"--init {str(path)!r} does not exist")
    tensors, metadata = load_weights(path)
    if metadata.get("family") != "viws":
        raise EdgeSDKError(f"--init {str(path)!r} holds '{metadata.get('family')}' weights, not a viws network")
    if metadata.get("config") != model.config.to_json():
        raise EdgeSDKError(f"--init {str(path)!r} was trained with another network configuration (preset, size, "
                           "frames or refiner); pass the same options")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EdgeSDKError(f"--init {str(path)!r} does not fit this network (missing {len(missing)}, unexpected "
                           f"{len(unexpected)} tensors)")


def train_viws(output: Path, checkpoint_dir: Path, cfg: ViWSTrainConfig | None = None,
               show_progress: bool = True, device: str = "cpu", workers: int = 1,
               pool_cache: Path | None = None) -> dict:
    """Run (or resume) training; write the weights (config, training settings and held-out figures as metadata)
    to ``output``. Returns the final record.

    ``device``: see `training_device`. The clip pool and every random draw stay on the CPU (so the steps taken do
    not depend on the device); each step's batch is moved to the device. On the CPU a resumed run is bit-exact; on a
    GPU it takes the same steps, but cuDNN's kernels need not sum in the same order. ``workers``: processes that
    render the clip pool; ``pool_cache``: a folder where the rendered pool is kept (see `clip_pool`)."""
    cfg = cfg or ViWSTrainConfig()
    checkpoint = checkpoint_dir / f"viws-{cfg.variant}-s{cfg.seed}.pt"
    with distributed() as ctx:
        target = training_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        torch.manual_seed(cfg.seed)
        model = ViWSNet(cfg.model_config())
        if cfg.init is not None:
            initial_weights(model, Path(cfg.init))
        model = model.to(target)
        step_module = TrainStep(model, cfg.discriminator)
        net: nn.Module = step_module
        if ctx.enabled:
            net = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[target.index] if target.type == "cuda" else None,
                find_unused_parameters=not cfg.discriminator)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
        perceptual = PerceptualLoss().to(target) if cfg.perceptual_weight > 0 else None
        start, history = 0, []
        state = resume(checkpoint, asdict(cfg), model, optimizer)
        if state is not None:
            start, history = state["step"], state["history"]
            if ctx.is_main and show_progress:
                print(f"resuming after step {start} ({checkpoint})", file=sys.stderr, flush=True)
        if start < cfg.steps:
            if ctx.is_main and show_progress:
                print(f"generating {3 * cfg.clips_per_weather} training clips", file=sys.stderr, flush=True)
            degraded, centre, labels = clip_pool(cfg, workers, pool_cache)
        items = cfg.clips_per_weather
        t0, sums = time.perf_counter(), {"loss": 0.0, "reconstruction": 0.0, "weather_accuracy": 0.0}
        with TrainProgress(f"viws {cfg.variant}", cfg.steps, start, enabled=show_progress and ctx.is_main) as bar:
            warm_step, warm_time = None, 0.0  # the step rate after warm-up (first steps, allocator, cuDNN search)
            for step in range(start, cfg.steps):
                if step == start + min(5, (cfg.steps - start) // 2):
                    warm_step, warm_time = step, time.perf_counter()
                # every random draw of a step derives from (seed, step): a resumed run takes the same steps
                generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                torch.manual_seed(cfg.seed * 1_000_003 + step + 7)
                chosen = torch.randint(0, items, (cfg.batch,), generator=generator)[ctx.rank::ctx.world_size]
                index = (chosen[:, None] * 3 + torch.arange(3)).flatten()  # whole (rain, haze, snow) items
                x, y = augment(degraded[index], centre[index], generator)
                if cfg.single_frame:
                    x = as_single_frame(x)
                x, y, batch_labels = x.to(target), y.to(target), labels[index].to(target)
                alpha = dann_alpha(step / max(1, cfg.steps - 1))
                lr = learning_rate(cfg, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                model.train()
                restored, logits = net(x, alpha)
                reconstruction = F.smooth_l1_loss(restored, y)
                loss = reconstruction
                if perceptual is not None:
                    loss = loss + cfg.perceptual_weight * perceptual(restored, y)
                if logits is not None:
                    loss = loss + cfg.weather_weight * F.cross_entropy(logits, batch_labels)
                    sums["weather_accuracy"] += float((logits.argmax(1) == batch_labels).float().mean())
                if not torch.isfinite(loss):
                    raise EdgeSDKError(f"loss is not finite at step {step + 1}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums["loss"] += ctx.mean(float(loss.detach()))
                sums["reconstruction"] += ctx.mean(float(reconstruction.detach()))
                bar.update(step + 1, float(loss.detach()))
                done = step + 1
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    span = done - (history[-1]["step"] if history else 0)
                    record = {"step": done, "lr": lr, "alpha": alpha, **{k: v / span for k, v in sums.items()}}
                    if not cfg.discriminator:
                        record.pop("weather_accuracy")
                    history.append(record)
                    sums = dict.fromkeys(sums, 0.0)
                    if ctx.is_main:
                        atomic_torch_save({"step": done, "model": model.state_dict(),
                                           "optimizer": optimizer.state_dict(), "history": history,
                                           "train_config": asdict(cfg)}, checkpoint)
        result = {"variant": cfg.variant, "history": history, "parameters": parameter_count(model),
                  "inference_parameters": inference_parameter_count(model),
                  "train_seconds_this_run": round(time.perf_counter() - t0, 1), "device": str(target),
                  "steps_this_run": cfg.steps - start}
        if start < cfg.steps and warm_step is not None:
            result["seconds_per_step_after_warmup"] = (time.perf_counter() - warm_time) / (cfg.steps - warm_step)
        if ctx.is_main:
            metadata = {"family": "viws", "config": model.config.to_json(), "variant": cfg.variant,
                        "train_config": asdict(cfg), "weathers": list(WEATHERS), **result}
            if cfg.init is not None:
                metadata["stages"] = training_stages(Path(cfg.init), metadata)
            save_weights(model.state_dict(), output, metadata)
        ctx.barrier()
    return result


def training_stages(init: Path, this_run: dict) -> list[dict]:
    """The lineage of weights trained from ``init``: init's stages (or init itself as the first), then this run."""
    from edgesdk.zoo.weights import load_weights

    def stage(info: dict) -> dict:
        cfg = info.get("train_config") or {}
        return {"train_config": cfg, "steps": cfg.get("steps"), "history": info.get("history"),
                "device": info.get("device"), "train_seconds": info.get("train_seconds_this_run")}

    earlier = load_weights(init)[1]
    return [*(earlier.get("stages") or [stage(earlier)]), stage(this_run)]


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class RestorationScores:
    """Y-channel PSNR / SSIM per weather, averaged over every evaluated centre frame."""

    psnr: dict[str, float]
    ssim: dict[str, float]
    frames: dict[str, int]

    def mean_psnr(self) -> float:
        return float(np.mean(list(self.psnr.values())))

    def to_dict(self) -> dict:
        return {"psnr": self.psnr, "ssim": self.ssim, "frames": self.frames, "mean_psnr": self.mean_psnr(),
                "mean_ssim": float(np.mean(list(self.ssim.values())))}


def evaluation_clips(count_per_weather: int = 12, frames: int = 9, size: int = 64) -> list:
    """Held-out clips (test sources, test seeds) of ``frames`` frames."""
    from edgesdk.data.weather import make_clip_set

    return make_clip_set("test", count_per_weather, frames=frames, size=size)


def score_restoration(restore: object, clips: list, window: int = 5) -> RestorationScores:
    """Score ``restore(windows (N, T, H, W, 3) float32) -> (N, H, W, 3)`` (None: the degraded input itself) on the
    centre frames of every full window of each clip (edge rule: only full windows are evaluated)."""
    from edgesdk.runtime.metrics import psnr_y, ssim_y

    half = window // 2
    psnr: dict[str, list[float]] = {w: [] for w in WEATHERS}
    ssim: dict[str, list[float]] = {w: [] for w in WEATHERS}
    for clip in clips:
        centres = range(half, clip.degraded.shape[0] - half)
        windows = np.stack([clip.degraded[c - half:c + half + 1] for c in centres])
        outputs = windows[:, half] if restore is None else restore(windows)
        for c, out in zip(centres, outputs, strict=True):
            weather = WEATHERS[clip.label]
            psnr[weather].append(psnr_y(out, clip.clean[c]))
            ssim[weather].append(ssim_y(out, clip.clean[c]))
    return RestorationScores({w: float(np.mean(v)) for w, v in psnr.items() if v},
                             {w: float(np.mean(v)) for w, v in ssim.items() if v},
                             {w: len(v) for w, v in psnr.items()})


def eager_restorer(model: ViWSNet, single_frame: bool = False, batch: int = 8):  # noqa: ANN201
    """A ``restore`` callable for score_restoration over the eager model."""

    @torch.no_grad()
    def restore(windows: np.ndarray) -> np.ndarray:
        model.eval()
        outputs = []
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch])).permute(0, 1, 4, 2, 3).contiguous()
            if single_frame:
                x = as_single_frame(x)
            outputs.append(model(x).clamp(0, 1).permute(0, 2, 3, 1).numpy())
        return np.concatenate(outputs)

    return restore


def variant_config(base: ViWSTrainConfig, variant: str) -> ViWSTrainConfig:
    """The benchmark's ablations of one training configuration."""
    if variant == "full":
        return replace(base, discriminator=True, single_frame=False)
    if variant == "no-discriminator":
        return replace(base, discriminator=False, single_frame=False)
    if variant == "single-frame":
        return replace(base, discriminator=True, single_frame=True)
    raise EdgeSDKError(f"unknown variant '{variant}'; choose full, no-discriminator or single-frame")
