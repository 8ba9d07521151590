"""Streaming video restoration over a `viws` bundle (or any bundle whose model says task "restore"), torch-free.

The model contract: component "restorer" takes ``frames`` float32 (batch, T, 3, tile, tile) RGB in [0, 1] and
returns ``restored`` float32 (batch, 3, tile, tile), the restored centre frame (index T // 2) of the window.
Frames of any size are cut into tile x tile crops with stride ``tile - overlap`` (the last crop aligned to the
edge), each crop is restored, and overlapping crops are blended with linear (feathered) weights, so a tile's
border (where a convolution sees its zero padding) counts little and seams vanish. Frames smaller than the tile
are padded up to it and cropped back.

A stream keeps at most T frames (a deque), never the whole video: frame i's window is frames
clamp(i - T//2 .. i + T//2), the first and last frames replicated at the ends, and output i is yielded once
frame i + T//2 has arrived (a lag of T//2 frames).

Memory: the window holds T float32 RGB frames (12 bytes a pixel each) plus the blend buffers (16 bytes a pixel),
about 76 bytes a pixel at T = 5 and some 110 at peak while a frame is converted and the result is cropped: 3-4.5 GB
at the 40-megapixel limit below. Larger frames are refused, not tiled, because a phone would be killed for the
memory long before it finished.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from edgesdk.runtime.backends import Session, open_session
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.limits import check_threads

COMPONENT = "restorer"
INPUT, OUTPUT = "frames", "restored"
MAX_SIDE = 8192  # px on either side
MAX_PIXELS = 40_000_000  # per frame (8K UHD, 7680 x 4320, is 33 MP)


def check_frame_shape(shape: tuple[int, ...], index: int) -> tuple[int, int]:
    """(height, width) of a frame of this shape, or a clear error; looks at the shape only, so a huge frame is
    refused before anything is converted or allocated."""
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise EdgeSDKError(f"frame {index} has shape {tuple(shape)}; a frame is (H, W) grey or (H, W, C) with "
                           "C = 1 (grey), 3 (RGB) or 4 (RGBA)")
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise EdgeSDKError(f"frame {index} is empty ({width}x{height}); every frame needs at least one pixel")
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        scale = min(1.0, MAX_SIDE / max(height, width), (MAX_PIXELS / (height * width)) ** 0.5)
        target = max(2, int(width * scale) // 2 * 2)
        raise EdgeSDKError(f"frame {index} is {width}x{height} ({height * width / 1e6:.1f} megapixels); the restorer "
                           f"takes at most {MAX_SIDE} px a side and {MAX_PIXELS // 1_000_000} megapixels: downscale "
                           f"first, e.g. ffmpeg -i INPUT -vf scale={target}:-2 SMALLER.mp4")
    return height, width


def frame_to_rgb(frame: np.ndarray, index: int = 0) -> tuple[np.ndarray, str | None]:
    """Any supported frame as (H, W, 3) float32 RGB in [0, 1], and a note when it was converted.

    uint8 is divided by 255 and uint16 by 65535; float is taken as [0, 1] (a float frame in 0..255 is refused, as
    clipping it would give a white video); grey is repeated to RGB; an alpha channel is dropped."""
    frame = np.asarray(frame)
    check_frame_shape(frame.shape, index)
    note = None
    if frame.ndim == 2 or frame.shape[2] == 1:
        note = "grey frames converted to RGB"
    elif frame.shape[2] == 4:
        note = "RGBA frames: alpha channel dropped"
    if frame.ndim == 2:
        frame = frame[..., None]
    frame = frame[..., :3]
    if frame.dtype == np.uint8:
        rgb = frame.astype(np.float32) / np.float32(255)
    elif frame.dtype == np.uint16:
        rgb = frame.astype(np.float32) / np.float32(65535)
    elif frame.dtype == np.bool_:
        rgb = frame.astype(np.float32)
    elif np.issubdtype(frame.dtype, np.floating):
        rgb = frame.astype(np.float32)
        low, high = float(rgb.min()), float(rgb.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise EdgeSDKError(f"frame {index} has NaN or infinite values; pass finite floats in [0, 1]")
        if high > 2.0 or low < -1.0:
            raise EdgeSDKError(f"frame {index} is float with values in [{low:g}, {high:g}]; float frames are in "
                               "[0, 1]: divide by 255, or pass uint8")
        rgb = np.clip(rgb, 0.0, 1.0)
    else:
        raise EdgeSDKError(f"frame {index} has dtype {frame.dtype}; pass uint8 (0-255), uint16 or float (0-1)")
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb, note


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Offsets of tile-long crops covering ``size`` (>= tile): every ``stride``, the last one aligned to the end."""
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def feather(start: int, size: int, tile: int, overlap: int) -> np.ndarray:
    """1-D blend weights of the crop at ``start``: linear ramps over ``overlap`` px on each side that meets another
    crop (never at the frame's own edge, where no other crop covers the pixels), 1 elsewhere. The ramp starts at
    0.5/overlap, not 0, so every pixel has a positive total weight."""
    weights = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if start > 0:
            weights[:overlap] = np.minimum(weights[:overlap], ramp)
        if start + tile < size:
            weights[tile - overlap:] = np.minimum(weights[tile - overlap:], ramp[::-1])
    return weights


def pad_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) padded at the bottom and right to (C, height, width): reflect where the frame is long enough
    (a mirror looks like more picture to the network), edge replication where it is not (reflect needs pad < size)."""
    for axis, target in ((1, height), (2, width)):
        size = frame.shape[axis]
        if target > size:
            pad = [(0, 0)] * 3
            pad[axis] = (0, target - size)
            frame = np.pad(frame, pad, mode="reflect" if target - size < size else "edge")
    return frame


class VideoRestorer:
    """A restoration bundle on one backend: ``restore_window`` for one window, ``stream`` for a frame stream."""

    def __init__(self, bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None,
                 tile_batch: int = 1) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        model = self.bundle.manifest.get("model", {})
        if model.get("task") != "restore":
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r} is a {self.bundle.family or 'unnamed'!r} bundle "
                               f"(task {model.get('task')!r}), not a video restorer; pass a viws bundle")
        try:
            self.frames, self.tile = int(model["frames"]), int(model["tile"])
            self.overlap = int(model.get("tile_overlap", 0))
        except (KeyError, TypeError, ValueError):
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r}: its model metadata needs integer 'frames' and "
                               "'tile'; re-export the bundle") from None
        if self.frames < 1 or self.tile < 1 or not 0 <= self.overlap < self.tile:
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r}: frames={self.frames}, tile={self.tile}, "
                               f"tile_overlap={self.overlap} is not a valid window (need 0 <= overlap < tile); "
                               "re-export the bundle")
        if tile_batch < 1 or tile_batch > 4096:
            raise EdgeSDKError(f"tile_batch must be in [1, 4096], got {tile_batch}")
        if self.frames > 64 or self.tile > 4096:
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r}: frames={self.frames}, tile={self.tile} is above "
                               "the limits (64 frames, 4096 px tiles); re-export the bundle")
        check_threads(threads)
        info = self.bundle.component(COMPONENT)
        expected = (self.frames, 3, self.tile, self.tile)
        shapes = {spec.name: tuple(spec.shape[1:]) for spec in info.inputs}
        if INPUT not in shapes or OUTPUT not in info.output_names or shapes[INPUT] not in ((), expected):
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r}: component {COMPONENT!r} must take {INPUT!r} of "
                               f"shape (batch, {', '.join(map(str, expected))}) and return {OUTPUT!r}; it takes "
                               f"{shapes} and returns {info.output_names}; re-export the bundle")
        self.tile_batch = tile_batch
        self.backend = backend
        self.session: Session = open_session(self.bundle, COMPONENT, backend, threads)
        self.notes: list[str] = []  # conversions applied by the last stream(), for the CLI to print
        self.size: tuple[int, int] | None = None  # (height, width) of the last stream's frames

    def tiles_per_frame(self, height: int, width: int) -> int:
        """Model runs (tiles) one frame of this size costs, counted without allocating anything."""
        stride = self.tile - self.overlap
        padded_h, padded_w = max(height, self.tile), max(width, self.tile)
        return len(tile_starts(padded_h, self.tile, stride)) * len(tile_starts(padded_w, self.tile, stride))

    @property
    def lag(self) -> int:
        return self.frames // 2

    def restore_window(self, window: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) float32 [0, 1] frames of any H, W >= 1 -> the restored centre frame, (H, W, 3) float32
        in [0, 1]."""
        window = np.asarray(window)
        if window.ndim != 4 or window.shape[0] != self.frames or window.shape[3] != 3:
            raise EdgeSDKError(f"a window is ({self.frames}, H, W, 3) frames; got shape {tuple(window.shape)} "
                               "(use stream() for single frames, grey or RGBA)")
        check_frame_shape(window.shape[1:], 0)
        chw = [np.ascontiguousarray(frame_to_rgb(frame, i)[0].transpose(2, 0, 1)) for i, frame in enumerate(window)]
        return self._restore(chw)

    def _restore(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """T contiguous (3, H, W) float32 frames -> (H, W, 3) float32 restored centre frame."""
        height, width = frames[0].shape[1:]
        tile, overlap = self.tile, self.overlap
        padded_h, padded_w = max(height, tile), max(width, tile)
        if (padded_h, padded_w) != (height, width):
            frames = [pad_to(f, padded_h, padded_w) for f in frames]
        ys = tile_starts(padded_h, tile, tile - overlap)
        xs = tile_starts(padded_w, tile, tile - overlap)
        wy = {y: feather(y, padded_h, tile, overlap) for y in ys}
        wx = {x: feather(x, padded_w, tile, overlap) for x in xs}
        total = np.zeros((3, padded_h, padded_w), dtype=np.float32)
        weight = np.zeros((padded_h, padded_w), dtype=np.float32)
        crops = [(y, x) for y in ys for x in xs]
        for first in range(0, len(crops), self.tile_batch):
            chunk = crops[first:first + self.tile_batch]
            batch = np.empty((len(chunk), len(frames), 3, tile, tile), dtype=np.float32)  # one copy per crop
            for k, (y, x) in enumerate(chunk):
                for t, frame in enumerate(frames):
                    batch[k, t] = frame[:, y:y + tile, x:x + tile]
            restored = self.session.run({INPUT: batch})[OUTPUT]
            if restored.shape != (len(chunk), 3, tile, tile):
                raise EdgeSDKError(f"component {COMPONENT!r} returned {OUTPUT!r} of shape {restored.shape}, "
                                   f"expected ({len(chunk)}, 3, {tile}, {tile}); the bundle does not follow the "
                                   "restore contract; re-export it")
            for (y, x), out in zip(chunk, restored, strict=True):
                w = np.outer(wy[y], wx[x])
                total[:, y:y + tile, x:x + tile] += out * w
                weight[y:y + tile, x:x + tile] += w
        result = total[:, :height, :width] / weight[:height, :width]
        # the network may overshoot [0, 1] slightly; a frame is a picture, so clip
        return np.clip(result.transpose(1, 2, 0), 0.0, 1.0)

    def stream(self, frames: Iterable[np.ndarray], progress: Callable[[int], None] | None = None
               ) -> Iterator[np.ndarray]:
        """One restored (H, W, 3) float32 frame per input frame, in order, T//2 frames behind the input.

        Frames may be uint8, uint16 or float; grey, RGB or RGBA (see ``frame_to_rgb``); all of the first frame's
        size. ``progress(n)`` is called after the n-th output. ``self.notes`` lists the conversions applied."""
        self.notes = []
        window: deque[np.ndarray] = deque(maxlen=self.frames)
        done = 0

        def emit() -> np.ndarray:
            nonlocal done
            restored = self._restore(list(window))
            done += 1
            if progress is not None:
                progress(done)
            return restored

        count = 0
        last: np.ndarray | None = None
        for index, frame in enumerate(frames):
            shape = np.shape(frame)
            size = check_frame_shape(shape, index)  # before converting: a huge frame costs nothing to refuse
            if index == 0:
                self.size = size
                if size[0] < self.tile or size[1] < self.tile:
                    self.notes.append(f"frames of {size[1]}x{size[0]} are smaller than the {self.tile}x{self.tile} "
                                      "tile: padded to the tile and cropped back")
            elif size != self.size:
                first = self.size or (0, 0)
                raise EdgeSDKError(f"frame {index} is {size[1]}x{size[0]} but frame 0 is {first[1]}x{first[0]}; "
                                   "every frame of a video must have the same size")
            rgb, note = frame_to_rgb(frame, index)
            if note and note not in self.notes:
                self.notes.append(note)
            last = np.ascontiguousarray(rgb.transpose(2, 0, 1))
            if index == 0:
                window.extend([last] * self.lag)  # frames before the first are the first (references, no copies)
            window.append(last)
            count += 1
            if len(window) == self.frames:
                yield emit()
        if last is None:
            raise EdgeSDKError("no frames to restore: the input has none; pass a video or a folder with frames")
        if count < self.frames:
            self.notes.append(f"{count} frame(s) is fewer than the {self.frames}-frame window: edge frames replicated")
        for _ in range(self.frames - 1 - self.lag):  # frames after the last are the last (T - 1 - T//2 of them)
            window.append(last)
            if len(window) == self.frames:
                yield emit()
