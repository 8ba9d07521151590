"""Concepts for personalization: what tiny-sd can draw but no caption can ask for.

tiny-sd is trained on the continuous palette (``edgesdk.data.shapes``): shapes in any shade, captioned with a colour
word only near the eight named colours, and some uncaptioned shapes drawn hollow. A concept is a kind in a shade no
word names (pink, teal, ...), or a kind drawn as an outline (in varying named colours: the concept is the outline
itself, not a colour). Its reference images vary size, position, background and rotation, so what the images share
(and a learned word must capture) is exactly the concept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgesdk.data.shapes import COLOUR_NAMES, COLOURS, POSITIONS, SIZES, UNNAMED_COLOURS, ShapeSpec, render


@dataclass(frozen=True)
class Concept:
    kind: str  # also the natural initializer word
    colour: str | None  # a colour of UNNAMED_COLOURS, or None: each reference in a random named colour
    hollow: bool = False  # drawn as an outline

    @property
    def rgb(self) -> tuple[int, int, int] | None:
        """The concept's shade (0-255), None when the concept is not a colour."""
        return UNNAMED_COLOURS[self.colour] if self.colour else None


CONCEPTS: dict[str, Concept] = {
    "pink-star": Concept("star", "pink"),
    "teal-circle": Concept("circle", "teal"),
    "brown-square": Concept("square", "brown"),
    "grey-triangle": Concept("triangle", "grey"),
    "lime-cross": Concept("cross", "lime"),
    "hollow-square": Concept("square", None, hollow=True),
}


def concept_specs(name: str, count: int = 5, seed: int = 0) -> list[ShapeSpec]:
    concept = CONCEPTS[name]
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(count):
        if concept.colour is None:
            colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            fill, word = COLOURS[colour], colour
        else:
            fill, word = UNNAMED_COLOURS[concept.colour], ""
        backgrounds = [c for c in COLOUR_NAMES if c != word]
        background = backgrounds[rng.integers(len(backgrounds))]
        specs.append(ShapeSpec(kind=concept.kind, colour=word, size=SIZES[rng.integers(len(SIZES))],
                               position=POSITIONS[rng.integers(len(POSITIONS))], background=background,
                               rotation=float(rng.uniform(-15, 15)),
                               jitter=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
                               fill=fill, hollow=concept.hollow))
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
