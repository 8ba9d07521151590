"""Synthetic adverse-weather video clips (rain, haze, snow) from clean stills, per spec §11 of viws-net.md.

A clip is T clean frames of one source scene seen through a smooth synthetic camera path, plus the same frames
degraded by one weather. Everything is rendered at the crop size (64x64 for training), so a pool of ~1500 clips
takes seconds, not minutes.

Sources: scikit-image's bundled photos (no download) and procedural scenes rendered with a depth map
(sky, mountains, a perspective ground plane, boxes, blobs and poles at different depths). Splits are by source.

Conventions:
- Images are float32 RGB in [0, 1]; depth d is in [0, 1] with 0 = near and 1 = far (sky), so t = exp(-beta d).
- Particle coordinates are output (crop) pixels; spec counts are per 256x256 and are scaled by the rendered area.
  Particles live on a torus slightly larger than the crop (the margin hides streaks and flakes entering or wrapping).
- Random streams are keyed by (seed, source): the camera stream never depends on the weather or the intensity, so
  the same (source, seed) gives the same clean clip for all weathers, and a weather's draws never depend on the
  intensity (particles are drawn for the largest intensity and the first ``round(n * intensity)`` are used).
- ``intensity`` multiplies particle counts and the scattering coefficients (beta): 0 gives the clean clip exactly,
  1 the spec's ranges, up to 2 for an "unseen", heavier-than-training evaluation set.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.fft import next_fast_len

from edgesdk.runtime.errors import EdgeSDKError

WEATHERS: tuple[str, ...] = ("rain", "haze", "snow")  # label = index, the reference mapping
LEVELS: tuple[str, ...] = ("light", "medium", "heavy")
MAX_INTENSITY = 2.0

# Photos that load offline from scikit-image's bundled data. "cat" is left out: it is the same picture as chelsea.
# Document and binary images (page, text, horse, logo) are left out: they are not scenes.
_TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut", "brick", "cell", "chelsea", "clock", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle", "retina",
)  # fmt: skip
_TEST_PHOTOS: tuple[str, ...] = ("camera", "coffee", "rocket")
_TRAIN_PROCEDURAL = range(0, 48)
_TEST_PROCEDURAL = range(48, 64)
_PROCEDURAL = re.compile(r"procedural-(\d+)")

_REF_AREA = 256.0 * 256.0  # spec particle counts are per 256^2
_BASE_SHORT_SIDE = 384  # photos are pre-shrunk to this short side; enough detail for 64-256 px crops
_PROCEDURAL_SIZE = 320
# The crop spans this fraction of the source's short side (random per clip). Procedural scenes are zoomed out more:
# their detail is coarser than a photo's.
_COVERAGE = {"photo": (0.2, 0.6), "procedural": (0.35, 0.9)}


@dataclass
class WeatherClip:
    degraded: np.ndarray  # (T, H, W, 3) float32 in [0, 1]
    clean: np.ndarray  # (T, H, W, 3) float32 in [0, 1]
    label: int  # 0 rain, 1 haze, 2 snow
    level: str  # "light" | "medium" | "heavy"
    params: dict  # JSON-serialisable record of every clip parameter + seed + source name


def source_names(split: str) -> list[str]:
    """Source scenes of a split: "train" | "test"; split BY SOURCE (no source in both). Photos and procedural scenes
    (procedural ones named e.g. "procedural-17"); test gets a few photos + some procedural scenes."""
    if split == "train":
        photos, procedural = _TRAIN_PHOTOS, _TRAIN_PROCEDURAL
    elif split == "test":
        photos, procedural = _TEST_PHOTOS, _TEST_PROCEDURAL
    else:
        raise EdgeSDKError(f"unknown split '{split}'; use 'train' or 'test'")
    return list(photos) + [f"procedural-{index}" for index in procedural]


def make_clip(
    source: str, weather: str | int, seed: int, frames: int = 5, size: int = 64, intensity: float = 1.0
) -> WeatherClip:
    """One clip: clean camera-moved frames of `source`, degraded by `weather`; deterministic in (source, seed)."""
    label = _weather_label(weather)
    _check_source(source)
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 1:
        raise EdgeSDKError(f"frames must be an integer >= 1, got {frames!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 16:
        raise EdgeSDKError(f"size must be an integer >= 16, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise EdgeSDKError(f"seed must be a non-negative integer, got {seed!r}")
    intensity = float(intensity)
    if not 0.0 <= intensity <= MAX_INTENSITY:
        raise EdgeSDKError(f"intensity must be in [0, {MAX_INTENSITY}], got {intensity}")
    frames, size, seed = int(frames), int(size), int(seed)

    key = zlib.crc32(source.encode())  # stable across processes, unlike hash()
    clean, depth, scene_shift, camera = _clean_clip(source, np.random.default_rng([seed, key, 0]), frames, size)
    rng = np.random.default_rng([seed, key, 1 + label])
    render = (_rain, _haze, _snow)[label]
    degraded, weather_params, density = render(rng, clean, depth, scene_shift, intensity)
    if intensity == 0.0:
        degraded = clean.copy()  # the renderers already return J exactly here; this makes it explicit and free
    level = LEVELS[min(2, int(density * 3.0))]
    params = {
        "source": source, "seed": seed, "weather": WEATHERS[label], "label": label, "level": level,
        "intensity": intensity, "frames": frames, "size": size, "camera": camera, "weather_params": weather_params,
    }  # fmt: skip
    return WeatherClip(
        degraded=np.clip(degraded, 0.0, 1.0).astype(np.float32),
        clean=clean,
        label=label,
        level=level,
        params=params,
    )


def make_clip_set(
    split: str, count_per_weather: int, frames: int = 5, size: int = 64, seed: int = 0, workers: int = 1
) -> list[WeatherClip]:
    """Balanced set: count_per_weather clips of each weather, sources cycled over the split's sources; train and test
    seeds disjoint (e.g. test seeds offset by 10**6). Ordered so that consecutive triples are (rain, haze, snow).

    ``workers`` > 1 renders the clips in that many processes; every clip depends only on its own (source, seed), so
    the set is the same for any number of workers."""
    sources = source_names(split)
    if isinstance(count_per_weather, bool) or not isinstance(count_per_weather, int) or count_per_weather < 0:
        raise EdgeSDKError(f"count_per_weather must be a non-negative integer, got {count_per_weather!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EdgeSDKError(f"seed must be a non-negative integer, got {seed!r}")
    # Clip seeds: train uses [seed*10**7, seed*10**7 + 3*count), test the same range + 10**6, so the two never
    # share a seed for count_per_weather < 333,333 (and their sources differ anyway).
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise EdgeSDKError(f"workers must be a positive integer, got {workers!r}")
    base = seed * 10**7 + (10**6 if split == "test" else 0)
    jobs = []
    for index in range(count_per_weather):
        for label in range(len(WEATHERS)):
            position = 3 * index + label  # consecutive clips use different sources, so a triple mixes scenes
            jobs.append((sources[position % len(sources)], label, base + position, frames, size))
    if workers == 1 or len(jobs) < 2 * workers:
        return [make_clip(*job) for job in jobs]
    import multiprocessing

    # spawn, not fork: the caller may hold torch / CUDA state that a forked child must not inherit
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(make_clip, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


# ----------------------------------------------------------------------------------------------------- validation


def _weather_label(weather: str | int) -> int:
    if isinstance(weather, str):
        if weather in WEATHERS:
            return WEATHERS.index(weather)
    elif isinstance(weather, int | np.integer) and not isinstance(weather, bool) and 0 <= weather < len(WEATHERS):
        return int(weather)
    raise EdgeSDKError(f"unknown weather {weather!r}; use one of {', '.join(WEATHERS)} or its index 0-2")


def _check_source(source: str) -> None:
    if not isinstance(source, str) or not (
        source in _TRAIN_PHOTOS or source in _TEST_PHOTOS or _PROCEDURAL.fullmatch(source)
    ):
        raise EdgeSDKError(f"unknown source {source!r}; pick one from source_names('train') or source_names('test')")


# ------------------------------------------------------------------------------------------------ source scenes


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) at float pixel coordinates (any shape); edges clamp. One gather for all channels."""
    height, width = image.shape[:2]
    ys = np.clip(ys, 0.0, height - 1.0)
    xs = np.clip(xs, 0.0, width - 1.0)
    y0 = np.minimum(ys.astype(np.int64), height - 2) if height > 1 else np.zeros(ys.shape, np.int64)
    x0 = np.minimum(xs.astype(np.int64), width - 2) if width > 1 else np.zeros(xs.shape, np.int64)
    wy = (ys - y0)[..., None].astype(np.float32)
    wx = (xs - x0)[..., None].astype(np.float32)
    flat = image.reshape(height * width, -1)
    index = y0 * width + x0
    top = flat[index] * (1 - wx) + flat[index + 1] * wx
    bottom = flat[index + width] * (1 - wx) + flat[index + width + 1] * wx
    return top * (1 - wy) + bottom * wy


def _shrink(image: np.ndarray, factor: float) -> np.ndarray:
    """Downscale (H, W, C) by `factor` >= 1 with a Gaussian anti-alias prefilter."""
    if factor <= 1.0:
        return image
    sigma = 0.5 * math.sqrt(factor * factor - 1.0)  # the usual prefilter width for a factor-f decimation
    blurred = ndimage.gaussian_filter(image, (sigma, sigma, 0.0), mode="nearest")
    height, width = (max(2, int(round(n / factor))) for n in image.shape[:2])
    ys = (np.arange(height) + 0.5) * (image.shape[0] / height) - 0.5
    xs = (np.arange(width) + 0.5) * (image.shape[1] / width) - 0.5
    return _bilinear(blurred, ys[:, None], xs[None, :]).astype(np.float32)


def _load_photo(name: str) -> np.ndarray:
    from skimage import data  # imported lazily: only photo sources need it

    picture = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    picture = np.asarray(picture)
    if picture.ndim == 2:  # grey photos become grey RGB
        picture = np.repeat(picture[..., None], 3, axis=2)
    scale = 255.0 if np.issubdtype(picture.dtype, np.integer) else 1.0
    return picture[..., :3].astype(np.float32) / np.float32(scale)


@functools.cache
def _base(source: str) -> tuple[np.ndarray, bool]:
    """(H, W, 4) float32 at the base resolution: RGB + auxiliary channel, and whether the source has rendered depth.

    The auxiliary channel is the rendered depth (procedural) or blurred inverse luminance (photos, for the depth
    prior of §11). It is resampled with the RGB so depth follows the camera path exactly.
    """
    match = _PROCEDURAL.fullmatch(source)
    if match:
        return _render_procedural(int(match.group(1))), True
    rgb = _load_photo(source)
    rgb = _shrink(rgb, min(rgb.shape[:2]) / _BASE_SHORT_SIDE)
    luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    inverse = 1.0 - ndimage.gaussian_filter(luminance, 0.03 * min(rgb.shape[:2]), mode="nearest")
    return np.concatenate([rgb, inverse[..., None]], axis=2).astype(np.float32), False


@functools.lru_cache(maxsize=512)
def _level(source: str, level: int) -> np.ndarray:
    """Half-octave pyramid level: the base shrunk by 2**(level/2), so a crop never needs more than a 1.41x squeeze
    by the bilinear warp (which would alias)."""
    base, _ = _base(source)
    return base if level == 0 else _shrink(base, 2.0 ** (level / 2.0))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean noise in [-1, 1] with features about `cell` pixels across (smoothed white noise on a coarse grid,
    bilinearly enlarged: the smoothing already removes the grid, so no costly spline zoom is needed)."""
    step = max(1.0, cell / 2.0)
    coarse_shape = (int(shape[0] / step) + 3, int(shape[1] / step) + 3)
    coarse = ndimage.gaussian_filter(rng.normal(size=coarse_shape), 1.0, mode="wrap").astype(np.float32)
    ys, xs = np.meshgrid(np.arange(shape[0]) / step, np.arange(shape[1]) / step, indexing="ij")
    field = _bilinear(coarse[..., None], ys, xs)[..., 0]
    field = field - field.mean()
    return (field / (np.abs(field).max() + 1e-8)).astype(np.float32)


def _render_procedural(index: int) -> np.ndarray:
    """A procedural outdoor scene with depth: sky with clouds, hills, a perspective ground plane and 10-24 objects
    standing on it (buildings with windows, brick or plank walls, trees and bushes, poles), painted far to near.
    Every surface carries fine texture so that even a small crop has detail to restore. Returns (n, n, 4)."""
    n = _PROCEDURAL_SIZE
    rng = np.random.default_rng([index, 0x5CE9E])
    ys = ((np.arange(n, dtype=np.float32) + 0.5) / n)[:, None]
    xs = ((np.arange(n, dtype=np.float32) + 0.5) / n)[None, :]
    horizon = rng.uniform(0.25, 0.5)
    near = 0.08  # ground depth d(y) = near / (y - horizon + near): 1 at the horizon, ~0.12 at the bottom
    fine, medium, large = (_smooth_noise(rng, (n, n), cell) for cell in (1.5, 5.0, 40.0))
    rgb = np.zeros((n, n, 3), np.float32)
    depth = np.ones((n, n), np.float32)

    # Sky: a vertical gradient between two random tints plus soft clouds.
    zenith = rng.uniform([0.15, 0.3, 0.55], [0.5, 0.6, 0.95]).astype(np.float32)
    skyline = np.clip(zenith + rng.uniform(0.2, 0.45) + rng.uniform(-0.1, 0.1, 3), 0, 1).astype(np.float32)
    mix = np.clip(ys / horizon, 0, 1)[..., None]
    rgb[:] = zenith * (1 - mix) + skyline * mix
    clouds = np.clip(large * rng.uniform(0.8, 1.6) + 0.15 * medium, 0, 1)[..., None]
    rgb += clouds * (0.95 - rgb)

    # Two hill ranges: far and bluish (d ~ 0.9), nearer and wooded (d ~ 0.75).
    for depth_value, height, tone, texture in ((0.9, 0.14, 0.4, 0.06), (0.75, 0.08, 0.2, 0.2)):
        if rng.random() < 0.35:
            continue
        profile = _smooth_noise(rng, (1, n), rng.uniform(20.0, 60.0))[0] + 0.2 * fine[0]
        ridge = horizon - rng.uniform(0.3, 1.0) * height * (0.6 + 0.4 * profile)[None, :]
        mask = (ys >= ridge) & (ys <= horizon)
        colour = rng.uniform([0.15, 0.25, 0.15], [0.45, 0.5, 0.5])
        hill = np.clip((1 - tone) * colour + tone * skyline + texture * (fine + medium)[..., None] * colour, 0, 1)
        rgb = np.where(mask[..., None], hill, rgb)
        depth = np.where(mask, np.float32(depth_value), depth)

    # Ground plane: texture coordinates (X, Z) of a flat ground seen by a level pinhole camera.
    top_row = int(horizon * n)
    gy = ys[top_row:]
    distance = np.maximum(gy - horizon, 1e-3)
    ground_depth = np.broadcast_to(near / (distance + near), (n - top_row, n))
    zc = 0.1 / distance
    xc = (xs - 0.5) * zc * 2.0
    kind = rng.integers(4)
    if kind == 0:  # paving tiles
        pattern = ((np.floor(xc / 0.4) + np.floor(zc / 0.4)) % 2) * 2 - 1
    elif kind == 1:  # furrows running away from the camera
        pattern = np.sin(2 * np.pi * xc * 1.5)
    elif kind == 2:  # rows across the view
        pattern = np.sin(2 * np.pi * zc * 1.2)
    else:  # a road with a dashed centre line on grass
        pattern = np.where(np.abs(xc) < 0.8, -1.0, 0.5) + np.where((np.abs(xc) < 0.05) & (zc % 1.0 < 0.5), 2.5, 0.0)
    # Far ground compresses the pattern below a pixel: fade it out with depth instead of aliasing.
    fade = np.clip((0.85 - ground_depth) / 0.5, 0, 1)
    local = (slice(top_row, n), slice(0, n))
    shade = (0.15 * pattern + 0.25 * fine[local]) * fade + 0.12 * medium[local] + 0.1 * large[local]
    ground_colour = rng.uniform([0.25, 0.25, 0.15], [0.6, 0.55, 0.45]).astype(np.float32)
    rgb[local] = np.clip(ground_colour * (1 + shade[..., None]), 0, 1)
    depth[local] = ground_depth

    # Objects standing on the ground, painted far (near the horizon) to near, each inside its bounding box.
    # Feet cluster towards the horizon (u^3), so most objects are distant and small and a few are near and large.
    feet = horizon + 0.015 + (1.08 - horizon) * rng.random(rng.integers(10, 25)) ** 3
    for foot in np.sort(feet):
        scale = foot - horizon  # apparent size of an object on the ground grows with its distance below the horizon
        centre = rng.uniform(-0.05, 1.05)
        colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        object_depth = np.float32(near / (scale + near))
        kind = rng.choice(["box", "blob", "pole"], p=[0.5, 0.35, 0.15])
        if kind == "box":
            half, height = rng.uniform(0.15, 0.6) * scale, rng.uniform(0.4, 2.0) * scale
            box = _box_slices(n, centre - half, centre + half * 1.35, foot - height, foot)
            if box is None:
                continue
            bx, by = xs[:, box[1]], ys[box[0]]
            u, v = (bx - centre + half) / (2 * half), (by - foot + height) / height
            face = (u <= 1.0) & (v >= 0.0)
            style = rng.integers(3)
            if style == 0:  # a grid of windows with frames
                columns, rows = rng.integers(2, 7), rng.integers(2, 9)
                cu, cv = (u * columns) % 1, (v * rows) % 1
                texture = np.where((cu > 0.25) & (cu < 0.75) & (cv > 0.25) & (cv < 0.8), -0.5, 0.0)
                texture = texture + np.where((np.abs(cu - 0.5) < 0.03) & (cv > 0.25) & (cv < 0.8), 0.3, 0.0)
            elif style == 1:  # bricks: offset rows
                rows = rng.integers(6, 20)
                row = np.floor(v * rows)
                brick = ((u * rows * 0.5 + 0.5 * (row % 2)) % 1 < 0.08) | ((v * rows) % 1 < 0.12)
                texture = np.where(brick, 0.35, 0.0) - 0.1 * (row % 3 == 0)
            else:  # planks
                texture = 0.15 * np.sign(np.sin(2 * np.pi * u * rng.integers(3, 12)))
            texture = texture + 0.12 * fine[box] + 0.08 * medium[box] + 0.2 * (0.5 - u) * rng.choice([-1, 1])
            # A darker side face on the right, receding towards the horizon.
            side = (u > 1.0) & (by >= foot - height + (bx - centre - half) * 0.6)
            _paint(rgb, depth, box, face, colour * (1 + texture[..., None]), object_depth)
            _paint(rgb, depth, box, side, colour * (0.55 + 0.1 * fine[box][..., None]), object_depth * 1.02)
        elif kind == "blob":
            rx, ry = rng.uniform(0.12, 0.45) * scale, rng.uniform(0.2, 0.6) * scale
            cy = foot - ry * rng.uniform(0.8, 1.8)
            box = _box_slices(n, centre - 1.3 * rx, centre + 1.3 * rx, cy - 1.3 * ry, foot)
            if box is None:
                continue
            bx, by = xs[:, box[1]], ys[box[0]]
            trunk = (np.abs(bx - centre) <= 0.08 * rx + 0.002) & (by >= cy)
            if rng.random() < 0.6:
                bark = np.array([0.3, 0.2, 0.12], np.float32) * (1 + 0.3 * fine[box][..., None])
                _paint(rgb, depth, box, trunk, bark, object_depth)
            radius = ((bx - centre) / rx) ** 2 + ((by - cy) / ry) ** 2
            mask = radius <= 1.0 + 0.3 * medium[box]  # ragged outline
            if rng.random() < 0.6:  # mostly foliage green
                colour = colour * np.array([0.5, 1.0, 0.5], np.float32)
            light = -0.3 * ((bx - centre) / rx + (by - cy) / ry) / 2
            texture = 0.45 * fine[box] + 0.2 * medium[box] + light
            _paint(rgb, depth, box, mask, colour * (1 + texture[..., None]), object_depth)
        else:
            half, height = rng.uniform(0.015, 0.04) * scale + 0.002, rng.uniform(1.2, 3.0) * scale
            box = _box_slices(n, centre - half, centre + half, foot - height, foot)
            if box is None:
                continue
            shade = 0.5 + 0.3 * (xs[:, box[1]] - centre) / half + 0.1 * fine[box]
            _paint(rgb, depth, box, np.ones(shade.shape, bool), colour * shade[..., None], object_depth)

    # A light blur anti-aliases the hard object edges painted above.
    scene = np.concatenate([np.clip(rgb, 0, 1), depth[..., None]], axis=2)
    return ndimage.gaussian_filter(scene, (0.5, 0.5, 0.0), mode="nearest").astype(np.float32)


def _box_slices(n: int, left: float, right: float, top: float, bottom: float) -> tuple[slice, slice] | None:
    """Pixel slices (rows, columns) of a box given in [0, 1] scene units, or None when it is off the canvas."""
    x0, x1 = max(0, int(left * n)), min(n, int(math.ceil(right * n)) + 1)
    y0, y1 = max(0, int(top * n)), min(n, int(math.ceil(bottom * n)) + 1)
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def _paint(
    rgb: np.ndarray, depth: np.ndarray, box: tuple[slice, slice], mask: np.ndarray, colour: np.ndarray, value: float
) -> None:
    """Painter's algorithm inside a box: later (nearer) objects overwrite colour and depth."""
    mask = np.broadcast_to(mask, rgb[box].shape[:2])
    rgb[box] = np.where(mask[..., None], np.clip(np.broadcast_to(colour, rgb[box].shape), 0, 1), rgb[box])
    depth[box] = np.where(mask, np.float32(value), depth[box])


# ------------------------------------------------------------------------------------------------ camera + depth


def _clean_clip(
    source: str, rng: np.random.Generator, frames: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Clean frames (T, S, S, 3), depth (T, S, S), per-frame screen shift of the scene (T, 2) as (dx, dy), params."""
    base, rendered = _base(source)
    short = min(base.shape[:2])
    travel = 3.0 * (frames - 1) + 1.5  # worst-case path length in output pixels (speed <= 3 plus jitter)
    fits = (short - 4.0) / (1.06 * size + travel)  # the largest source-px-per-output-px that keeps the path inside
    coverage = _COVERAGE["procedural" if rendered else "photo"]
    high = min(coverage[1] * short / size, fits)
    low = min(coverage[0] * short / size, high)
    scale = float(rng.uniform(low, high))
    level = max(0, int(math.floor(2.0 * math.log2(scale)))) if scale >= 1.0 else 0
    residual = scale / 2.0 ** (level / 2.0)  # what the warp still squeezes: in [1, 1.41) unless upsampling
    canvas = _level(source, level)

    speed, heading = rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
    zoom_end, roll_end = rng.uniform(-0.02, 0.02), np.deg2rad(rng.uniform(-1.0, 1.0))
    gamma = rng.uniform(0.7, 1.5)
    jitter = np.clip(rng.normal(0.0, 0.2, (frames, 2)), -0.5, 0.5)
    jitter[0] = 0.0
    step = np.arange(frames, dtype=np.float64)
    progress = step / max(1, frames - 1)
    offset = step[:, None] * speed * np.array([np.cos(heading), np.sin(heading)]) + jitter  # (T, 2) output px
    zoom = 1.0 + zoom_end * progress
    roll = roll_end * progress

    # Place the path so every frame's rotated, zoomed crop stays inside the canvas (1 px spare for bilinear).
    extent = residual * 0.52 * size + 1.0
    centre = []
    for axis, length in ((0, canvas.shape[1]), (1, canvas.shape[0])):
        low_c = extent - residual * offset[:, axis].min()
        high_c = length - 1.0 - extent - residual * offset[:, axis].max()
        centre.append(rng.uniform(low_c, high_c) if high_c > low_c else (low_c + high_c) / 2.0)

    grid = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    ux, uy = grid[None, None, :], grid[None, :, None]
    cos, sin = np.cos(roll)[:, None, None], np.sin(roll)[:, None, None]
    z = zoom[:, None, None]
    xs = centre[0] + residual * (offset[:, 0, None, None] + z * (cos * ux - sin * uy))
    ys = centre[1] + residual * (offset[:, 1, None, None] + z * (sin * ux + cos * uy))
    sampled = _bilinear(canvas, ys, xs)  # (T, S, S, 4)
    clean = np.clip(sampled[..., :3], 0.0, 1.0).astype(np.float32)
    if rendered:
        depth = sampled[..., 3]
    else:
        # Photos: horizon prior (far at the top of the picture) blended 20 % with blurred inverse luminance.
        prior = np.clip(1.0 - ys / (canvas.shape[0] - 1.0), 0.0, 1.0) ** gamma
        depth = 0.8 * prior + 0.2 * sampled[..., 3]
    depth = np.clip(depth, 0.0, 1.0).astype(np.float32)
    # A camera moving by +offset makes the scene (and the air in front of it) move by -offset on screen.
    scene_shift = -np.diff(offset, axis=0, prepend=offset[:1])
    camera = {
        "scale": scale, "pyramid_level": level, "residual_scale": residual, "speed": float(speed),
        "heading_rad": float(heading), "zoom_end": float(zoom_end), "roll_end_rad": float(roll_end),
        "centre_xy": [float(c) for c in centre], "jitter": jitter.tolist(),
        "depth": "rendered" if rendered else {"gamma": float(gamma), "inverse_luminance_weight": 0.2},
    }  # fmt: skip
    return clean, depth, scene_shift, camera


# ------------------------------------------------------------------------------------------------------ particles


def _advance(start: np.ndarray, steps: np.ndarray, respawn_x: np.ndarray, grid: int) -> np.ndarray:
    """Move persistent particles on a grid x grid torus. start (n, 2) as (x, y); steps (T, n, 2) is the displacement
    into frame k (steps[0] unused); a particle leaving through the top or bottom re-enters on the other side at a new
    x (respawn_x (T, n)), so the same drop never falls twice in one place. Returns (T, n, 2)."""
    tracks = np.empty(steps.shape, dtype=np.float64)
    position = start.astype(np.float64)
    tracks[0] = position
    for k in range(1, steps.shape[0]):
        position = position + steps[k]
        left = (position[:, 1] < 0) | (position[:, 1] >= grid)
        position[:, 1] %= grid
        position[left, 0] = respawn_x[k, left]
        position[:, 0] %= grid
        tracks[k] = position
    return tracks


def _splat(tracks: np.ndarray, weight: np.ndarray, group: np.ndarray, groups: int, grid: int) -> np.ndarray:
    """Deposit particles as bilinear (sub-pixel) deltas: tracks (T, n, 2), weight (n,), group (n,) -> (G, T, g, g)."""
    frames = tracks.shape[0]
    x, y = tracks[..., 0], tracks[..., 1]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    plane = (group[None, :] * frames + np.arange(frames)[:, None]) * grid * grid
    total = np.zeros(groups * frames * grid * grid)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            index = plane + ((y0 + dy) % grid) * grid + (x0 + dx) % grid
            total += np.bincount(index.ravel(), (weight[None, :] * wy * wx).ravel(), minlength=total.size)
    return total.reshape(groups, frames, grid, grid)


def _blur_spectrum(grid: int, sigma: float, length: float, direction: tuple[float, float]) -> np.ndarray:
    """rfft2 transfer function of a Gaussian (sigma px) convolved with a normalised line of `length` px along
    direction (dx, dy): an anti-aliased motion-blur streak, applied by multiplication."""
    fy = np.fft.fftfreq(grid)[:, None]
    fx = np.fft.rfftfreq(grid)[None, :]
    gaussian = np.exp(-2.0 * np.pi**2 * sigma**2 * (fx**2 + fy**2))
    return gaussian * np.sinc(length * (fx * direction[0] + fy * direction[1]))


def _stamp_log_transmission(
    tracks: np.ndarray, radius: np.ndarray, alpha: np.ndarray, aspect: np.ndarray, angle: np.ndarray, grid: int
) -> np.ndarray:
    """Sum over flakes of log(1 - alpha g) on the torus, g a soft (optionally elliptical) disc; (T, g, g).

    exp() of this is the exact product over flakes of (1 - alpha_p g_p) of §11's matte."""
    frames = tracks.shape[0]
    if tracks.shape[1] == 0:
        return np.zeros((frames, grid, grid))
    # Flat core with a Gaussian falloff, sized so g = 1/2 at rho = radius: the flake covers about pi r^2.
    soft = 0.25 * radius + 0.15
    core = np.maximum(radius - 1.1774 * soft, 0.0)
    reach = int(math.ceil(float(np.max(aspect * (core + 2.5 * soft)))))
    offsets = np.arange(-reach, reach + 1)
    x, y = tracks[..., 0], tracks[..., 1]
    cx, cy = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    # float32 is ample for footprints and halves the cost of this, the snow renderer's hot loop.
    f32 = np.float32
    dx = (cx - x).astype(f32)[..., None, None] + offsets.astype(f32)[None, None, None, :]  # (T, n, 1, K)
    dy = (cy - y).astype(f32)[..., None, None] + offsets.astype(f32)[None, None, :, None]  # (T, n, K, 1)
    cos, sin = (np.asarray(v, f32)[None, :, None, None] for v in (np.cos(angle), np.sin(angle)))
    along = (dx * cos + dy * sin) / aspect.astype(f32)[None, :, None, None]
    across = dy * cos - dx * sin
    rho = np.sqrt(along * along + across * across)
    falloff = np.maximum(rho - core.astype(f32)[None, :, None, None], f32(0.0))
    g = np.exp(-(falloff * falloff) * (0.5 / soft.astype(f32) ** 2)[None, :, None, None])
    value = np.log1p(-np.minimum(alpha.astype(f32)[None, :, None, None] * g, f32(0.999)))
    rows = (cy[..., None, None] + offsets[None, None, :, None]) % grid
    cols = (cx[..., None, None] + offsets[None, None, None, :]) % grid
    index = (np.arange(frames)[:, None, None, None] * grid + rows) * grid + cols
    total = np.bincount(index.ravel(), value.ravel(), minlength=frames * grid * grid)
    return total.reshape(frames, grid, grid)


def _veil(image: np.ndarray, depth: np.ndarray, beta: float, airlight: np.ndarray | float) -> np.ndarray:
    """I <- I t + A (1 - t), t = exp(-beta d), written as I + (1 - t)(A - I) so beta = 0 returns I bit-exactly."""
    if beta == 0.0:
        return image
    return image + (1.0 - np.exp(-beta * depth))[..., None] * (airlight - image)


def _tercile(value: float, low: float, high: float) -> float:
    """Position of `value` in the spec range [low, high], for the light/medium/heavy label (clipped to [0, 1))."""
    return float(np.clip((value - low) / (high - low), 0.0, 0.999))


# ---------------------------------------------------------------------------------------------------------- rain


def _rain(
    rng: np.random.Generator, clean: np.ndarray, depth: np.ndarray, scene_shift: np.ndarray, intensity: float
) -> tuple[np.ndarray, dict, float]:
    frames, size = clean.shape[:2]
    theta = np.deg2rad(rng.uniform(-25.0, 25.0))
    count = rng.uniform(200.0, 1500.0)
    speed = rng.uniform(15.0, 40.0)
    exposure = rng.uniform(0.3, 1.0)
    beta_r, airlight = rng.uniform(0.0, 0.4), rng.uniform(0.75, 0.95)
    direction = (math.sin(theta), math.cos(theta))  # (dx, dy): y grows downwards, theta from vertical

    bins = 4  # streak length and width are shared within a depth bin, so one FFT filter per bin
    centres = (np.arange(bins) + 0.5) / bins
    lengths = exposure * speed * (1.0 - 0.7 * centres)
    sigmas = 1.2 - 0.7 * centres  # 0.5-1.2 px by depth: near drops are 1-3 px wide, far ones 1 px
    sigmas[0] += 0.3  # near drops are also slightly out of focus
    margin = int(math.ceil(lengths[0] / 2.0 + 3.0 * sigmas.max() + 2.0))
    grid = next_fast_len(size + 2 * margin, real=True)
    pool = int(round(count * grid * grid / _REF_AREA * MAX_INTENSITY))
    used = int(round(count * grid * grid / _REF_AREA * intensity))

    start = rng.uniform(0.0, grid, (pool, 2))
    z = 1.0 - rng.random(pool)  # (0, 1], 0 = near
    brightness = rng.uniform(0.5, 1.0, pool) * (1.0 - 0.6 * z)
    respawn_x = rng.uniform(0.0, grid, (frames, pool))[:, :used]
    start, z, brightness = start[:used], z[:used], brightness[:used]

    velocity = speed * np.stack([np.full(used, direction[0]), np.full(used, direction[1])], axis=1)
    steps = (velocity * (1.0 - 0.5 * z)[:, None])[None] + scene_shift[:, None, :]
    tracks = _advance(start, steps, respawn_x, grid)
    depth_bin = np.minimum((z * bins).astype(np.int64), bins - 1)
    # Weight = blob integral (peak a times 2 pi sigma^2), so after the Gaussian the blob peaks at about a.
    deltas = _splat(tracks, brightness * 2.0 * np.pi * sigmas[depth_bin] ** 2, depth_bin, bins, grid)
    spectrum = sum(
        np.fft.rfft2(deltas[b]) * _blur_spectrum(grid, sigmas[b], lengths[b], direction) for b in range(bins)
    )
    streaks = np.fft.irfft2(spectrum, s=(grid, grid))[:, margin : margin + size, margin : margin + size]
    streaks = np.clip(streaks, 0.0, 1.0)[..., None]  # FFT ringing leaves tiny negatives

    degraded = clean + streaks * (1.0 - clean)  # screen blend 1 - (1 - J)(1 - S), exact at S = 0
    degraded = _veil(degraded, depth, beta_r * intensity, airlight)
    params = {
        "wind_deg": float(np.rad2deg(theta)), "drops_per_256sq": float(count), "fall_speed": float(speed),
        "exposure": float(exposure), "accumulation_beta": float(beta_r), "airlight": float(airlight),
        "drops_rendered": used, "grid": grid, "margin": margin, "depth_bins": bins,
        "streak_lengths": lengths.tolist(), "streak_sigmas": sigmas.tolist(),
    }  # fmt: skip
    return degraded, params, _tercile(count * intensity, 200.0, 1500.0)


# ---------------------------------------------------------------------------------------------------------- haze


def _haze(
    rng: np.random.Generator, clean: np.ndarray, depth: np.ndarray, scene_shift: np.ndarray, intensity: float
) -> tuple[np.ndarray, dict, float]:
    frames, size = clean.shape[:2]
    beta = rng.uniform(0.6, 3.0)
    airlight = np.clip(rng.uniform(0.7, 1.0) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)
    wind_speed, wind_heading = rng.uniform(0.2, 1.0), rng.uniform(0.0, 2 * np.pi)
    blur_sigma = rng.uniform(0.0, 1.0)
    cell = rng.uniform(16.0, 40.0)  # output px: haze patches larger than most objects, smaller than the view

    # n(x) lives in scene coordinates (it is attached to the scene) and drifts with the wind: sample a smooth field
    # at the scene position of each pixel, i.e. undo the camera's accumulated shift, minus wind * k.
    wind = wind_speed * np.array([np.cos(wind_heading), np.sin(wind_heading)])
    k = np.arange(frames, dtype=np.float64)
    shift = np.cumsum(-scene_shift, axis=0) - wind[None, :] * k[:, None]  # (T, 2) as (dx, dy), output px
    low = np.floor(shift.min(axis=0)) - 1.0
    extent = np.ceil(shift.max(axis=0) - low).astype(int) + size + 2
    field = _smooth_noise(rng, (int(extent[1]), int(extent[0])), cell)[..., None]  # in [-1, 1]
    grid = np.arange(size, dtype=np.float64)
    px = grid[None, None, :] + (shift[:, 0] - low[0])[:, None, None]
    py = grid[None, :, None] + (shift[:, 1] - low[1])[:, None, None]
    noise = _bilinear(field, np.broadcast_to(py, (frames, size, size)), np.broadcast_to(px, (frames, size, size)))
    noise = noise[..., 0].astype(np.float64)

    beta_map = beta * intensity * (1.0 + 0.3 * noise)
    transmission = np.exp(-beta_map * depth)[..., None]
    degraded = clean + (1.0 - transmission) * (airlight - clean)
    if intensity > 0.0 and blur_sigma > 0.05:  # real haze also softens detail, more where it is thicker
        soft = ndimage.gaussian_filter(degraded, (0.0, blur_sigma, blur_sigma, 0.0), mode="nearest")
        degraded = degraded + (1.0 - transmission) * (soft - degraded)
    params = {
        "beta": float(beta), "airlight_rgb": airlight.tolist(), "heterogeneity": 0.3,
        "wind_px_per_frame": float(wind_speed), "wind_heading_rad": float(wind_heading),
        "noise_cell_px": float(cell), "blur_sigma": float(blur_sigma),
    }  # fmt: skip
    return degraded, params, _tercile(beta * intensity, 0.6, 3.0)


# ---------------------------------------------------------------------------------------------------------- snow

# layer: (count per 256^2, radius px, opacity, fall speed px/frame, parallax factor for wind and camera)
_SNOW_LAYERS: dict[str, tuple[tuple[float, float], ...]] = {
    "far": ((400, 1500), (0.5, 1.5), (0.3, 0.6), (1.0, 3.0), (0.4, 0.4)),
    "mid": ((100, 400), (1.5, 3.0), (0.5, 0.8), (3.0, 6.0), (0.7, 0.7)),
    "near": ((10, 60), (3.0, 7.0), (0.6, 1.0), (6.0, 12.0), (1.0, 1.0)),
}


def _snow(
    rng: np.random.Generator, clean: np.ndarray, depth: np.ndarray, scene_shift: np.ndarray, intensity: float
) -> tuple[np.ndarray, dict, float]:
    frames, size = clean.shape[:2]
    density = rng.random()  # one draw sets all three layer counts, so "heavy" snow is heavy in every layer
    wind = rng.uniform(-2.0, 2.0)
    colour = rng.uniform(0.85, 1.0)
    beta_s, airlight = rng.uniform(0.0, 0.8), rng.uniform(0.75, 0.95)
    margin = 26  # > the largest flake reach (~18 px) plus the near layer's blur, so wrapping is never seen
    grid = next_fast_len(size + 2 * margin, real=True)
    area = grid * grid / _REF_AREA
    step_index = np.arange(frames, dtype=np.float64)

    transmission = np.ones((frames, grid, grid))
    layer_params = {}
    for name, (counts, radii, opacities, speeds, parallax) in _SNOW_LAYERS.items():
        count = counts[0] + density * (counts[1] - counts[0])
        pool = int(round(count * area * MAX_INTENSITY))
        used = int(round(count * area * intensity))
        start = rng.uniform(0.0, grid, (pool, 2))[:used]
        radius = rng.uniform(*radii, pool)[:used]
        alpha = rng.uniform(*opacities, pool)[:used]
        fall = rng.uniform(*speeds, pool)[:used]
        sway_amplitude = rng.uniform(0.5, 2.0, pool)[:used]
        sway_frequency = rng.uniform(0.05, 0.2, pool)[:used]
        sway_phase = rng.uniform(0.0, 2 * np.pi, pool)[:used]
        aspect = rng.uniform(1.0, 1.4, pool)[:used]
        angle = rng.uniform(0.0, np.pi, pool)[:used]
        respawn_x = rng.uniform(0.0, grid, (frames, pool))[:, :used]

        sway = sway_amplitude * np.sin(2 * np.pi * sway_frequency * step_index[:, None] + sway_phase)  # (T, n)
        steps = np.zeros((frames, used, 2))
        steps[:, :, 0] = wind * parallax[0] + np.diff(sway, axis=0, prepend=sway[:1])
        steps[:, :, 1] = fall
        steps += parallax[0] * scene_shift[:, None, :]  # nearer flakes sweep across the view faster
        tracks = _advance(start, steps, respawn_x, grid)
        log_t = _stamp_log_transmission(tracks, radius, alpha, aspect, angle, grid)
        if name == "near" and used:
            # Near flakes are out of focus (sigma grows with size) and streak a little along their motion.
            mean_step = np.array([wind, float(fall.mean())])
            if frames > 1:
                mean_step = mean_step + scene_shift[1:].mean(axis=0)
            length = 0.35 * float(np.hypot(*mean_step))
            heading = mean_step / max(1e-6, float(np.hypot(*mean_step)))
            matte = 1.0 - np.exp(log_t)
            kernel = _blur_spectrum(grid, 0.3 * float(radius.mean()), length, (heading[0], heading[1]))
            matte = np.clip(np.fft.irfft2(np.fft.rfft2(matte) * kernel, s=(grid, grid)), 0.0, 1.0)
            transmission *= 1.0 - matte
        else:
            transmission *= np.exp(log_t)
        layer_params[name] = {"per_256sq": float(count), "rendered": used}

    matte = (1.0 - transmission[:, margin : margin + size, margin : margin + size])[..., None]
    degraded = clean + matte * (colour - clean)  # J (1 - M) + c M, exact at M = 0
    degraded = _veil(degraded, depth, beta_s * intensity, airlight)
    params = {
        "density": float(density), "layers": layer_params,
        "layer_ranges": {name: [list(pair) for pair in ranges] for name, ranges in _SNOW_LAYERS.items()},
        "wind_px_per_frame": float(wind), "flake_colour": float(colour), "veil_beta": float(beta_s),
        "airlight": float(airlight), "grid": grid, "margin": margin,
    }  # fmt: skip
    return degraded, params, float(np.clip(density * intensity, 0.0, 0.999))
