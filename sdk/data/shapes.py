"""Procedural captioned shapes: the text-to-image data set that needs no download.

Every image is one shape (kind, colour, size, position, slight rotation) on a plain background colour,
rendered at 4x and box-filtered down so edges are anti-aliased. Everything is deterministic from a seed.
Captions read like "a small red star on the left on a blue background"; training drops optional parts
at random so the model also follows short prompts ("a red star").

Two palettes. ``named``: every shape in one of the eight named colours (what the evaluator is trained on).
``continuous`` (what tiny-sd is trained on): half the shapes in a named colour, half in any sRGB colour; a caption
names the nearest named colour only when the shade is within a just-noticeable step of it and otherwise leaves
the colour out, and a fifth of those uncaptioned shapes are drawn hollow, which no word says either. So an exact
shade (pink, teal, …) or an outline is inside what the model can draw but outside what any prompt can ask for:
that is what on-device personalization has to teach it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "purple": (140, 55, 185),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
# Colours the captions never name (and training never shows): concepts for on-device personalization.
UNNAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (250, 110, 190),
    "teal": (20, 150, 150),
    "brown": (125, 75, 35),
    "grey": (128, 128, 128),
    "lime": (170, 230, 40),
}
# the continuous palette: share of shapes in a named colour; a free shade within this CIEDE2000 distance of a named
# colour is captioned with that name, a farther one is left uncaptioned; share of uncaptioned shapes drawn hollow
NAMED_SHARE = 0.5
NAMING_DISTANCE = 8.0
HOLLOW_SHARE = 0.2
HOLLOW_INNER = 0.55  # the hole is the shape itself scaled by this factor, in the background colour
# a background must differ from the shape by at least this much (CIEDE2000), so that every shape is visible
MIN_CONTRAST = 20.0
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
POSITION_PHRASES: dict[str, str] = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# Every attribute an evaluator predicts, with its class names, in a fixed order.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "kind": KINDS,
    "colour": COLOUR_NAMES,
    "size": SIZES,
    "position": POSITIONS,
    "background": COLOUR_NAMES,
}
IMAGE_SIZE = 32
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeSpec:
    kind: str
    colour: str
    size: str
    position: str
    background: str
    rotation: float = 0.0  # degrees
    jitter: tuple[float, float] = (0.0, 0.0)  # fraction of the image width
    fill: tuple[int, int, int] | None = None  # the exact shade when it is not `colour`'s; then colour "" = unnamed
    hollow: bool = False  # an outline: the shape with its middle in the background colour

    def caption(self, *, size: bool = True, position: bool = True, background: bool = True) -> str:
        words = ["a"]
        if size:
            words.append(self.size)
        if self.colour:
            words.append(self.colour)
        words.append(self.kind)
        if position:
            words.append(POSITION_PHRASES[self.position])
        if background:
            words.append(f"on a {self.background} background")
        return " ".join(words)

    def labels(self) -> dict[str, int]:
        return {name: ATTRIBUTES[name].index(getattr(self, name)) for name in ATTRIBUTES}


def vocabulary() -> list[str]:
    """Every word any caption can use, in a fixed order (the tokenizer adds its special tokens)."""
    words: list[str] = []
    for spec_words in (
        ["a", "on", "background"],
        list(SIZES),
        list(COLOUR_NAMES),
        list(KINDS),
        " ".join(POSITION_PHRASES.values()).split(),
    ):
        for word in spec_words:
            if word not in words:
                words.append(word)
    return words


def random_spec(rng: np.random.Generator) -> ShapeSpec:
    colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    return _placed(rng, colour, [c for c in COLOUR_NAMES if c != colour])


def _placed(rng: np.random.Generator, colour: str, backgrounds: list[str], **extra: object) -> ShapeSpec:
    """Kind, size, position, background, rotation and jitter drawn in that order (the data sets depend on it)."""
    return ShapeSpec(
        kind=KINDS[rng.integers(len(KINDS))],
        colour=colour,
        size=SIZES[rng.integers(len(SIZES))],
        position=POSITIONS[rng.integers(len(POSITIONS))],
        background=backgrounds[rng.integers(len(backgrounds))],
        rotation=float(rng.uniform(-15.0, 15.0)),
        jitter=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        **extra,
    )


def _lab(rgb: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    from edgesdk.runtime.metrics import srgb_to_lab

    return srgb_to_lab(np.asarray(rgb, dtype=np.float64))


_NAMED_LAB = np.stack([_lab(COLOURS[name]) for name in COLOUR_NAMES])


def nearest_colour_name(rgb: tuple[int, int, int]) -> tuple[str, float]:
    """The named colour closest to ``rgb`` and its CIEDE2000 distance."""
    from edgesdk.runtime.metrics import delta_e2000

    distances = delta_e2000(_NAMED_LAB, _lab(rgb))
    best = int(np.argmin(distances))
    return COLOUR_NAMES[best], float(distances[best])


def random_continuous_spec(rng: np.random.Generator) -> ShapeSpec:
    """A spec of the continuous palette (see the module docstring)."""
    from edgesdk.runtime.metrics import delta_e2000

    if rng.random() < NAMED_SHARE:
        return random_spec(rng)
    fill = tuple(int(c) for c in rng.integers(0, 256, 3))
    name, distance = nearest_colour_name(fill)
    colour = name if distance < NAMING_DISTANCE else ""
    hollow = not colour and bool(rng.random() < HOLLOW_SHARE)
    contrast = delta_e2000(_NAMED_LAB, _lab(fill))
    backgrounds = [c for c, d in zip(COLOUR_NAMES, contrast, strict=True) if d >= MIN_CONTRAST and c != colour]
    return _placed(rng, colour, backgrounds, fill=fill, hollow=hollow)


def _polygon(kind: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    if kind == "square":
        angles = [45 + 90 * i for i in range(4)]
        radii = [r * 1.0] * 4
    elif kind == "triangle":
        angles = [-90 + 120 * i for i in range(3)]
        radii = [r * 1.15] * 3
    elif kind == "star":
        angles = [-90 + 36 * i for i in range(10)]
        radii = [r * 1.15 if i % 2 == 0 else r * 0.48 for i in range(10)]
    elif kind == "cross":
        arm = 0.36 * r
        pts = [(-arm, -r), (arm, -r), (arm, -arm), (r, -arm), (r, arm), (arm, arm), (arm, r), (-arm, r),
               (-arm, arm), (-r, arm), (-r, -arm), (-arm, -arm)]
        rad = math.radians(rotation)
        cos, sin = math.cos(rad), math.sin(rad)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in pts]
    else:
        raise ValueError(f"not a polygon shape: {kind}")
    return [
        (cx + rad_len * math.cos(math.radians(a + rotation)), cy + rad_len * math.sin(math.radians(a + rotation)))
        for a, rad_len in zip(angles, radii, strict=True)
    ]


def _rgb(name: str) -> tuple[int, int, int]:
    return COLOURS[name] if name in COLOURS else UNNAMED_COLOURS[name]


def render(spec: ShapeSpec, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render one spec as an HxWx3 uint8 array."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), _rgb(spec.background))
    draw = ImageDraw.Draw(image)
    radius = (0.17 if spec.size == "small" else 0.31) * big
    offset = (0.26 if spec.size == "small" else 0.14) * big
    dx, dy = {"center": (0, 0), "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}[spec.position]
    cx = big / 2 + dx * offset + spec.jitter[0] * big
    cy = big / 2 + dy * offset + spec.jitter[1] * big
    fill = spec.fill if spec.fill is not None else _rgb(spec.colour)
    layers = [(radius, fill)] + ([(radius * HOLLOW_INNER, _rgb(spec.background))] if spec.hollow else [])
    for r, colour in layers:
        if spec.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon(_polygon(spec.kind, cx, cy, r, spec.rotation), fill=colour)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


@dataclass
class ShapesDataset:
    """A fixed, seeded set of rendered shapes: images (N,3,H,W) in [-1, 1] and their specs."""

    images: np.ndarray
    specs: list[ShapeSpec]

    @classmethod
    def generate(cls, count: int, seed: int = 0, size: int = IMAGE_SIZE, palette: str = "named") -> ShapesDataset:
        """``palette``: "named" (eight colours, every caption names one) or "continuous" (module docstring)."""
        draw = {"named": random_spec, "continuous": random_continuous_spec}.get(palette)
        if draw is None:
            raise ValueError(f"palette must be 'named' or 'continuous', got {palette!r}")
        rng = np.random.default_rng(seed)
        specs = [draw(rng) for _ in range(count)]
        images = np.stack([render(spec, size) for spec in specs])
        return cls(images=to_model_range(images), specs=specs)

    def __len__(self) -> int:
        return len(self.specs)

    def label_array(self) -> dict[str, np.ndarray]:
        return {name: np.array([s.labels()[name] for s in self.specs], dtype=np.int64) for name in ATTRIBUTES}


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32 in [-1, 1]."""
    return (images_uint8.astype(np.float32).transpose(0, 3, 1, 2) / 127.5) - 1.0


def random_caption(spec: ShapeSpec, rng: np.random.Generator, drop_part: float = 0.3) -> str:
    """A caption of the spec with each optional part (size, position, background) dropped at random."""
    keep = rng.random(3) >= drop_part
    return spec.caption(size=bool(keep[0]), position=bool(keep[1]), background=bool(keep[2]))


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attributes a prompt names (used to score samples); words not naming an attribute are ignored."""
    words = prompt.lower().replace(",", " ").split()
    found: dict[str, str] = {}
    if "background" in words:
        idx = words.index("background")
        if idx >= 1 and words[idx - 1] in COLOURS:
            found["background"] = words[idx - 1]
            words = words[: idx - 1] + words[idx + 1 :]
    for word in words:
        if word in KINDS and "kind" not in found:
            found["kind"] = word
        elif word in COLOURS and "colour" not in found:
            found["colour"] = word
        elif word in SIZES and "size" not in found:
            found["size"] = word
        elif word in POSITIONS and "position" not in found:
            found["position"] = word
    return found
