"""Bounds on what one command may read, allocate or loop over, and the checks that guard user inputs and outputs.

Everything a user or a downloaded bundle hands the runtime is untrusted: a count, a size, a float, a path. The
limits here are derived from the machine (CPU count, physical memory) and from the bundle where it says more, and
each refusal is one ``EdgeSDKError`` line that names the option or field and the limit. The C++ runtime mirrors
these numbers in ``runtime/cpp/src/limits.hpp``; keep the two in step.

Outputs follow four rules: never an input (compared by resolved path and by inode), never a folder, FIFO or socket,
a device the user names (``-o /dev/null``) is written to directly and never replaced by a rename, and a write error
is an error. ``files.atomic_file`` applies the device rule; ``check_output`` the others.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError

# Counts. Each is far above any real use and far below what would exhaust a phone.
MAX_THREADS_PER_CPU = 4  # oversubscription is legal (benchmarks try it) but 100 000 threads hang the machine
MAX_DIRECTIONS = 1_024  # ZO directions n per step: n + 1 forwards of the text encoder and UNet each
MAX_DRAWS = 256
MAX_VECTORS = 64  # embedding vectors of one learned token
MAX_STEPS = 10_000_000  # optimizer or denoising steps (a loop, each step bounded below)
MAX_DENOISE_STEPS = 1_000  # a DDPM schedule has at most its training timesteps (1000 for every shipped one)
MAX_IMAGES = 4_096  # images one command generates (prompts x per-prompt) or reads (classify, a concept folder)
MAX_PROMPT_CHARS = 10_000
MAX_TIME_BUDGET_S = 365 * 24 * 3600.0
MAX_TOKENS = 1_024  # a text encoder's positions: the schema's bound on model.max_tokens (docs/bundle-schema.json)
# bounds edgesdk-run gives the same options (runtime/cpp/tools/edgesdk_run.cpp): the seed is an exact double (the C
# API's and numpy's seeds agree up to 2^53); guidance and step sizes far past any useful value overflow float32
MAX_SEED = 1 << 53
MAX_GUIDANCE = 1e6
MAX_STEP_SIZE = 1e6  # --mu, --lr

# Files.
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # one decoded image: 64 MP (PIL's own bomb limit is 89 MP; 2x that is an error)
MAX_ARRAY_FILE_BYTES = 2 * 1024**3  # a user .npy, a learned token, a checkpoint
MAX_VIDEO_FILE_BYTES = 64 * 1024**3
# one bundle asset (token table, schedule, vocabulary; SD-1.5's largest is 152 MB), judged before it is hashed; and any
# one file read whole. The Python reader meets the first through the .npy header checks (shape against file size).
MAX_ASSET_FILE_BYTES = 2 * 1024**3
MAX_READ_BYTES = 64 * 1024**3

# Video restoration: tiles of model work per frame, and per run, above which a run is refused rather than started.
MAX_TILES_PER_FRAME = 20_000
MAX_TILE_RUNS = 5_000_000


def cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def physical_memory_bytes() -> int:
    """The machine's RAM (os.sysconf); 4 GiB where it cannot be read, a small phone's."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def memory_budget_bytes() -> int:
    """What one command may plan to allocate: half the RAM, leaving the rest to the OS and the user's other apps."""
    return physical_memory_bytes() // 2


def max_threads() -> int:
    return cpu_count() * MAX_THREADS_PER_CPU


def check_count(option: str, value: object, limit: int, low: int = 1, why: str = "") -> int:
    """``value`` as an int in [low, limit], or one line naming ``option`` and the bound. Bools and non-integral
    floats (``--steps 2.5``) are refused, not truncated."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
        raise EdgeSDKError(f"{option} must be a whole number, got {value!r}")
    if isinstance(value, float | np.floating) and not (math.isfinite(value) and float(value).is_integer()):
        raise EdgeSDKError(f"{option} must be a whole number, got {value!r}")
    number = int(value)
    if number < low:
        raise EdgeSDKError(f"{option} must be at least {low}, got {number}")
    if number > limit:
        raise EdgeSDKError(f"{option} {number} is above the limit of {limit:,}" + (f" ({why})" if why else ""))
    return number


def check_threads(threads: int | None, option: str = "--threads") -> int | None:
    if threads is None:
        return None
    return check_count(option, threads, max_threads(), why=f"{MAX_THREADS_PER_CPU} per CPU, {cpu_count()} CPUs here")


def check_finite(name: str, value: float | None, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float | None:
    """A user float that must be finite (and in range): NaN or inf is refused with the option named."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise EdgeSDKError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise EdgeSDKError(f"{name} must be a finite number, got {number}")
    if low is not None and (number < low or (low_open and number == low)):
        raise EdgeSDKError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {number:g}")
    if high is not None and number > high:
        raise EdgeSDKError(f"{name} must be <= {high:g}, got {number:g}")
    return number


def check_finite_array(name: str, array: np.ndarray) -> np.ndarray:
    """Refuse NaN/inf in a float array a user or a file handed in (tokens, checkpoints, .npy inputs)."""
    array = np.asarray(array)
    if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise EdgeSDKError(f"{name} holds {bad} NaN or infinite value(s); it must be finite")
    return array


def check_allocation(what: str, count: int, bytes_each: int) -> None:
    """Refuse a planned allocation of ``count`` items of ``bytes_each`` above the memory budget, before it happens."""
    total = int(count) * int(bytes_each)
    budget = memory_budget_bytes()
    if total > budget:
        raise EdgeSDKError(f"{what} would need {total / 1024**3:.1f} GiB, above the limit of {budget / 1024**3:.1f} "
                           "GiB (half of this machine's memory); ask for less")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def check_input_file(path: str | Path, what: str, max_bytes: int) -> Path:
    """A user file to read: it exists, is a regular file (a FIFO, device or socket, also behind a symlink, is refused
    without ever opening it: opening a FIFO blocks, /dev/zero never ends) and is at most ``max_bytes``."""
    path = Path(path)
    try:
        info = os.stat(path)  # follows symlinks: a link to /dev/zero is judged by /dev/zero
    except FileNotFoundError:
        raise EdgeSDKError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise EdgeSDKError(f"{what} {str(path)!r} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise EdgeSDKError(f"{what} {str(path)!r} is {_kind(info.st_mode)}, not a regular file")
    if info.st_size > max_bytes:
        raise EdgeSDKError(f"{what} {str(path)!r} is {info.st_size / 1024**2:,.0f} MiB, above the limit of "
                           f"{max_bytes / 1024**2:,.0f} MiB")
    return path


def is_device(path: str | Path) -> bool:
    """A character or block device (``/dev/null``, ``/dev/full``): written to in place, never renamed over."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError):
        return False


def check_output(path: str | Path, what: str = "output", inputs: Iterable[str | Path] = (),
                 folder_ok: bool = False) -> Path:
    """An output path that is safe to write: not one of ``inputs`` (files or folders: a path inside an input
    folder, such as the bundle's manifest.json, counts as the input), not a FIFO or socket, not a folder unless
    ``folder_ok``. A device is allowed (written to in place by ``files.atomic_file``)."""
    path = Path(path)
    for source in inputs:
        source = Path(source)
        if _same_file(path, source):
            raise EdgeSDKError(f"{what} {str(path)!r} is an input of this command; write to another path")
        try:
            inside = source.is_dir() and path.resolve().is_relative_to(source.resolve())
        except (OSError, RuntimeError):
            inside = False
        if inside:
            raise EdgeSDKError(f"{what} {str(path)!r} lies inside the input {str(source)!r}; write to another path")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise EdgeSDKError(f"{what} {str(path)!r} cannot be written ({exc.strerror})") from None
    if stat.S_ISDIR(mode) and not folder_ok:
        raise EdgeSDKError(f"{what} {str(path)!r} is a folder; give a file name")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise EdgeSDKError(f"{what} {str(path)!r} is {_kind(mode)}; give a regular file name")
    return path
