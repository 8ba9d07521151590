"""Image helpers: uint8 (B, H, W, 3) batches to a PNG grid, and fitting an input image to a model. PIL only, no
torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file
from edgesdk.runtime.limits import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, check_input_file


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile (B, H, W, 3) uint8 images row-major into one (rows*H, columns*W, 3) image, black filler."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0 or images.dtype != np.uint8:
        raise EdgeSDKError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
    count, height, width, _ = images.shape
    columns = columns or int(np.ceil(np.sqrt(count)))
    if columns < 1:
        raise EdgeSDKError(f"columns must be at least 1, got {columns}")
    rows = -(-count // columns)  # ceiling division
    canvas = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return canvas


def save_grid(images: np.ndarray, path: str | Path, columns: int | None = None) -> Path:
    """Write the grid atomically (``atomic_file``): a crash never leaves half a PNG behind. PNG unless the suffix
    names another format PIL writes."""
    path = Path(path)
    canvas = grid(images, columns)
    with atomic_file(path) as tmp:
        Image.fromarray(canvas).save(tmp, format=None if path.suffix else "PNG")
    return path


def read_picture(path: str | Path, what: str = "image") -> Image.Image:
    """A user image file, decoded (``load()`` done), or one line naming the file. FIFOs, devices and oversized
    files are refused before opening (``check_input_file``); a header claiming more than ``MAX_IMAGE_PIXELS`` is
    refused before any pixel is decoded (a 20000 x 20000 PNG of a few KB would take 1.2 GB)."""
    from PIL import UnidentifiedImageError

    path = check_input_file(path, what, MAX_IMAGE_FILE_BYTES)
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                raise EdgeSDKError(f"{what} {str(path)!r} claims {width}x{height} pixels; images of at most "
                                   f"{MAX_IMAGE_PIXELS // 2**20} megapixels are read")
            opened.load()
            picture = opened.copy() if opened.mode in ("L", "RGB", "RGBA") else \
                opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
    except Image.DecompressionBombError:
        raise EdgeSDKError(f"{what} {str(path)!r} is larger than {MAX_IMAGE_PIXELS // 2**20} megapixels "
                           "(decompression bomb limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError, OverflowError) as exc:
        raise EdgeSDKError(f"{what} {str(path)!r} is not an image file this runtime can decode "
                           f"({type(exc).__name__})") from None
    return picture


def center_crop(picture: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (aspect kept) and cut the central size x size square: (size, size[, C])."""
    scale = size / min(picture.size)
    width, height = max(size, round(picture.width * scale)), max(size, round(picture.height * scale))
    resized = picture.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
