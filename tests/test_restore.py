"""Streaming video restoration (runtime/restore.py, runtime/video.py, `edgesdk restore`) against a probe bundle.

The probe follows the viws contract ((batch, 5, 3, 64, 64) -> (batch, 3, 64, 64)) and gives each output channel
a job whose right answer numpy can compute for any frame size:
  channel 0: the centre frame's channel 0            -> tiling and padding must reproduce the input exactly
  channel 1: a weighted sum of the window's channel 1 -> window order and edge replication (distinct weights)
  channel 2: 1.2 * 3x3 box blur of the centre - 0.1   -> seams of the blend, and clipping to [0, 1]
One bundle keeps the suite fast (one export).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.restore import MAX_SIDE, VideoRestorer
from edgesdk.runtime.video import read_frames, restore_video, side_by_side, write_frames
from tests.conftest import run_cli, run_without_torch

T, TILE, OVERLAP = 5, 64, 16
MIX = (0.05, 0.1, 0.2, 0.3, 0.35)
META = {"task": "restore", "frames": T, "tile": TILE, "tile_overlap": OVERLAP, "weathers": ["rain", "haze", "snow"]}


class Probe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mix", torch.tensor(MIX).view(1, T, 1, 1))
        self.register_buffer("box", torch.full((1, 1, 3, 3), 1 / 9))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        centre = frames[:, T // 2]
        mixed = (frames[:, :, 1] * self.mix).sum(dim=1, keepdim=True)
        blurred = torch.nn.functional.conv2d(centre[:, 2:3], self.box, padding=1) * 1.2 - 0.1
        return torch.cat([centre[:, 0:1] * 1.0, mixed, blurred], dim=1)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgesdk.export.capture import ComponentSpec
    from edgesdk.export.pipeline import export_bundle

    example = torch.rand(1, T, 3, TILE, TILE)
    spec = ComponentSpec("restorer", Probe().eval(), (example,), ["frames"], ["restored"], static_batch=1, max_batch=8)
    out = tmp_path_factory.mktemp("restore") / "probe.edge"
    return export_bundle([spec], family="viws", model_meta=META, assets={}, targets=["executorch", "onnx"],
                         output=out, log=lambda _m: None)


@pytest.fixture(scope="session")
def restorer(bundle: Path) -> VideoRestorer:
    return VideoRestorer(bundle, backend="onnx", tile_batch=8)


def mix_ref(window: list[np.ndarray]) -> np.ndarray:
    return sum(w * f[..., 1] for w, f in zip(MIX, window, strict=True))


def blur_ref(plane: np.ndarray) -> np.ndarray:
    padded = np.pad(plane, 1)  # the probe's conv pads with zeros at the frame's true edges
    h, w = plane.shape
    total = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return np.clip(total / 9 * 1.2 - 0.1, 0, 1)


def clamp_window(frames: list[np.ndarray], i: int) -> list[np.ndarray]:
    return [frames[min(max(j, 0), len(frames) - 1)] for j in range(i - T // 2, i + T // 2 + 1)]


def random_frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((h, w, 3), dtype=np.float32) for _ in range(n)]


def smooth_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """uint8 frames a video codec keeps nearly intact: gradients moving a little each frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return [np.stack([x / w, y / h, (x + y + 4 * i) / (w + h + 4 * n)], axis=-1).__mul__(255).astype(np.uint8)
            for i in range(n)]


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_refuses_a_bundle_that_is_not_a_restorer(bundle: Path):
    opened = Bundle.open(bundle)
    manifest = json.loads(json.dumps(opened.manifest))
    manifest["model"]["task"] = "classify"
    with pytest.raises(EdgeSDKError, match="not a video restorer"):
        VideoRestorer(Bundle(opened.root, manifest))
    manifest["model"] = {**META, "tile_overlap": TILE}
    with pytest.raises(EdgeSDKError, match="overlap < tile"):
        VideoRestorer(Bundle(opened.root, manifest))


@pytest.mark.parametrize("size", [(37, 50), (64, 64), (97, 150), (1, 1), (5, 200), (130, 64)])
def test_tiling_and_padding_reproduce_the_window_exactly(restorer: VideoRestorer, size: tuple[int, int]):
    window = np.stack(random_frames(T, *size, seed=size[0] * 1000 + size[1]))
    restored = restorer.restore_window(window)
    assert restored.shape == (*size, 3) and restored.dtype == np.float32
    np.testing.assert_allclose(restored[..., 0], window[T // 2, ..., 0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(restored[..., 1], mix_ref(list(window)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(37, 50), (20, 40), (1, 1)])
def test_small_frames_are_reflect_or_edge_padded(restorer: VideoRestorer, size: tuple[int, int]):
    # the blur sees the padding at the bottom and right: reflect while the frame is long enough, edge otherwise
    # (20 rows need 44 rows of padding, more than reflect can give, so rows are edge-padded; 40 columns reflect 24)
    window = np.stack(random_frames(T, *size, seed=5))
    plane = window[T // 2, ..., 2]
    for axis, n in ((0, size[0]), (1, size[1])):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, TILE - n)
        plane = np.pad(plane, pad, mode="reflect" if TILE - n < n else "edge")
    expected = blur_ref(plane)[:size[0], :size[1]]
    np.testing.assert_allclose(restorer.restore_window(window)[..., 2], expected, atol=1e-5, rtol=0)


def test_tile_batch_does_not_change_the_result(bundle: Path, restorer: VideoRestorer):
    window = np.stack(random_frames(T, 97, 150, seed=3))
    one = VideoRestorer(bundle, tile_batch=1).restore_window(window)
    np.testing.assert_allclose(one, restorer.restore_window(window), atol=1e-6, rtol=0)


def test_blend_has_no_seams_and_output_is_clipped(restorer: VideoRestorer):
    window = np.stack(random_frames(T, 97, 150, seed=7))
    window[T // 2, 10:20, 10:20, 2], window[T // 2, 70:80, 100:110, 2] = 0.0, 1.0  # blur * 1.2 - 0.1 leaves [0, 1]
    restored = restorer.restore_window(window)
    error = np.abs(restored[..., 2] - blur_ref(window[T // 2, ..., 2]))
    # tiles start at x = 0, 48, 86 and y = 0, 33: only a tile's inner border rows/columns see the tile's zero padding
    # instead of the neighbours, and there the feathered weight (0.5/16) keeps the error far below a hard seam's
    seams = np.zeros_like(error, dtype=bool)
    seams[:, [48, 63, 86, 111]] = True
    seams[[33, 63], :] = True
    assert error[~seams].max() < 1e-5
    assert error[seams].max() < 0.02
    hard = np.abs(blur_ref(window[T // 2, :, :64, 2])[:, 63] - blur_ref(window[T // 2, ..., 2])[:, 63]).max()
    assert hard > 0.1  # what an unblended tile edge would show: the tolerance above is meaningful
    assert restored.min() == 0.0 and restored.max() == 1.0  # the probe overshoots; the restorer clips


@pytest.mark.parametrize("count", [1, 2, T, 12])
def test_stream_yields_one_frame_per_input_with_replicated_edges(restorer: VideoRestorer, count: int):
    frames = random_frames(count, 40, 70, seed=count)
    done: list[int] = []
    restored = list(restorer.stream(iter(frames), progress=done.append))
    assert len(restored) == count and done == list(range(1, count + 1))
    for i, out in enumerate(restored):
        np.testing.assert_allclose(out[..., 0], frames[i][..., 0], atol=1e-6, rtol=0)
        np.testing.assert_allclose(out[..., 1], mix_ref(clamp_window(frames, i)), atol=1e-6, rtol=0)
    assert any("smaller than the 64x64 tile" in n for n in restorer.notes)
    assert any("fewer than the 5-frame window" in n for n in restorer.notes) == (count < T)


def test_grey_rgba_uint8_and_float_inputs(restorer: VideoRestorer):
    rng = np.random.default_rng(1)
    grey = [rng.integers(0, 256, (30, 80), dtype=np.uint8) for _ in range(3)]
    expected = [np.repeat(g[..., None].astype(np.float32) / 255, 3, axis=2) for g in grey]
    reference = list(restorer.stream(expected))
    for frames, note in [(grey, "grey"), ([g[..., None] for g in grey], "grey"),
                         ([np.dstack([g, g, g, np.zeros_like(g)]) for g in grey], "alpha"),
                         ([np.dstack([g, g, g]) for g in grey], None)]:
        out = list(restorer.stream(frames))
        for a, b in zip(out, reference, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
        assert any(note in n for n in restorer.notes) if note else not [n for n in restorer.notes if "RGB" in n]
    with pytest.raises(EdgeSDKError, match="divide by 255"):
        list(restorer.stream([np.full((8, 8, 3), 200.0, np.float32)]))
    with pytest.raises(EdgeSDKError, match="int64"):
        list(restorer.stream([np.zeros((8, 8, 3), np.int64)]))


def test_bad_streams_are_refused(restorer: VideoRestorer):
    with pytest.raises(EdgeSDKError, match="no frames to restore"):
        list(restorer.stream([]))
    with pytest.raises(EdgeSDKError, match="frame 2 is 41x40 but frame 0 is 40x40"):
        list(restorer.stream([np.zeros((40, 40, 3), np.uint8)] * 2 + [np.zeros((40, 41, 3), np.uint8)]))
    with pytest.raises(EdgeSDKError, match="shape"):
        list(restorer.stream([np.zeros((8, 8, 2), np.uint8)]))
    with pytest.raises(EdgeSDKError, match=r"\(5, H, W, 3\)"):
        restorer.restore_window(np.zeros((3, 8, 8, 3), np.float32))


def test_huge_frames_are_refused_before_any_allocation(restorer: VideoRestorer):
    # broadcast views: the shape of a huge frame at the cost of one pixel, so a conversion would show as MemoryError
    too_wide = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (16, MAX_SIDE + 1, 3))
    too_many = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (7000, 7000, 3))
    for frame in (too_wide, too_many):
        with pytest.raises(EdgeSDKError, match="downscale first"):
            list(restorer.stream([frame]))
    with pytest.raises(EdgeSDKError, match="downscale first"):
        restorer.restore_window(np.broadcast_to(np.zeros((1, 1, 1, 3), np.float32), (T, 7000, 7000, 3)))


def test_onnx_and_executorch_give_the_same_frames(bundle: Path, restorer: VideoRestorer):
    frames = random_frames(6, 97, 150, seed=11)
    onnx = list(restorer.stream(frames))
    executorch = list(VideoRestorer(bundle, backend="executorch").stream(frames))
    for a, b in zip(onnx, executorch, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_video_round_trip_through_the_cli(bundle: Path, tmp_path: Path):
    frames = smooth_frames(8, 70, 90)
    video = write_frames(tmp_path / "in.mp4", frames, fps=12)
    stream, info = read_frames(video)
    decoded = list(stream)
    assert (info.frames, info.fps, info.size, info.kind) == (8, 12.0, (90, 70), "video") and len(decoded) == 8
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, frames, strict=True)) < 3

    out, sbs = tmp_path / "out.mp4", tmp_path / "pair.png"
    result = run_cli("restore", str(bundle), str(video), "-o", str(out), "--side-by-side", str(sbs), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 8 and (report["width"], report["height"]) == (90, 70) and report["fps"] == 12.0
    assert report["side_by_side_frame"] == 4
    restored = list(read_frames(out)[0])
    assert len(restored) == 8 and restored[0].shape == (70, 90, 3)
    # channel 0 is the identity: after two encodes it is still the input within codec error
    assert max(np.abs(a[..., 0].astype(int) - b[..., 0]).mean() for a, b in zip(restored, frames, strict=True)) < 4
    pair = np.asarray(Image.open(sbs))
    assert pair.shape == (70, 180, 3)
    np.testing.assert_array_equal(pair[:, :90], decoded[4])

    folder = tmp_path / "frames"
    result = run_cli("restore", str(bundle), str(video), "-o", str(folder), "--fps", "30")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "frames/s" in result.stdout
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:05d}.png" for i in range(1, 9)]
    first = np.asarray(Image.open(folder / "00001.png"))
    np.testing.assert_array_equal(first[..., 0], decoded[0][..., 0])  # PNG is lossless: identity is exact
    assert no_temps(tmp_path)


def test_folders_gif_and_odd_sizes(restorer: VideoRestorer, tmp_path: Path):
    frames = smooth_frames(3, 37, 51)
    notes: list[str] = []
    odd = write_frames(tmp_path / "odd.mp4", frames, fps=10, notes=notes)
    assert any("52x38" in n for n in notes)
    assert read_frames(odd)[1].size == (52, 38)
    gif_frames, gif_info = read_frames(write_frames(tmp_path / "clip.gif", frames, fps=10))
    assert gif_info.size == (51, 37) and len(list(gif_frames)) == 3

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in (10, 2, 1):  # natural order: 1, 2, 10
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    stream, info = read_frames(folder)
    assert (info.frames, info.fps, info.kind) == (3, 25.0, "folder")
    assert [int(f[0, 0, 0]) for f in stream] == [1, 2, 10]
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(folder / "frame11.png")
    with pytest.raises(EdgeSDKError, match="frame11.png is 8x9"):
        list(read_frames(folder)[0])

    (tmp_path / "empty").mkdir()
    for path, message in [(tmp_path / "empty", "has no images"), (folder / "frame1.png", "single image"),
                          (tmp_path / "missing.mp4", "does not exist")]:
        with pytest.raises(EdgeSDKError, match=message):
            read_frames(path)
    for bad, message in [(folder, "holds other files"), (tmp_path / "x.txt", "unknown video type")]:
        with pytest.raises(EdgeSDKError, match=message):
            write_frames(bad, frames, fps=10)
    assert side_by_side(frames[0], frames[1]).shape == (37, 102, 3)


def test_corrupt_video_is_one_line_exit_2_and_writes_nothing(bundle: Path, tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    out = tmp_path / "out.mp4"
    result = run_cli("restore", str(bundle), str(bad), "-o", str(out), "--side-by-side", str(tmp_path / "p.png"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "cannot read" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_failed_or_interrupted_runs_leave_existing_outputs_untouched(bundle: Path, tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for i, frame in enumerate(smooth_frames(6, 32, 40)):
        Image.fromarray(frame).save(source / f"{i:03d}.png")
    Image.fromarray(np.zeros((33, 40, 3), np.uint8)).save(source / "005.png")  # the last frame has another size
    video = tmp_path / "old.mp4"
    video.write_bytes(b"the previous result")
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "00001.png").write_bytes(b"previous frame")
    for output in (video, folder):
        with pytest.raises(EdgeSDKError, match="005.png is 40x33"):
            restore_video(bundle, source, output)

    def interrupt(done: int, total: int | None) -> None:
        if done == 2:
            raise KeyboardInterrupt

    (source / "005.png").unlink()
    for output in (video, folder):
        with pytest.raises(KeyboardInterrupt):
            restore_video(bundle, source, output, progress=interrupt)
    assert video.read_bytes() == b"the previous result"
    assert (folder / "00001.png").read_bytes() == b"previous frame" and len(list(folder.iterdir())) == 1
    assert no_temps(tmp_path)

    result = restore_video(bundle, source, folder, side_by_side=tmp_path / "pair.png")  # a good run replaces it
    assert result["frames"] == 5 and len(list(folder.iterdir())) == 5 and no_temps(tmp_path)
    assert result["side_by_side_frame"] == 2


def test_runtime_restores_without_torch(bundle: Path, tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for i, frame in enumerate(smooth_frames(3, 20, 30)):
        Image.fromarray(frame).save(source / f"{i}.png")
    code = f"""
import numpy as np
from edgesdk.runtime.restore import VideoRestorer
from edgesdk.runtime.video import restore_video
frames = [np.random.default_rng(i).random((20, 30, 3), dtype=np.float32) for i in range(4)]
out = list(VideoRestorer({str(bundle)!r}, backend="onnx").stream(frames))
assert len(out) == 4 and np.abs(out[1][..., 0] - frames[1][..., 0]).max() < 1e-6
result = restore_video({str(bundle)!r}, {str(source)!r}, {str(tmp_path / "out.mp4")!r})
assert result["frames"] == 3, result
"""
    result = run_without_torch(code)
    assert result.returncode == 0, result.stderr
