"""Concepts for personalization: shapes in colours the captions never name (so no prompt can ask for them).

Each concept is a kind in an unnamed colour; its reference images vary size, position, background and
rotation, so what the images share (and a learned word must capture) is exactly the concept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgesdk.data.shapes import COLOUR_NAMES, POSITIONS, SIZES, UNNAMED_COLOURS, ShapeSpec, render

# name -> (kind, unnamed colour); the kind is the natural initializer word
CONCEPTS: dict[str, tuple[str, str]] = {
    "pink-star": ("star", "pink"),
    "teal-circle": ("circle", "teal"),
    "brown-square": ("square", "brown"),
    "grey-triangle": ("triangle", "grey"),
    "lime-cross": ("cross", "lime"),
}


def concept_specs(name: str, count: int = 5, seed: int = 0) -> list[ShapeSpec]:
    kind, colour = CONCEPTS[name]
    assert colour in UNNAMED_COLOURS
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(count):
        background = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
        specs.append(ShapeSpec(kind=kind, colour=colour, size=SIZES[rng.integers(len(SIZES))],
                               position=POSITIONS[rng.integers(len(POSITIONS))], background=background,
                               rotation=float(rng.uniform(-15, 15)),
                               jitter=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03)))))
    return specs


def concept_images(name: str, count: int = 5, seed: int = 0) -> np.ndarray:
    """uint8 (count, 32, 32, 3) reference renders of a concept."""
    return np.stack([render(spec) for spec in concept_specs(name, count, seed)])


def write_concept(name: str, folder: Path, count: int = 5, seed: int = 0) -> list[Path]:
    """Reference images as PNG files (what a user would hand the runtime)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(concept_images(name, count, seed)):
        path = folder / f"{name}-{i}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
