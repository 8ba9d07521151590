"""ExecuTorch without torch: the C++ runtime of runtime/cpp behind its C ABI (runtime/cpp/capi/edgesdk_c.h), loaded
with ctypes.

The executorch Python binding links libtorch (~360 MB resident before any model loads), so a core install (no
torch) cannot use it. The wheel's own libexecutorch.so, kernel and XNNPACK libraries need only the C and C++
standard libraries, and the C++ runtime built on them runs the same .pte programs (ctest checks it against this
runtime). `make cpp` builds runtime/cpp/build/libedgesdk_c.so; ``EDGESDK_CPP_LIB`` names another build.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.backends import ManifestNamedSession, _prepare
from edgesdk.runtime.bundle import Bundle, ComponentInfo
from edgesdk.runtime.errors import EdgeSDKError

LIBRARY_ENV = "EDGESDK_CPP_LIB"
DEFAULT_LIBRARY = Path(__file__).resolve().parent / "cpp" / "build" / "libedgesdk_c.so"  # a source checkout's build
_INTERNAL = 99  # edgesdk::Status::kInternal: a bug, not bad input
_MAX_RANK = 16

_library: Any = None


def built_library(env: str, default: Path) -> Path | None:
    """A library of the C++ build (runtime/cpp): ``$env`` when set (it must exist), else ``default`` (a source
    checkout's build) if it was made, else None."""
    configured = os.environ.get(env)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise EdgeSDKError(f"{env}={configured!r} is not a file; build it with `make cpp` "
                               f"(runtime/cpp/build/{default.name})")
        return path
    return default if default.is_file() else None


def library_path() -> Path | None:
    """The C library to load: ``$EDGESDK_CPP_LIB`` when set (it must exist), else the checkout's build if made."""
    return built_library(LIBRARY_ENV, DEFAULT_LIBRARY)


def _load() -> Any:
    global _library
    if _library is not None:
        return _library
    path = library_path()
    if path is None:
        raise EdgeSDKError("no C++ runtime library: build it with `make cpp` (runtime/cpp/build/libedgesdk_c.so) or "
                           f"set {LIBRARY_ENV}")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # e.g. the executorch libraries it was linked against have moved
        raise EdgeSDKError(f"cannot load the C++ runtime library {str(path)!r}: {e}; rebuild it with `make cpp`"
                           ) from None
    i64, handle, text, size = ctypes.c_int64, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    lib.edgesdk_session_open.argtypes = [text, text, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(handle), text, size]
    lib.edgesdk_session_open.restype = ctypes.c_int
    lib.edgesdk_session_close.argtypes = [handle]
    lib.edgesdk_session_close.restype = None
    lib.edgesdk_session_exact_batches.argtypes = [handle, ctypes.POINTER(i64), i64]
    lib.edgesdk_session_exact_batches.restype = i64
    lib.edgesdk_session_run.argtypes = [handle, i64, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                                        ctypes.POINTER(i64), text, size]
    lib.edgesdk_session_run.restype = ctypes.c_int
    lib.edgesdk_session_output_count.argtypes = [handle]
    lib.edgesdk_session_output_count.restype = i64
    lib.edgesdk_session_output_shape.argtypes = [handle, i64, ctypes.POINTER(i64), i64]
    lib.edgesdk_session_output_shape.restype = i64
    lib.edgesdk_session_output_copy.argtypes = [handle, i64, ctypes.c_void_p]
    lib.edgesdk_session_output_copy.restype = i64
    lib.edgesdk_session_kernel.argtypes = [handle]
    lib.edgesdk_session_kernel.restype = text
    lib.edgesdk_session_repacked_weight_bytes.argtypes = [handle]
    lib.edgesdk_session_repacked_weight_bytes.restype = i64
    lib.edgesdk_session_row_packed_weight_bytes.argtypes = [handle]
    lib.edgesdk_session_row_packed_weight_bytes.restype = i64
    _library = lib
    return lib


def _check(status: int, error: ctypes.Array, what: str) -> None:
    if status == 0:
        return
    message = error.value.decode("utf-8", "replace")
    if status == _INTERNAL:
        raise RuntimeError(f"C++ runtime: {what}: {message}")
    raise EdgeSDKError(message)


class CppExecuTorchSession(ManifestNamedSession):
    """An ExecuTorch .pte component run by the C++ runtime (static-batch chunking and batch methods included)."""

    def __init__(self, bundle: Bundle, info: ComponentInfo, threads: int | None = None,
                 lean_memory: bool = False) -> None:
        self._lib = _load()
        self._info = info
        self._handle = ctypes.c_void_p()
        error = ctypes.create_string_buffer(2048)
        # the bundle was verified when Python opened it: no second pass of hashing
        status = self._lib.edgesdk_session_open(str(bundle.root).encode(), info.name.encode(), 0, int(lean_memory),
                                                int(threads or 0), ctypes.byref(self._handle), error, len(error))
        _check(status, error, f"opening {info.name!r}")

    @property
    def kernel(self) -> str:
        """Which kernel path runs: "float", or "binary <isa> (...)" for a BNN bundle's binary-kernel program."""
        return self._lib.edgesdk_session_kernel(self._handle).decode()

    @property
    def repacked_weight_bytes(self) -> int:
        """Bytes of binary-layer weights repacked into the kernel's layout so far (0 for the float program)."""
        return int(self._lib.edgesdk_session_repacked_weight_bytes(self._handle))

    @property
    def row_packed_weight_bytes(self) -> int:
        """Bytes of row-packed words derived for binary layers whose kernel row fits one word (16 channels at 3x3)."""
        return int(self._lib.edgesdk_session_row_packed_weight_bytes(self._handle))

    @property
    def exact_batches(self) -> set[int]:
        batches = (ctypes.c_int64 * 64)()
        count = self._lib.edgesdk_session_exact_batches(self._handle, batches, 64)
        return {int(b) for b in batches[:min(count, 64)]}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in _prepare(inputs, self._info.inputs,
                                                                               self._info.name)]
        shapes = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]  # kept alive through the call
        data = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        dims = (ctypes.c_void_p * len(arrays))(*[ctypes.cast(s, ctypes.c_void_p) for s in shapes])
        ranks = (ctypes.c_int64 * len(arrays))(*[a.ndim for a in arrays])
        error = ctypes.create_string_buffer(2048)
        status = self._lib.edgesdk_session_run(self._handle, len(arrays), data, dims, ranks, error, len(error))
        _check(status, error, f"running {self._info.name!r}")
        outputs = []
        for index in range(self._lib.edgesdk_session_output_count(self._handle)):
            shape = (ctypes.c_int64 * _MAX_RANK)()
            rank = self._lib.edgesdk_session_output_shape(self._handle, index, shape, _MAX_RANK)
            if not 0 <= rank <= _MAX_RANK:
                raise RuntimeError(f"C++ runtime: output {index} of {self._info.name!r} has rank {rank}")
            out = np.empty(tuple(shape[:rank]), dtype=np.float32)
            self._lib.edgesdk_session_output_copy(self._handle, index, out.ctypes.data)
            outputs.append(out)
        return dict(zip(self.output_names, outputs, strict=True))

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.edgesdk_session_close(handle)
            self._handle = ctypes.c_void_p()
