"""The attribute classifier that scores generated shapes: it stands in for CLIP, which cannot be downloaded.

It is trained only on rendered (real) images, never on generated ones, and kept apart from the models it
judges. One small CNN trunk, one linear head per attribute (kind, colour, size, position, background).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgesdk.data import ATTRIBUTES


class AttributeClassifier(nn.Module):
    def __init__(self, width: int = 48) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.trunk = nn.Sequential(
            block(3, width), nn.MaxPool2d(2),  # 16x16
            block(width, 2 * width), nn.MaxPool2d(2),  # 8x8
            block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(16 * width, len(classes)) for name, classes in ATTRIBUTES.items()})

    def features(self, images: Tensor) -> Tensor:
        """(B, 3, 32, 32) in [-1, 1] -> (B, 16*width) features (for Frechet distances later)."""
        return self.trunk(images)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images_uint8: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """(N, H, W, 3) uint8 -> predicted class index per attribute."""
        from edgesdk.data.shapes import to_model_range

        self.eval()
        outs: dict[str, list[np.ndarray]] = {name: [] for name in ATTRIBUTES}
        for i in range(0, len(images_uint8), batch):
            logits = self(torch.from_numpy(to_model_range(images_uint8[i : i + batch])))
            for name, value in logits.items():
                outs[name].append(value.argmax(dim=1).numpy())
        return {name: np.concatenate(v) for name, v in outs.items()}


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "evaluator.safetensors"


def load_evaluator(path: Path | None = None) -> AttributeClassifier:
    from edgesdk.zoo.weights import load_weights

    tensors, metadata = load_weights(path or default_weights_path())
    model = AttributeClassifier(width=int(metadata.get("width", 48)))
    model.load_state_dict(tensors)
    return model.eval()
