"""Synthetic weather clips (edgesdk.data.weather, spec §11) and the Y-channel metrics (edgesdk.runtime.metrics, §7)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from edgesdk.data import weather
from edgesdk.data.weather import LEVELS, WEATHERS, WeatherClip, make_clip, make_clip_set, source_names
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.metrics import psnr_y, rgb_to_y, ssim_y

# Procedural sources render in ~0.1 s and need no image decoding, so most tests use them.
SOURCE = "procedural-3"


def _clip_psnr(clip: WeatherClip) -> float:
    return float(np.mean([psnr_y(d, c) for d, c in zip(clip.degraded, clip.clean, strict=True)]))


# ------------------------------------------------------------------------------------------------------- clips


@pytest.mark.parametrize("label", range(3))
def test_same_seed_same_clip_and_different_seed_different(label: int) -> None:
    first, again, other = (make_clip(SOURCE, label, seed, frames=3, size=32) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first.degraded, again.degraded)
    np.testing.assert_array_equal(first.clean, again.clean)
    assert first.params == again.params
    assert not np.array_equal(first.clean, other.clean)
    assert not np.array_equal(first.degraded - first.clean, other.degraded - other.clean)


def test_clean_clip_does_not_depend_on_weather_or_intensity() -> None:
    clips = [make_clip(SOURCE, label, 11, frames=3, size=32) for label in range(3)]
    clips.append(make_clip(SOURCE, "snow", 11, frames=3, size=32, intensity=0.3))
    for clip in clips[1:]:
        np.testing.assert_array_equal(clip.clean, clips[0].clean)
    # The camera moves: consecutive clean frames differ.
    assert not np.array_equal(clips[0].clean[0], clips[0].clean[1])


@pytest.mark.parametrize("name", WEATHERS)
def test_zero_intensity_is_exactly_clean(name: str) -> None:
    clip = make_clip(SOURCE, name, 2, frames=3, size=32, intensity=0.0)
    np.testing.assert_array_equal(clip.degraded, clip.clean)
    assert clip.level == "light"


@pytest.mark.parametrize("render", [weather._rain, weather._haze, weather._snow])
def test_renderers_return_clean_bit_exactly_at_zero_intensity(render) -> None:
    # make_clip short-circuits intensity 0; the renderers themselves must also leave J untouched (no 1 - (1 - J)).
    rng = np.random.default_rng(0)
    clean = rng.random((3, 32, 32, 3)).astype(np.float32)
    depth = rng.random((3, 32, 32)).astype(np.float32)
    shift = np.array([[0.0, 0.0], [-1.0, 0.5], [-1.2, 0.4]])
    degraded, params, density = render(np.random.default_rng(1), clean, depth, shift, 0.0)
    np.testing.assert_array_equal(degraded, clean)
    assert density == 0.0
    json.dumps(params)


@pytest.mark.parametrize("name", WEATHERS)
def test_psnr_falls_monotonically_with_intensity(name: str) -> None:
    scores = [_clip_psnr(make_clip(SOURCE, name, 4, intensity=level)) for level in (0.25, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert scores[-1] < 40.0  # the heaviest setting really degrades


def test_advance_moves_particles_by_their_steps_and_respawns_at_the_top() -> None:
    rng = np.random.default_rng(0)
    grid, frames, count = 50, 6, 40
    start = rng.uniform(0, grid, (count, 2))
    steps = np.broadcast_to(np.array([1.5, 9.0]), (frames, count, 2)).copy()
    respawn_x = rng.uniform(0, grid, (frames, count))
    tracks = weather._advance(start, steps, respawn_x, grid)
    np.testing.assert_array_equal(tracks[0], start)
    moved = tracks[1:] - tracks[:-1]
    stayed = (moved[..., 1] > 0) & (np.abs(moved[..., 1] - 9.0) < 1e-9)  # no wrap in y this frame
    # Particles that did not leave keep their identity: displacement is exactly the step.
    np.testing.assert_allclose(moved[stayed][:, 0] % grid, 1.5, atol=1e-9)
    assert stayed.mean() > 0.7
    # Those that left through the bottom re-entered near the top at the pre-drawn new x.
    wrapped = ~stayed
    assert wrapped.any()
    np.testing.assert_allclose(tracks[1:][wrapped][:, 1], (tracks[:-1][wrapped][:, 1] + 9.0) % grid)
    assert np.all((tracks >= 0) & (tracks < grid))


def _best_shift_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Largest normalised cross-correlation of a and b over all shifts (zero padded, so no wrap)."""
    a, b = a - a.mean(), b - b.mean()
    pad = (2 * a.shape[0], 2 * a.shape[1])
    correlation = np.fft.irfft2(np.fft.rfft2(a, s=pad).conj() * np.fft.rfft2(b, s=pad), s=pad)
    return float(correlation.max() / math.sqrt(float((a * a).sum() * (b * b).sum())))


@pytest.mark.parametrize("render", [weather._rain, weather._snow])
def test_particles_persist_between_frames(render) -> None:
    # On a flat grey scene at depth 0 (no veil) the residual is the particles alone. Persistent particles make
    # frame k+1 a shifted copy of much of frame k; a clip from another seed (independent particles) does not.
    frames, size = 5, 64
    flat = np.full((frames, size, size, 3), 0.3, np.float32)
    depth = np.zeros((frames, size, size), np.float32)
    shift = np.zeros((frames, 2))
    same, independent = [], []
    for seed in range(4):
        first = render(np.random.default_rng(seed), flat, depth, shift, 1.0)[0][..., 0] - 0.3
        other = render(np.random.default_rng(seed + 100), flat, depth, shift, 1.0)[0][..., 0] - 0.3
        same += [_best_shift_correlation(first[k], first[k + 1]) for k in range(frames - 1)]
        independent += [_best_shift_correlation(first[k], other[k + 1]) for k in range(frames - 1)]
        energy = np.array([float(np.mean(frame**2)) for frame in first])
        assert energy.min() > 0.0
        assert energy.max() / energy.min() < 3.0  # the particle population is stable, not resampled in count
        assert not np.array_equal(first[0], first[1])  # but it moves
    assert np.mean(same) > 1.8 * np.mean(independent), (np.mean(same), np.mean(independent))


def test_splits_are_disjoint_by_source() -> None:
    train, test = source_names("train"), source_names("test")
    assert not set(train) & set(test)
    for names in (train, test):
        procedural = [name for name in names if name.startswith("procedural-")]
        assert procedural and len(procedural) < len(names)  # both splits hold photos and procedural scenes
        assert len(set(names)) == len(names)
    assert len(train) > len(test)


def test_clip_set_is_balanced_ordered_and_seed_disjoint() -> None:
    test_set = make_clip_set("test", 2, frames=2, size=32)
    train_set = make_clip_set("train", 2, frames=2, size=32)
    assert [clip.label for clip in test_set] == [0, 1, 2, 0, 1, 2]
    assert [clip.params["weather"] for clip in test_set[:3]] == list(WEATHERS)
    assert {clip.params["source"] for clip in test_set} <= set(source_names("test"))
    assert {clip.params["source"] for clip in train_set} <= set(source_names("train"))
    assert not {clip.params["seed"] for clip in test_set} & {clip.params["seed"] for clip in train_set}
    assert len({clip.params["source"] for clip in test_set}) > 1  # sources are cycled
    assert make_clip_set("test", 0) == []


@pytest.mark.parametrize(("frames", "size"), [(1, 16), (9, 48)])
def test_shapes_dtypes_range_and_params(frames: int, size: int) -> None:
    for label, name in enumerate(WEATHERS):
        clip = make_clip("procedural-50", name, 1, frames=frames, size=size)
        for array in (clip.degraded, clip.clean):
            assert array.shape == (frames, size, size, 3)
            assert array.dtype == np.float32
            assert np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0
        assert clip.label == label and clip.level in LEVELS
        record = json.loads(json.dumps(clip.params))
        assert record["source"] == "procedural-50" and record["seed"] == 1 and record["weather"] == name
        assert record["label"] == label and record["level"] == clip.level
        assert not np.array_equal(clip.degraded, clip.clean)


def test_photo_source_works() -> None:
    clip = make_clip("camera", "haze", 0, frames=2, size=32)  # a grey photo becomes RGB
    assert clip.clean.shape == (2, 32, 32, 3)
    assert clip.params["camera"]["depth"]["gamma"] >= 0.7
    assert _clip_psnr(clip) < 60.0


def test_levels_follow_intensity() -> None:
    levels = [make_clip(SOURCE, "haze", 9, frames=1, size=16, intensity=i).level for i in (0.0, 0.01, 2.0)]
    assert levels[0] == "light" and levels[1] == "light" and levels[2] == "heavy"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": "lena"},
        {"source": "procedural-x"},
        {"weather": "fog"},
        {"weather": 3},
        {"weather": True},
        {"frames": 0},
        {"size": 8},
        {"intensity": -0.5},
        {"intensity": 5.0},
        {"seed": -1},
    ],
)
def test_bad_inputs_raise(kwargs: dict) -> None:
    arguments = {"source": SOURCE, "weather": "rain", "seed": 0} | kwargs
    with pytest.raises(EdgeSDKError):
        make_clip(**arguments)


def test_bad_split_raises() -> None:
    with pytest.raises(EdgeSDKError):
        source_names("val")
    with pytest.raises(EdgeSDKError):
        make_clip_set("val", 1)
    with pytest.raises(EdgeSDKError):
        make_clip_set("train", -1)


# ----------------------------------------------------------------------------------------------------- metrics


def test_rgb_to_y_uses_bt601_studio_range() -> None:
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.full((2, 1, 1, 3), 2.0)).shape == (2, 1, 1)  # clipped to [0, 1] first
    assert rgb_to_y(np.full((1, 1, 3), 2.0))[0, 0] == pytest.approx(235.0)
    with pytest.raises(EdgeSDKError):
        rgb_to_y(np.zeros((4, 4)))


def test_psnr_of_known_mse_and_identical_images() -> None:
    reference = np.full((8, 8, 3), 0.5)
    delta = 0.01  # + delta on every channel moves Y by 219 * delta
    expected = 20.0 * math.log10(255.0 / (219.0 * delta))
    assert psnr_y(reference + delta, reference) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(reference, reference) == 100.0
    with pytest.raises(EdgeSDKError):
        psnr_y(reference, reference[:4])


def test_ssim_is_one_for_identical_and_drops_with_noise() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((40, 48, 3))
    assert ssim_y(image, image) == pytest.approx(1.0, abs=1e-12)
    scores = [ssim_y(np.clip(image + rng.normal(0, sigma, image.shape), 0, 1), image) for sigma in (0.02, 0.1, 0.3)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    with pytest.raises(EdgeSDKError):
        ssim_y(image[:10, :10], image[:10, :10])


def test_ssim_matches_skimage_on_y() -> None:
    from skimage.metrics import structural_similarity

    clip = make_clip(SOURCE, "snow", 3, frames=1, size=48)
    restored, reference = clip.degraded[0], clip.clean[0]
    expected = structural_similarity(
        rgb_to_y(restored),
        rgb_to_y(reference),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255.0,
    )
    # skimage filters the whole image and then drops a 5-pixel border: the same pixels as our valid region.
    assert ssim_y(restored, reference) == pytest.approx(expected, abs=1e-6)


def test_metrics_import_neither_torch_nor_scipy() -> None:
    code = "import sys, edgesdk.runtime.metrics; assert 'torch' not in sys.modules and 'scipy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
