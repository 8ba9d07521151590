"""Atomic writes for every file and folder the SDK hands the user.

An output is written under a temporary name in its own folder and renamed into place once complete: a crash or
error mid-write leaves the previous output intact and no temporary behind. The finished output gets the permissions
a plain ``open()``/``mkdir()`` would have given it, 0666/0777 less the umask: ``tempfile.mkstemp``/``mkdtemp`` make
0600/0700, and some writers (safetensors, ONNX external data) replace the file they are given with a 0600 one of
their own, so the mode is set when the output is published rather than trusted from creation.

Temporary names are ``.tmp-<random>-<name>`` (they keep the output's suffix, which ffmpeg and PIL read to pick a
format) and a replaced folder is moved aside as ``.old-<random>-<name>`` for the moment of the swap.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.limits import is_device

TEMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"


def current_umask() -> int:
    """The process umask. Linux reports it in /proc; elsewhere it can only be read by setting it (and putting it
    straight back), which races with threads creating files meanwhile."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _make_plain(path: Path, umask: int) -> None:
    """The mode open()/mkdir() would have given ``path``; an executable file stays executable."""
    if path.is_dir():
        os.chmod(path, 0o777 & ~umask)
    else:
        executable = path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def _sibling(path: Path, prefix: str) -> Path:
    return path.with_name(f"{prefix}{secrets.token_hex(4)}-{path.name}")


def _fsync(path: Path) -> None:
    """Flush a file's bytes (or a folder's entries) to disk, so a rename never publishes data still in memory."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and folders on some platforms) refuse fsync; the rename is still atomic
        pass
    finally:
        os.close(fd)


def temp_file_for(path: Path) -> Path:
    """An empty file beside ``path``, with the mode ``open(path, "w")`` would have created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _sibling(path, TEMP_PREFIX)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # 32 random bits collided; draw again
            continue


def temp_folder_for(path: Path) -> Path:
    """An empty folder beside ``path``, with the mode ``os.mkdir(path)`` would have created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _sibling(path, TEMP_PREFIX)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


def publish_file(tmp: Path, path: Path) -> None:
    """Make the finished ``tmp`` the file ``path`` in one rename (replacing any old one)."""
    _make_plain(tmp, current_umask())
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def publish_folder(tmp: Path, path: Path) -> None:
    """Make the finished folder ``tmp`` the folder ``path``. A folder cannot replace another in one rename: an old
    one is moved aside, the new one moved in, then the old one removed; if moving in fails the old one goes back."""
    umask = current_umask()
    for root, _, names in os.walk(tmp):
        for name in names:
            entry = Path(root, name)
            if not entry.is_symlink():
                _make_plain(entry, umask)
                _fsync(entry)
        _make_plain(Path(root), umask)
        _fsync(Path(root))
    if not path.exists():
        os.replace(tmp, path)
    else:
        old = _sibling(path, OLD_PREFIX)
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    _fsync(path.parent)


def _write_failed(path: Path, exc: OSError) -> EdgeSDKError:
    reason = exc.strerror or str(exc)
    return EdgeSDKError(f"cannot write {str(path)!r}: {reason}; nothing was written")


@contextlib.contextmanager
def _device_file(path: Path) -> Iterator[Path]:
    """A device the user named (``-o /dev/null``): the output is made in a private temporary file, then its bytes
    are written to the device itself. Renaming over a device would replace it with a regular file (as root, that
    turns /dev/full into a PNG); writing also reports the device's own errors (ENOSPC from /dev/full)."""
    handle, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as source, open(path, "wb", buffering=0) as device:
            while chunk := source.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    written = device.write(view)
                    if not written:
                        raise OSError(28, "the device accepts no more bytes")
                    view = view[written:]
    except OSError as exc:
        raise _write_failed(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """``with atomic_file(out) as tmp: write tmp`` — ``out`` appears complete when the block ends, or not at all.

    The temporary keeps ``out``'s suffix, for writers that pick a format from it. A device (``/dev/null``) is
    written to in place, never replaced. A write error (disk full, read-only folder) is an ``EdgeSDKError``."""
    path = Path(path)
    if is_device(path):
        with _device_file(path) as tmp:
            yield tmp
        return
    try:
        tmp = temp_file_for(path)
    except OSError as exc:
        raise _write_failed(path, exc) from None
    try:
        yield tmp
        publish_file(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_failed(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """``with atomic_folder(out) as tmp: fill tmp`` — the folder ``out`` is replaced by the complete new one when
    the block ends, or left as it was."""
    path = Path(path)
    tmp = temp_folder_for(path)
    try:
        yield tmp
        publish_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``Path.write_bytes``, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``Path.write_text``, atomically."""
    return write_bytes(path, text.encode(encoding))
