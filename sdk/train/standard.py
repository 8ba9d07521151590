"""Brief training of the standard architectures (``edgesdk.zoo.standard``) on the photo image set, so that their
weights, activations and classifier heads behave like trained ones for quantization tests and benchmarks.

From scratch, every layer, AdamW with warm-up and a cosine decay, at the 224 px the models are exported at. For the
CNNs, training at a lower resolution first was tried and dropped: resnet18 trained at 128 px (then 40 steps at 224
at the tail of the cosine) reached 98 % training accuracy at 128 but 30.5 % on held-out images at 224, because the
shapes are ~1.75x larger in pixels there; 300 steps of 16 at 224 (peak rate 1e-3) reached 81.5 % held out in about
the same CPU time (12 min on one loaded core). The resolution options serve tests (micro sizes) and
deit_tiny (below).

Measured with the defaults (one thread of a 2-core machine shared with other jobs; held-out accuracy on 400 images,
mean top-1 probability): resnet18 300 steps 724 s 84.0 % (0.84); mobilenet_v2 900 steps 3027 s 98.8 % (0.98) (300
steps: 463 s, 78.0 % (0.60)); mobilenet_v3_small 900 steps 473 s 98.3 % (0.97); efficientnet_b0 600 steps 2904 s
96.5 % (0.97) (300 steps: 921 s, 56.8 % (0.61)); the 900- and 600-step runs shared both cores with four other jobs,
so their seconds are 2-3x what one free core takes. Low-margin weights made poor test subjects: at 78 % (mean
confidence 0.60) mobilenet_v2's int8 top-1 agreement with fp32 stayed at 96.1 % with 9 layers kept in fp32.
deit_tiny, the ViT, needs a recipe of its own. From scratch at 224 it stayed at chance in CPU minutes (400 steps at
5e-4: 11.2 %; probes at other rates, 64 px, batches of 64, distillation from mobilenet_v3_small and a mimetic
initialisation of attention all stayed near chance in ten-minute budgets). What works is many cheap steps at 112 px
(a 7x7 patch grid, ~1 s a step of 32 on one core), then a short phase at 224 with the position table resampled and a
schedule of its own: one cosine over all 3000 steps with the last 250 at 224 dropped to 25 % training accuracy at the
switch and ended at 39.0 % held out; restarting there (optimizer moments reset, 20 warm-up steps to 3e-4, a cosine
over 400 steps at 224) took 2250 + 400 steps to 57.5 % held out (mean confidence 0.65; 70 % on its last training
batches) in 3889 s on one core of the 2-core machine, the other core mostly busy. Lower than the CNNs, but a head
far from chance whose int8 agreement means something.

After training, the BatchNorm statistics are estimated afresh at 224 on training crops the optimiser never saw (an
exact average over ``bn_images``, not a running one), and the accuracy on held-out images at 224 (the first
``eval_images`` of the held-out split: those ``benchmarks/user_models.py`` calibrates on) is recorded in the
weights' metadata. Deterministic by seed at a given thread count; checkpointed, so a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesdk.data.photos import CLASSES, IMAGENET_MEAN, IMAGENET_STD, PhotoShapes, normalised
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.train.common import atomic_torch_save, load_checkpoint, resume, save_weights
from edgesdk.zoo.standard import INPUT_SIZE, TIMM_NAMES, build_architecture, load_standard, weights_path
from edgesdk.zoo.weights import load_weights

Log = Callable[[str], None]


@dataclass(frozen=True)
class StandardTrainConfig:
    steps: int = 300
    batch: int = 16
    image_size: int = INPUT_SIZE  # training resolution of all but the last `full_size_steps` steps
    full_size_steps: int = 0  # the last steps at `full_size`, where BatchNorm and accuracy are measured
    full_size: int = INPUT_SIZE
    # > 0: the full-size steps restart the schedule (moments reset, `full_size_warmup_steps` of warm-up, a cosine
    # from this peak) instead of continuing the first phase's cosine; 0: one schedule over all steps
    full_size_lr: float = 0.0
    full_size_warmup_steps: int = 0
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 25
    bn_images: int = 256  # training crops the BatchNorm statistics are estimated on, at `full_size`
    eval_images: int = 400  # held-out images the accuracy is measured on, at `full_size`
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2 or self.image_size < 16 or self.full_size < 16:
            raise EdgeSDKError(f"training needs steps >= 1, batch >= 2 and sizes >= 16 pixels, got {self}")
        if not 0 <= self.full_size_steps <= self.steps or self.eval_images < 1 or self.bn_images < 0:
            raise EdgeSDKError(f"full_size_steps must be within steps and eval_images >= 1, got {self}")
        if self.full_size_lr < 0 or not 0 <= self.full_size_warmup_steps <= self.full_size_steps:
            raise EdgeSDKError(f"full_size_lr must be >= 0 and full_size_warmup_steps within full_size_steps, "
                               f"got {self}")

    @property
    def restarts(self) -> bool:
        """Whether the full-size steps run a schedule of their own (``full_size_lr``)."""
        return self.full_size_lr > 0 and 0 < self.full_size_steps < self.steps


# Per architecture, ten to twenty minutes of one free CPU core each: mobilenet_v3_small's steps are 5x cheaper than
# resnet18's, and at 300 steps and 1e-3 it reached only 48 % held out (mean confidence 0.50); 900 steps at 2e-3 took
# it to 98.2 % (0.97). mobilenet_v2 (78 % at 300 steps) and efficientnet_b0 (57 % at 300) get 900 and 600 steps.
# A transformer from scratch is the least stable at a given peak rate (a third of the CNNs') and learns only with many
# steps: most of them at 112 px, 4x cheaper, then a restarted schedule at 224 (module docstring).
ARCH_SETTINGS: dict[str, dict[str, float | int]] = {
    "mobilenet_v2": {"steps": 900},
    "mobilenet_v3_small": {"steps": 900},
    "efficientnet_b0": {"steps": 600, "lr": 1e-3},
    "deit_tiny": {"steps": 2650, "batch": 32, "image_size": 112, "lr": 7e-4, "warmup_steps": 80,
                  "full_size_steps": 400, "full_size_lr": 3e-4, "full_size_warmup_steps": 20},
}
# Constructor options for training only: each is inactive in eval mode, so the exported model is the library's
# definition either way. efficientnet_b0 with its default stochastic depth (0.2) and a peak rate of 2e-3 reached
# 40 % held out (mean confidence 0.37) in 300 steps, its loss at 3.9 after 50 steps (chance is 2.3).
TRAINING_OPTIONS: dict[str, dict[str, object]] = {"efficientnet_b0": {"stochastic_depth_prob": 0.0}}


def training_record(arch: str, cfg: StandardTrainConfig) -> dict[str, object]:
    """What the cache keys trained weights on: the architecture, the configuration and any training-only options.
    The restart fields appear only when set, so that weights trained before they existed stay cached."""
    options = TRAINING_OPTIONS.get(arch)
    settings = dataclasses.asdict(cfg)
    if not cfg.full_size_lr:
        del settings["full_size_lr"], settings["full_size_warmup_steps"]
    return {"arch": arch, **settings, **({"training_options": options} if options else {})}


def config_for(arch: str, **overrides: object) -> StandardTrainConfig:
    """The default configuration of ``arch`` (its steps and learning rate), with ``overrides``."""
    return dataclasses.replace(StandardTrainConfig(**ARCH_SETTINGS.get(arch, {})), **overrides)


def learning_rate(cfg: StandardTrainConfig, step: int) -> float:
    """Linear warm-up, then a cosine to zero: over all steps, or, when the full-size phase restarts
    (``cfg.restarts``), once over the first phase and once over the full-size steps from ``full_size_lr``."""
    peak, warmup, first, length = cfg.lr, cfg.warmup_steps, 0, cfg.steps
    if cfg.restarts:
        switch = cfg.steps - cfg.full_size_steps
        if step < switch:
            length = switch
        else:
            peak, warmup, first, length = cfg.full_size_lr, cfg.full_size_warmup_steps, switch, cfg.full_size_steps
    step -= first
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, length - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def _batch(split: PhotoShapes, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = split.images(start, count, size)
    return torch.from_numpy(normalised(images, IMAGENET_MEAN, IMAGENET_STD)), torch.from_numpy(labels)


@torch.no_grad()
def estimate_batchnorm(model: nn.Module, cfg: StandardTrainConfig, size: int) -> int:
    """Replace every BatchNorm's running statistics by the exact mean and variance over ``cfg.bn_images`` training
    crops at ``size``; the rest of the model stays in eval mode (no dropout, no stochastic depth). Returns how many
    BatchNorm layers there were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or cfg.bn_images == 0:
        return len(norms)
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch seen
        norm.train()
    # images past the training stream's end, so the estimate is on crops the optimiser never saw
    split, start = PhotoShapes("train", cfg.seed), cfg.steps * cfg.batch
    for offset in range(0, cfg.bn_images, cfg.batch):
        images, _ = _batch(split, start + offset, min(cfg.batch, cfg.bn_images - offset), size)
        model(images)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()
    return len(norms)


@torch.no_grad()
def held_out_accuracy(model: nn.Module, cfg: StandardTrainConfig, size: int) -> dict[str, float]:
    """Top-1 accuracy and the mean top-1 softmax probability on held-out images 0..eval_images-1 at ``size``."""
    model.eval()
    split, correct, confidence = PhotoShapes("held_out", cfg.seed), 0, 0.0
    for start in range(0, cfg.eval_images, cfg.batch):
        images, labels = _batch(split, start, min(cfg.batch, cfg.eval_images - start), size)
        probabilities = model(images).softmax(dim=1)
        correct += int((probabilities.argmax(dim=1) == labels).sum())
        confidence += float(probabilities.max(dim=1).values.sum())
    return {"accuracy": correct / cfg.eval_images, "mean_confidence": confidence / cfg.eval_images}


def train_standard(arch: str, path: Path, cfg: StandardTrainConfig, checkpoint: Path | None = None,
                   log: Log = print) -> dict[str, object]:
    """Train ``arch`` briefly (module docstring) and write its weights, at the export resolution, to ``path``
    (atomically); return the metadata written with them."""
    checkpoint = checkpoint or path.with_suffix(".ckpt")
    train_config = training_record(arch, cfg)
    saved = load_checkpoint(checkpoint)
    if saved is not None and saved.get("train_config") != train_config:
        log(f"{arch}: the checkpoint {checkpoint} was made with other settings; starting afresh")
        checkpoint.unlink()
        saved = None
    torch.manual_seed(cfg.seed)
    # a ViT checkpointed in its full-size steps has the full-size position table: built at that size to resume
    model, optimizer = _model_and_optimizer(arch, cfg, saved["size"] if saved else cfg.image_size)
    del saved
    state = resume(checkpoint, train_config, model, optimizer)
    first, seconds, history = 0, 0.0, []
    if state is not None:
        first, seconds, history = state["step"], state["seconds"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        log(f"{arch}: resuming at step {first} from {checkpoint}")
    split = PhotoShapes("train", cfg.seed)
    threads = torch.get_num_threads()
    sizes = f"at {cfg.image_size} px" if not cfg.full_size_steps or cfg.image_size == cfg.full_size else \
        f"({cfg.steps - cfg.full_size_steps} at {cfg.image_size} px, {cfg.full_size_steps} at {cfg.full_size} px)"
    log(f"{arch}: {cfg.steps} steps of {cfg.batch} {sizes} on {threads} thread{'s' if threads > 1 else ''}")
    started, window = time.perf_counter() - seconds, []
    for step in range(first, cfg.steps):
        full = step >= cfg.steps - cfg.full_size_steps
        size = cfg.full_size if full else cfg.image_size
        if arch in TIMM_NAMES and size != model.patch_embed.img_size[0]:
            model = _vit_at(arch, model, size, optimizer)
        if cfg.restarts and step == cfg.steps - cfg.full_size_steps:
            optimizer.state.clear()  # a fresh start for the new schedule: moments of the old size mislead it
            log(f"{arch}: step {step + 1}: the schedule restarts at {size} px ({cfg.full_size_warmup_steps} warm-up "
                f"steps to {cfg.full_size_lr:g}), optimizer moments reset")
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        images, labels = _batch(split, step * cfg.batch, cfg.batch, size)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # a from-scratch start has a few huge early gradients
        optimizer.step()
        window.append((float(loss.detach()), float((logits.argmax(dim=1) == labels).float().mean())))
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps:
            mean_loss, mean_acc = np.mean(window, axis=0)
            history.append({"step": step + 1, "loss": float(mean_loss), "train_accuracy": float(mean_acc)})
            log(f"{arch}: step {step + 1}/{cfg.steps} at {size} px  loss {mean_loss:.3f}  train accuracy "
                f"{mean_acc:.1%}  {time.perf_counter() - started:.0f} s")
            window = []
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            atomic_torch_save({"train_config": train_config, "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "step": step + 1, "history": history,
                               "seconds": time.perf_counter() - started, "torch_rng": torch.get_rng_state(),
                               "size": size},
                              checkpoint)
    train_seconds = time.perf_counter() - started

    # BatchNorm statistics and held-out accuracy at `full_size` (the export's 224 unless a test shrinks it); the
    # weights are saved for the factories' 224 (the ViT's table resized there; the CNNs' weights fit any size)
    final = _at_size(arch, model, cfg.full_size)
    t0 = time.perf_counter()
    norms = estimate_batchnorm(final, cfg, cfg.full_size)
    held_out = held_out_accuracy(final, cfg, cfg.full_size)
    log(f"{arch}: {norms} BatchNorm layers re-estimated on {cfg.bn_images} crops at {cfg.full_size} px; held-out "
        f"accuracy {held_out['accuracy']:.1%} on {cfg.eval_images} images (mean confidence "
        f"{held_out['mean_confidence']:.2f}); trained in {train_seconds:.0f} s")
    metadata = {"arch": arch, "train_config": train_config, "classes": list(CLASSES), "input_size": INPUT_SIZE,
                "measured_at_px": cfg.full_size,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "held_out_accuracy": held_out["accuracy"], "held_out_confidence": held_out["mean_confidence"],
                "held_out_images": cfg.eval_images, "train_seconds": round(train_seconds, 1),
                "finish_seconds": round(time.perf_counter() - t0, 1), "threads": threads, "history": history}
    save_weights(_at_size(arch, final, INPUT_SIZE).state_dict(), path, metadata)
    checkpoint.unlink(missing_ok=True)
    return metadata


def _at_size(arch: str, model: nn.Module, size: int, **options: object) -> nn.Module:
    """A copy of ``model`` built for ``size`` (with constructor ``options``), in eval mode. What changes is the ViT's
    learned position table, resampled from its patch grid to the new one (bicubic; the class token's entry kept);
    the CNNs' weights fit any size."""
    with torch.random.fork_rng():  # building draws an initialisation; training's random stream stays untouched
        resized = build_architecture(arch, len(CLASSES), image_size=size, **options)
    state = model.state_dict()
    if arch in TIMM_NAMES:
        from timm.layers import resample_abs_pos_embed

        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=list(resized.patch_embed.grid_size),
                                                    num_prefix_tokens=resized.num_prefix_tokens)
    resized.load_state_dict(state)
    return resized.eval()


def _model_and_optimizer(arch: str, cfg: StandardTrainConfig,
                         size: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The freshly initialised architecture (built for ``size``: the ViT's table) and its AdamW, with no weight
    decay on biases, norms and the position table."""
    model = build_architecture(arch, len(CLASSES), image_size=size, **TRAINING_OPTIONS.get(arch, {}))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("pos_embed")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith("pos_embed")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    return model, optimizer


def _vit_at(arch: str, model: nn.Module, size: int, optimizer: torch.optim.Optimizer) -> nn.Module:
    """The ViT rebuilt at another input size with the same weights (position table resized) and the optimizer
    pointed at its parameters, their moment estimates carried over (the resized table's start afresh)."""
    names = {id(p): n for n, p in model.named_parameters()}
    resized = _at_size(arch, model, size, **TRAINING_OPTIONS.get(arch, {}))
    new = dict(resized.named_parameters())
    for group in optimizer.param_groups:
        swapped = []
        for parameter in group["params"]:
            name = names[id(parameter)]
            moments = optimizer.state.pop(parameter, None)
            if moments is not None and name != "pos_embed":
                optimizer.state[new[name]] = moments
            swapped.append(new[name])
        group["params"] = swapped
    return resized


def ensure_trained(arch: str, cfg: StandardTrainConfig | None = None, log: Log = print,
                   retrain: bool = False) -> Path:
    """The cached weights of ``arch``, trained first unless the cache holds weights made with ``cfg``."""
    cfg = cfg or config_for(arch)
    path = weights_path(arch)
    if path.exists() and not retrain:
        _, metadata = load_weights(path)
        if metadata.get("train_config") == training_record(arch, cfg):
            log(f"{arch}: trained weights cached at {path} (held-out accuracy "
                f"{float(metadata['held_out_accuracy']):.1%})")
            return path
        log(f"{arch}: the cached weights at {path} were made with other settings; training again")
    train_standard(arch, path, cfg, log=log)
    load_standard(arch, path)  # what the factories will load fits the architecture
    return path
