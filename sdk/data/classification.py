"""Image classification sets that need no download, as uint8 pixels with fixed train/test splits.

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (pixel values 0..16, rescaled to 0..255), 10 classes;
  a stratified 80/20 split fixed by seed 0.
- ``shapes``: the procedural 32x32 shapes (``edgesdk.data.shapes``) labelled by kind (5 classes), large, with
  random colour, position, rotation and background; train and test come from different seeds. (Small shapes are
  ~11 pixels across; with them a full-precision ResNet stayed near chance for the first few hundred steps.)
Images are (N, H, W, C) uint8, what a camera or a file gives; models normalise them (``BNNConfig.mean/std``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edgesdk.data.shapes import KINDS, random_spec, render
from edgesdk.runtime.classify import normalise_images as normalise  # noqa: F401 - one definition
from edgesdk.runtime.errors import EdgeSDKError

DATASETS = ("digits", "shapes")


@dataclass
class ClassificationSplit:
    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def load_classification(name: str, shapes_train: int = 6_000, shapes_test: int = 1_000) -> ClassificationSplit:
    if name == "digits":
        return _digits()
    if name == "shapes":
        return _shapes(shapes_train, shapes_test)
    raise EdgeSDKError(f"unknown dataset '{name}'; choose from {', '.join(DATASETS)}")


def _digits() -> ClassificationSplit:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = data.target.astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):  # stratified: 20 % of each class
        members = np.flatnonzero(labels == digit)
        test[rng.choice(members, size=round(0.2 * len(members)), replace=False)] = True
    return ClassificationSplit(images[~test], labels[~test], images[test], labels[test],
                               tuple(str(d) for d in range(10)))


def _shapes(train: int, test: int) -> ClassificationSplit:
    def render_set(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        specs = [dataclasses.replace(random_spec(rng), size="large") for _ in range(count)]
        images = np.stack([render(s) for s in specs]) if specs else np.zeros((0, 32, 32, 3), np.uint8)
        return images, np.array([KINDS.index(s.kind) for s in specs], dtype=np.int64)

    train_images, train_labels = render_set(train, 7_001)
    test_images, test_labels = render_set(test, 7_002)
    return ClassificationSplit(train_images, train_labels, test_images, test_labels, KINDS)
