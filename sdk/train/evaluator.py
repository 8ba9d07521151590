"""Train the attribute classifier on freshly rendered shapes (seeds disjoint from tiny-sd's training set)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edgesdk.data import ATTRIBUTES, ShapesDataset
from edgesdk.progress import TrainProgress
from edgesdk.train.common import atomic_torch_save, load_checkpoint, save_weights
from edgesdk.zoo.evaluator import AttributeClassifier


@dataclass
class EvaluatorTrainConfig:
    steps: int = 1_500
    batch: int = 128
    lr: float = 2e-3
    train_size: int = 30_000
    test_size: int = 2_000
    width: int = 48
    checkpoint_every: int = 250
    seed: int = 1000  # tiny-sd trains on seed 0; the evaluator never sees those images


def train_evaluator(output: Path, checkpoint_dir: Path, cfg: EvaluatorTrainConfig | None = None,
                    show_progress: bool = True) -> dict[str, float]:
    """Train, write weights, and return held-out accuracy per attribute."""
    cfg = cfg or EvaluatorTrainConfig()
    torch.manual_seed(cfg.seed)
    train = ShapesDataset.generate(cfg.train_size, seed=cfg.seed)
    test = ShapesDataset.generate(cfg.test_size, seed=cfg.seed + 1)
    images, labels = torch.from_numpy(train.images), {k: torch.from_numpy(v) for k, v in train.label_array().items()}
    model = AttributeClassifier(cfg.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps)
    ckpt = checkpoint_dir / "evaluator.pt"
    start = 0
    if (state := load_checkpoint(ckpt)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
    rng = np.random.default_rng(cfg.seed)
    rng.bit_generator.advance(start * 4096)
    model.train()
    with TrainProgress("evaluator", cfg.steps, start, enabled=show_progress) as bar:
        for step in range(start, cfg.steps):
            index = torch.from_numpy(rng.integers(0, len(images), cfg.batch))
            logits = model(images[index])
            loss = sum(F.cross_entropy(logits[name], labels[name][index]) for name in ATTRIBUTES)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if (step + 1) % 10 == 0:
                bar.update(step + 1, float(loss.item()))
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                atomic_torch_save({"step": step + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict()}, ckpt)
    model.eval()
    uint8 = np.clip(np.round((test.images.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    predicted = model.predict(uint8)
    truth = test.label_array()
    accuracy = {name: float((predicted[name] == truth[name]).mean()) for name in ATTRIBUTES}
    metadata = {"family": "evaluator", "width": cfg.width, "held_out_accuracy": accuracy, "train_config": asdict(cfg)}
    save_weights(dict(model.state_dict()), output, metadata)
    return accuracy
