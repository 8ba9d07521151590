"""A labelled image set made of real photo pixels, with nothing to download.

Every image is a random crop of one of scikit-learn's two sample photos (``china.jpg``, ``flower.jpg``, 427x640;
scale, aspect, flip and colour jitter drawn at random) with one large procedural shape (``edgesdk.data.shapes``)
painted on it, filled or as an outline. The label is the shape's kind and fill: 10 classes. The photo pixels give
the network, and the activation ranges a quantizer records, the statistics of camera images (textures, edges,
colour casts); the shape gives a label that a network learns in a few hundred steps from scratch.

The split is by pixels, not only by seed: training crops come from the left 70 % of each photo, held-out crops
from the right 30 %, so no held-out image shares a pixel of photo with any training image. Each image is a pure
function of (split, seed, index), so a set is the same in any order, on any machine, at any size.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgesdk.data.shapes import KINDS, POSITIONS, ShapeSpec, render
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file, atomic_folder

FILLS: tuple[str, ...] = ("filled", "outline")
CLASSES: tuple[str, ...] = tuple(f"{kind} {fill}" for kind in KINDS for fill in FILLS)
SPLITS: tuple[str, ...] = ("train", "held_out")
TRAIN_SHARE_OF_WIDTH = 0.7  # columns [0, 0.7 W) of each photo feed training crops, [0.7 W, W) held-out crops
# a crop's side as a share of the shorter side of its split's region (the held-out strip is 192 pixels wide)
CROP_SIDE = (0.35, 1.0)
ASPECT = (3 / 4, 4 / 3)
JITTER = 0.3  # brightness, contrast and saturation each scaled by a factor in [1 - JITTER, 1 + JITTER]
MIN_LUMA_GAP = 70.0  # a shape's colour differs from the mean luma of the pixels it covers by at least this (0..255)
# ImageNet's statistics: what torchvision and timm classifiers normalise with (the standard zoo follows them)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


PHOTO_FILES: tuple[str, ...] = ("china.jpg", "flower.jpg")


@functools.cache
def sample_photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two sample photos as (427, 640, 3) uint8 arrays: the JPEG files shipped inside the package,
    read directly (what ``sklearn.datasets.load_sample_images`` returns, without importing sklearn.datasets: 1 s)."""
    spec = importlib.util.find_spec("sklearn")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) / "datasets" / "images" if spec else None
    if folder is None or not all((folder / name).is_file() for name in PHOTO_FILES):
        raise EdgeSDKError("the photo image set reads scikit-learn's sample photos (china.jpg, flower.jpg): pip "
                           "install scikit-learn")
    photos = []
    for name in PHOTO_FILES:
        with Image.open(folder / name) as image:
            photos.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return tuple(photos)


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise EdgeSDKError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return SPLITS.index(split)


def _region(photo: np.ndarray, split: str) -> np.ndarray:
    edge = round(photo.shape[1] * TRAIN_SHARE_OF_WIDTH)
    return photo[:, :edge] if split == "train" else photo[:, edge:]


def _jitter(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation, each by a random factor (float32 HxWx3 in 0..255)."""
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, 3)
    pixels = pixels * brightness
    grey = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    pixels = grey.mean() + (pixels - grey.mean()) * contrast
    grey = (pixels @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return grey + (pixels - grey) * saturation


def _shape_colour(rng: np.random.Generator, covered_luma: float) -> np.ndarray:
    """A random colour far enough in brightness from what it covers that the shape is always visible."""
    colour = rng.integers(0, 256, 3).astype(np.float32)
    if abs(float(colour @ np.array([0.299, 0.587, 0.114], np.float32)) - covered_luma) < MIN_LUMA_GAP:
        colour = np.clip(colour + (-1.0 if covered_luma > 127.5 else 1.0) * 2 * MIN_LUMA_GAP, 0, 255)
    return colour


def make_image(split: str, seed: int, index: int, size: int) -> tuple[np.ndarray, int]:
    """Image ``index`` of a split: (size, size, 3) uint8 and its class (an index into ``CLASSES``)."""
    if size < 8:
        raise EdgeSDKError(f"image size must be at least 8 pixels, got {size}")
    rng = np.random.default_rng([seed, _split_code(split), index])
    photos = sample_photos()
    region = _region(photos[int(rng.integers(len(photos)))], split)
    height, width = region.shape[:2]
    side = rng.uniform(*CROP_SIDE) * min(height, width)
    aspect = float(np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1]))))
    crop_w, crop_h = min(width, round(side * aspect**0.5)), min(height, round(side / aspect**0.5))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    crop = Image.fromarray(region[top : top + crop_h, left : left + crop_w]).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    pixels = _jitter(pixels, rng)

    kind, fill = int(rng.integers(len(KINDS))), int(rng.integers(len(FILLS)))
    # a white shape on black is the shape's coverage (anti-aliased), the outline's hole included
    spec = ShapeSpec(kind=KINDS[kind], colour="white", size="large",
                     position=POSITIONS[int(rng.integers(len(POSITIONS)))], background="black",
                     rotation=float(rng.uniform(-30.0, 30.0)),
                     jitter=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
                     hollow=FILLS[fill] == "outline")
    coverage = render(spec, size)[..., :1].astype(np.float32) / 255.0
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    covered_luma = float((luma * coverage[..., 0]).sum() / max(coverage.sum(), 1e-6))
    pixels = pixels * (1.0 - coverage) + _shape_colour(rng, covered_luma) * coverage
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), kind * len(FILLS) + fill


@dataclass(frozen=True)
class PhotoShapes:
    """One split of the set, at one seed: ``images(start, count, size)`` -> (N, size, size, 3) uint8, (N,) int64."""

    split: str = "train"
    seed: int = 0

    def __post_init__(self) -> None:
        _split_code(self.split)

    def images(self, start: int, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        made = [make_image(self.split, self.seed, index, size) for index in range(start, start + count)]
        if not made:
            return np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), np.int64)
        return np.stack([m[0] for m in made]), np.array([m[1] for m in made], dtype=np.int64)


def normalised(images_uint8: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN,
               std: tuple[float, ...] = IMAGENET_STD) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, (x / 255 - mean) / std: what the standard zoo's models take."""
    from edgesdk.runtime.classify import normalise_images

    return normalise_images(images_uint8, mean, std)


def write_image_folder(folder: Path, count: int, size: int = 224, split: str = "held_out",
                       seed: int = 0) -> list[Path]:
    """``count`` images of a split as PNG files (``0000-<class>.png``...; sorted by name, they are in index order), in
    a folder that appears complete or not at all: what ``edgesdk export --calibration DIR`` takes."""
    if count < 1:
        raise EdgeSDKError(f"the image count must be at least 1, got {count}")
    folder = Path(folder)
    digits = max(4, len(str(count - 1)))
    names = []
    with atomic_folder(folder) as staging:
        for index in range(count):
            image, label = make_image(split, seed, index, size)
            name = f"{index:0{digits}d}-{CLASSES[label].replace(' ', '-')}.png"
            Image.fromarray(image).save(staging / name)
            names.append(name)
    return [folder / name for name in names]


def write_npz(path: Path, count: int, size: int = 224, split: str = "held_out", seed: int = 0,
              input_name: str = "image") -> Path:
    """``count`` images of a split, normalised for the standard zoo, as a .npz: ``input_name`` (N, 3, size, size)
    float32 and ``label`` (N,) int64. Written atomically."""
    if count < 1:
        raise EdgeSDKError(f"the image count must be at least 1, got {count}")
    images, labels = PhotoShapes(split, seed).images(0, count, size)
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{input_name: normalised(images), "label": labels})
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m edgesdk.data.photos DIR [--count N]``: held-out images as PNGs, for ``--calibration DIR``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=640)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--split", default="held_out", choices=SPLITS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        paths = write_image_folder(args.folder, args.count, args.size, args.split, args.seed)
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images ({args.size}x{args.size}, {args.split}) to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
