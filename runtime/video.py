"""Video in and out for restoration, torch-free: ffmpeg (the binary imageio-ffmpeg ships) and PIL.

Videos are read and written through ``imageio_ffmpeg``, the engine under imageio's FFMPEG plugin, called directly
because the plugin refuses some suffixes (.gif) that ffmpeg itself handles. Reading streams frames one at a time
from an ffmpeg pipe (uint8 RGB); nothing holds a whole video. A folder of images is a video too (PNG, JPEG, BMP,
TIFF, in natural order of names).

Every output is written under a temporary name in its own folder (a temporary folder for PNG frames) and renamed
once complete: an interrupted or failed run leaves no half-written output, and an existing output is replaced
only by a complete new one.
"""

from __future__ import annotations

import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_folder, publish_file, temp_file_for
from edgesdk.runtime.image import grid, save_grid
from edgesdk.runtime.limits import (
    MAX_TILE_RUNS,
    MAX_TILES_PER_FRAME,
    MAX_VIDEO_FILE_BYTES,
    check_input_file,
    check_output,
)
from edgesdk.runtime.restore import VideoRestorer, check_frame_shape, frame_to_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# suffix -> (ffmpeg encoder, pixel format). yuv420p is what every player decodes; it needs even sizes.
WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "yuv420p"), ".mov": ("libx264", "yuv420p"), ".mkv": ("libx264", "yuv420p"),
    ".avi": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p"), ".gif": ("gif", "pal8"),
}
# one palette for the whole clip (ffmpeg's default GIF palette is a fixed 3-3-2 one that bands badly)
GIF_FILTER = ["-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse"]
QUALITY = 8  # imageio-ffmpeg's 0-10 scale; 8 is libx264 CRF 10: near-lossless, so the restoration is what you see
DEFAULT_FPS = 25.0
FRAME_NAME = re.compile(r"^\d{5,}\.png$")
SIDE_BY_SIDE_SUFFIXES = (".png", ".jpg", ".jpeg")
LONG_TILES = 256  # tiles a frame above which restore says how long the run will take


@dataclass(frozen=True)
class VideoInfo:
    frames: int | None  # None when the container does not say and counting failed
    fps: float
    size: tuple[int, int]  # (width, height)
    kind: str  # "video" | "folder"


def natural_key(name: str) -> list[Any]:
    """frame2 before frame10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _is_device(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _ffmpeg_problem(exc: BaseException) -> str:
    """The most telling line of an ffmpeg failure (imageio-ffmpeg puts ffmpeg's whole log in the message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("ffmpeg version", "built with", "configuration:", "lib",
                                                              "==="))]
    return (useful[-1] if useful else lines[0] if lines else type(exc).__name__)[:200]


def read_frames(path: str | Path) -> tuple[Iterator[np.ndarray], VideoInfo]:
    """Frames of a video file or a folder of images, streamed, and what is known about them.

    The first frame is read here, so a missing, corrupt or empty input fails now, before any output is opened.
    Video frames are (H, W, 3) uint8 RGB; folder images come as stored ((H, W, C) uint8, C = 1, 3 or 4)."""
    path = Path(path)
    if not path.exists():
        raise EdgeSDKError(f"input {str(path)!r} does not exist; pass a video file or a folder of frames")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise EdgeSDKError(f"{str(path)!r} is a single image, not a video; put the frames in a folder "
                           "(00001.png, 00002.png, ...) and pass the folder")
    return _read_video(check_input_file(path, "input video", MAX_VIDEO_FILE_BYTES))


def _read_folder(folder: Path) -> tuple[Iterator[np.ndarray], VideoInfo]:
    from edgesdk.runtime.classify import read_image

    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in IMAGE_SUFFIXES), key=lambda f: natural_key(f.name))
    if not files:
        raise EdgeSDKError(f"folder {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)}); put the frames "
                           "there or pass a video file")
    first = read_image(files[0])
    height, width = first.shape[:2]

    def frames() -> Iterator[np.ndarray]:
        yield first
        for file in files[1:]:
            image = read_image(file)
            if image.shape[:2] != (height, width):
                raise EdgeSDKError(f"{file.name} is {image.shape[1]}x{image.shape[0]} but {files[0].name} is "
                                   f"{width}x{height}; all frames in a folder must have one size")
            yield image

    return frames(), VideoInfo(len(files), DEFAULT_FPS, (width, height), "folder")


def _read_video(path: Path) -> tuple[Iterator[np.ndarray], VideoInfo]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
        width, height = (int(v) for v in meta["size"])
        check_frame_shape((height, width, 3), 0)  # before ffmpeg decodes a frame of a size it may not hold
        first = next(reader, None)
    except EdgeSDKError:
        reader.close()
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        reader.close()
        raise EdgeSDKError(f"cannot read {str(path)!r} as a video (ffmpeg: {_ffmpeg_problem(exc)}); pass a video "
                           "file (.mp4, .avi, .mov, .mkv, .webm, .gif) or a folder of frames") from None
    if first is None:
        reader.close()
        raise EdgeSDKError(f"video {str(path)!r} has no frames; pass a video with at least one frame")
    if first is not None and len(first) != width * height * 3:
        reader.close()
        raise EdgeSDKError(f"video {str(path)!r}: ffmpeg returned a frame of {len(first)} bytes for {width}x{height} "
                           "RGB; the file is damaged")
    fps = float(meta.get("fps") or 0.0)
    fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    try:
        count: int | None = int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])
    except (OSError, RuntimeError, ValueError):
        count = None  # a stream without an index: still restorable, just no progress total

    def frame(data: bytes) -> np.ndarray:
        if len(data) != width * height * 3:
            raise EdgeSDKError(f"video {str(path)!r}: ffmpeg returned a frame of {len(data)} bytes for "
                               f"{width}x{height} RGB; the file is damaged")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)

    def frames() -> Iterator[np.ndarray]:
        try:
            yield frame(first)
            for data in reader:
                yield frame(data)
        except (OSError, RuntimeError) as exc:
            raise EdgeSDKError(f"reading {str(path)!r} failed part-way (ffmpeg: {_ffmpeg_problem(exc)}); the file "
                               "may be truncated") from None
        finally:
            reader.close()  # stops the ffmpeg process, also when the consumer stops early

    return frames(), VideoInfo(count or None, fps, (width, height), "video")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) float [0, 1] or uint8 -> (H, W, 3) uint8 (other layouts via ``frame_to_rgb``)."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    rgb, _ = frame_to_rgb(frame)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def output_kind(path: str | Path) -> str:
    """"video" for a known video suffix, "folder" for a name without one; anything else is refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in WRITE_FORMATS:
        if path.is_dir():
            raise EdgeSDKError(f"output {str(path)!r} is a folder; pass a file name or another path")
        return "video"
    if path.is_dir() or not suffix:
        if path.is_dir():
            strangers = [f.name for f in path.iterdir() if not FRAME_NAME.match(f.name)]
            if strangers:
                # replacing the folder would delete these: only ever replace a folder of our own frames
                raise EdgeSDKError(f"output folder {str(path)!r} holds other files ({strangers[0]!r}, ...); pass a "
                                   "new or empty folder")
        elif path.exists():
            raise EdgeSDKError(f"output {str(path)!r} exists and is not a folder; pass a video file name "
                               f"({', '.join(WRITE_FORMATS)}) or a folder")
        return "folder"
    raise EdgeSDKError(f"output {str(path)!r}: unknown video type {suffix!r}; use one of "
                       f"{', '.join(WRITE_FORMATS)} or a folder name (no suffix) for PNG frames")


def write_frames(path: str | Path, frames: Iterable[np.ndarray], fps: float, notes: list[str] | None = None) -> Path:
    """Write (H, W, 3) frames (uint8, or float in [0, 1]) as a video (by suffix) or a folder of %05d.png frames.

    Atomic: the output appears, complete, at the end, or not at all; an existing one is replaced only then.
    ``notes`` (when given) receives what was changed to make the video writable (odd sizes padded)."""
    path = Path(path)
    if not (math.isfinite(fps) and fps > 0):
        raise EdgeSDKError(f"fps must be a positive number, got {fps}")
    kind = output_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        return _write_folder(path, frames)
    return _write_video(path, frames, fps, notes if notes is not None else [])


def _write_video(path: Path, frames: Iterable[np.ndarray], fps: float, notes: list[str]) -> Path:
    import imageio_ffmpeg

    codec, pixels = WRITE_FORMATS[path.suffix.lower()]
    tmp = temp_file_for(path)  # keeps the suffix, which ffmpeg reads
    writer = None
    count, shape, pad = 0, (0, 0), (0, 0)
    try:
        for index, frame in enumerate(frames):
            image = to_uint8(frame)
            if writer is None:
                shape = image.shape[:2]
                if pixels == "yuv420p":
                    # yuv420p stores colour at half resolution: odd sizes are refused by the encoder. Pad one edge
                    # pixel rather than let a library resize (and blur) every frame behind the user's back.
                    pad = (shape[0] % 2, shape[1] % 2)
                    if any(pad):
                        notes.append(f"{path.suffix} needs even sizes: frames padded by repeating the edge from "
                                     f"{shape[1]}x{shape[0]} to {shape[1] + pad[1]}x{shape[0] + pad[0]}")
                size = (shape[1] + pad[1], shape[0] + pad[0])
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), size, fps=fps, codec=codec, pix_fmt_out=pixels, macro_block_size=1,
                    quality=QUALITY if codec != "gif" else None, ffmpeg_log_level="error",
                    output_params=GIF_FILTER if codec == "gif" else None)
                writer.send(None)  # starts ffmpeg
            elif image.shape[:2] != shape:
                raise EdgeSDKError(f"frame {index} is {image.shape[1]}x{image.shape[0]} but frame 0 is "
                                   f"{shape[1]}x{shape[0]}; a video has one size")
            if any(pad):
                image = np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(image))
            count += 1
        if writer is None:
            raise EdgeSDKError(f"no frames to write to {str(path)!r}")
        finished, writer = writer, None
        finished.close()  # waits for ffmpeg to finish the file
        publish_file(tmp, path)
    except (OSError, RuntimeError) as exc:
        _abandon(writer, tmp)
        raise EdgeSDKError(f"ffmpeg could not write {str(path)!r} ({_ffmpeg_problem(exc)}); nothing was written")\
            from None
    except BaseException:
        _abandon(writer, tmp)
        raise
    return path


def _abandon(writer: Any, tmp: Path) -> None:
    if writer is not None:
        try:
            writer.close()
        except Exception:  # already failing: the temp file goes either way
            pass
    tmp.unlink(missing_ok=True)


def _write_folder(path: Path, frames: Iterable[np.ndarray]) -> Path:
    from PIL import Image

    with atomic_folder(path) as tmp:
        count = 0
        shape = None
        for index, frame in enumerate(frames):
            image = to_uint8(frame)
            if shape is not None and image.shape != shape:
                raise EdgeSDKError(f"frame {index} is {image.shape[1]}x{image.shape[0]} but frame 0 is "
                                   f"{shape[1]}x{shape[0]}; a video has one size")
            shape = image.shape
            Image.fromarray(image).save(tmp / f"{index + 1:05d}.png")
            count += 1
        if count == 0:
            raise EdgeSDKError(f"no frames to write to {str(path)!r}")
    return path


def _pair(degraded: np.ndarray, restored: np.ndarray) -> np.ndarray:
    left, right = to_uint8(degraded), to_uint8(restored)
    if left.shape != right.shape:
        raise EdgeSDKError(f"side by side needs frames of one size; got {left.shape[1]}x{left.shape[0]} and "
                           f"{right.shape[1]}x{right.shape[0]}")
    return np.stack([left, right])


def side_by_side(degraded: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """(H, 2W, 3) uint8: the input frame on the left, the restored one on the right."""
    return grid(_pair(degraded, restored), columns=2)


def save_side_by_side(path: str | Path, degraded: np.ndarray, restored: np.ndarray) -> Path:
    """Write ``side_by_side`` as an image, atomically (``save_grid``: temp file + rename)."""
    return save_grid(_pair(degraded, restored), path, columns=2)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def restore_video(bundle: Bundle | str | Path, input: str | Path, output: str | Path, backend: str = "onnx",
                  threads: int | None = None, side_by_side: str | Path | None = None, fps: float | None = None,
                  progress: Callable[[int, int | None], None] | None = None, tile_batch: int = 1,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Restore a video file or frame folder into ``output`` (video by suffix, or a PNG folder), streaming.

    Work is bounded before it starts: frames needing more than ``MAX_TILES_PER_FRAME`` tiles, or a known frame
    count needing more than ``MAX_TILE_RUNS`` tile runs, are refused; ``log`` hears how long a large job will take.

    ``side_by_side``: also save input | restored of the middle frame as an image. ``progress(done, total)`` after
    each frame (total None when unknown). Returns what was done, for the CLI and for scripts."""
    source, target = Path(input), Path(output)
    bundle_root = bundle.root if isinstance(bundle, Bundle) else Path(bundle)
    if source.exists() and target.exists() and source.resolve() == target.resolve():
        raise EdgeSDKError("the output is the input; write the restored video to another path")
    check_output(target, "--output", inputs=[bundle_root, source], folder_ok=True)
    if _is_device(target):
        # ffmpeg writes the video itself and cannot report a device's write errors back to us (/dev/full would
        # "succeed"); a video goes to a file
        raise EdgeSDKError(f"--output {str(target)!r} is a device; restore writes a video file or a folder of "
                           "frames: give a file or folder name")
    kind = output_kind(target)  # a bad output fails before any work
    if side_by_side is not None:
        side_by_side = Path(side_by_side)
        if side_by_side.suffix.lower() not in SIDE_BY_SIDE_SUFFIXES:
            raise EdgeSDKError(f"--side-by-side {str(side_by_side)!r}: give an image name ending in "
                               f"{', '.join(SIDE_BY_SIDE_SUFFIXES)}")
        check_output(side_by_side, "--side-by-side", inputs=[bundle_root, source, target])
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise EdgeSDKError(f"--fps must be a positive number, got {fps}")
    restorer = VideoRestorer(bundle, backend=backend, threads=threads, tile_batch=tile_batch)
    frames, info = read_frames(source)
    # the tiling work is known from the first frame's size: refuse what could not finish, say what will take long
    width0, height0 = info.size
    check_frame_shape((height0, width0, 3), 0)
    tiles = restorer.tiles_per_frame(height0, width0)
    if tiles > MAX_TILES_PER_FRAME:
        raise EdgeSDKError(f"frames of {width0}x{height0} need {tiles:,} tiles of {restorer.tile}x{restorer.tile} "
                           f"each, above the limit of {MAX_TILES_PER_FRAME:,} a frame; downscale the video first")
    if info.frames and tiles * info.frames > MAX_TILE_RUNS:
        raise EdgeSDKError(f"{info.frames:,} frames of {width0}x{height0} need {tiles * info.frames:,} tile runs, "
                           f"above the limit of {MAX_TILE_RUNS:,} a command; restore a shorter clip or downscale")
    rate = float(fps) if fps is not None else info.fps
    notes: list[str] = []
    chosen = info.frames // 2 if info.frames else 0
    if side_by_side is not None and not info.frames:
        notes.append("frame count unknown: the side-by-side shows the first frame")
    kept: dict[str, Any] = {}

    def tap_input(stream: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for index, frame in enumerate(stream):
            if side_by_side is not None and index <= chosen:
                kept["input"] = frame  # by the end: the chosen frame, or the last one if the count was too high
            yield frame

    def tap_output(stream: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for index, frame in enumerate(stream):
            if side_by_side is not None and index <= chosen:
                kept["output"], kept["index"] = frame, index
            yield frame

    done = 0

    if log is not None and tiles > LONG_TILES:
        log(f"frames of {width0}x{height0}: {tiles:,} tiles of {restorer.tile}x{restorer.tile} a frame"
            + (f", {tiles * info.frames:,} tile runs for {info.frames:,} frames" if info.frames else "")
            + "; the time estimate follows the first frame")

    def step(count: int) -> None:
        nonlocal done
        done = count
        if count == 1 and log is not None and tiles > LONG_TILES:
            per_frame = time.perf_counter() - start
            total = f"about {_duration(per_frame * info.frames)} for {info.frames:,} frames" if info.frames \
                else "the frame count is unknown"
            log(f"first frame restored in {per_frame:.1f} s; {total}")
        if progress is not None:
            progress(count, info.frames)

    start = time.perf_counter()
    write_frames(target, tap_output(restorer.stream(tap_input(frames), progress=step)), rate, notes)
    seconds = time.perf_counter() - start
    picture = None
    if side_by_side is not None:
        picture = str(save_side_by_side(side_by_side, kept["input"], kept["output"]))
    height, width = restorer.size or (info.size[1], info.size[0])
    return {"input": str(source), "output": str(target), "kind": kind, "frames": done,
            "fps": rate, "width": width, "height": height, "backend": backend, "seconds": round(seconds, 3),
            "frames_per_second": round(done / max(seconds, 1e-9), 2), "side_by_side": picture,
            "side_by_side_frame": kept.get("index"), "notes": restorer.notes + notes}
