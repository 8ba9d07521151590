"""Quantization-aware distillation of a one-step student for 4-bit weights (`edgesdk train onestep-w4`).

Why: the student reads its noise prediction at t = T-1 and returns x0 = (z - sqrt(1 - abar) eps) / sqrt(abar),
which multiplies any error in eps by 1/sqrt(abar_T) (about 15 for tiny-sd). Post-training 4-bit weights keep eps
at ~27 dB but leave x0 at ~6 dB, below the export floor. So the student is fine-tuned with every weight snapped
to the 4-bit grid in its forward pass (straight-through gradient, `edgesdk.quant.int4`) to reproduce the fp32
student's x0 on fresh noise and prompts. The weights it writes lie exactly on that grid, which both targets
store unchanged: a w4 export of this file loses nothing in its weights, only the int8 rounding of activations.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from edgesdk.data.shapes import random_caption, random_spec
from edgesdk.export.parity import compare
from edgesdk.progress import TrainProgress
from edgesdk.quant.int4 import bake_quant_aware, make_quant_aware
from edgesdk.runtime.bundle import file_sha256
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.train.common import atomic_torch_save, load_checkpoint, save_weights
from edgesdk.zoo.onestep import OneStep, default_onestep_path, load_onestep
from edgesdk.zoo.weights import load_weights


@dataclass
class QuantAwareConfig:
    iterations: int = 1_000
    batch: int = 32
    lr: float = 2e-4  # Adam, cosine to 0; weights must move by up to half a grid step to settle
    group: int = 64  # the w4 recipe's group size
    seed: int = 0
    checkpoint_every: int = 100
    validation: int = 128  # held-out (noise, prompt) pairs for the SQNR it reports

    def validate(self) -> None:
        if self.iterations < 1 or self.batch < 1 or self.validation < 2:
            raise EdgeSDKError("iterations, batch and validation must be positive")
        if self.group < 32 or self.group & (self.group - 1):
            raise EdgeSDKError(f"group must be a power of two >= 32, got {self.group}")


def noise_and_text(student: OneStep, count: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Sampling-time inputs: Gaussian noise and encoded captions of random shapes (parts dropped at random)."""
    prompts = [random_caption(random_spec(rng), rng) for _ in range(count)]
    noise = torch.from_numpy(rng.standard_normal((count, *student_latent_shape(student))).astype(np.float32))
    with torch.no_grad():
        return noise, student.encode_text(prompts)


def student_latent_shape(student: OneStep) -> tuple[int, int, int]:
    cfg = student.config
    return cfg.latent_channels, cfg.latent_size, cfg.latent_size


def sqnr_db(reference: Tensor, candidate: Tensor) -> float:
    return compare(reference.numpy(), candidate.numpy())["sqnr_db"]


def train_quant_aware(output: Path, checkpoint_dir: Path, student_path: Path | None = None,
                      cfg: QuantAwareConfig | None = None, show_progress: bool = True) -> dict[str, float]:
    """Fine-tune a copy of the student with 4-bit weights to match the fp32 student; write it (its UNet on the
    grid, fp16, plus metadata) to ``output``. Returns the held-out x0 SQNR vs the fp32 student before and after."""
    cfg = cfg or QuantAwareConfig()
    cfg.validate()
    student_file = student_path or default_onestep_path()
    student_sha256 = file_sha256(student_file)
    student = load_onestep(student_file)
    if student.info.get("quant_aware"):
        raise EdgeSDKError(f"{student_file} is already a quantization-aware student; start from the fp32 one")
    for p in student.parameters():
        p.requires_grad_(False)
    reference = student.generator
    generator = copy.deepcopy(reference).train()
    layers = make_quant_aware(generator, cfg.group)
    for p in generator.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.iterations)

    held_noise, held_text = noise_and_text(student, cfg.validation, np.random.default_rng(cfg.seed + 10_000))
    with torch.no_grad():
        held_reference = reference(held_noise, held_text)
        before = sqnr_db(held_reference, generator(held_noise, held_text))

    checkpoint = checkpoint_dir / "onestep-w4.pt"
    start, state = 0, load_checkpoint(checkpoint)
    if state is not None:
        if state["config"] != {k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"} \
                or state["student_sha256"] != student_sha256:
            raise EdgeSDKError(f"checkpoint {str(checkpoint)!r} was written for another student or settings; pass "
                               "the same options to resume, or delete it to start over")
        generator.load_state_dict(state["generator"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = state["iteration"]
        if show_progress:
            print(f"resuming from iteration {start} ({checkpoint})", file=sys.stderr, flush=True)
    with TrainProgress("onestep w4", cfg.iterations, start, enabled=show_progress) as bar:
        for iteration in range(start, cfg.iterations):
            # each iteration's inputs come from its own seed, so a resumed run sees what an unbroken one would
            noise, text = noise_and_text(student, cfg.batch, np.random.default_rng([cfg.seed, iteration]))
            with torch.no_grad():
                target = reference(noise, text)
            loss = torch.mean((generator(noise, text) - target) ** 2)
            if not torch.isfinite(loss):
                raise EdgeSDKError(f"loss is not finite at iteration {iteration}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            done = iteration + 1
            bar.update(done, loss.item())
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                atomic_torch_save({"iteration": done, "generator": generator.state_dict(),
                                   "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                   "config": {k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"},
                                   "student_sha256": student_sha256}, checkpoint)

    generator.eval()
    bake_quant_aware(generator)
    with torch.no_grad():
        after = sqnr_db(held_reference, generator(held_noise, held_text))
    tensors, metadata = load_weights(student_file)
    baked = {k: v.detach().half() for k, v in generator.unet.state_dict().items()}
    if baked.keys() != tensors.keys():
        raise EdgeSDKError("the fine-tuned UNet's parameters do not match the student file's")
    metadata.update({"quant_aware": {"recipe": "w4", "group": cfg.group, "layers": layers,
                                     "x0_sqnr_db_vs_fp32_student": {"before": round(before, 2),
                                                                     "after": round(after, 2)},
                                     "train_config": asdict(cfg), "student_sha256": student_sha256}})
    save_weights(baked, output, metadata)
    return {"before_db": before, "after_db": after, "layers": float(layers)}
