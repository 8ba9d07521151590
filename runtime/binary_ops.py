"""The ONNX Runtime custom-op library of edgesdk (runtime/cpp/ort/edgesdk_ort_ops.cpp, built by `make cpp` as
runtime/cpp/build/libedgesdk_ort_ops.so): where it is, which instruction path its binary convolution runs, and the
packed weight format of its op ``ai.edgesdk::BinaryConv2d`` (numpy only: this module is part of the torch-free
runtime).

The op computes y = conv2d(s(x), B) with s(x) = clamp(x * 2^100, -1, 1) and B the +-1 weights (+1 where W >= 0),
zero padding, exactly (binary_conv.hpp says how). Inputs: X float32 (N, C, H, W) and W_packed uint8
(out_channels, kh, kw, ceil(C / 8)) from :func:`pack_binary_weights`; attributes ``in_channels``,
``kernel_shape``, ``strides`` and ``pads`` (ONNX order: top, left, bottom, right).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from edgesdk.runtime.cpp_backend import built_library
from edgesdk.runtime.errors import EdgeSDKError

DOMAIN = "ai.edgesdk"
BINARY_CONV = "BinaryConv2d"
OPSET_VERSION = 1
LIBRARY_ENV = "EDGESDK_ORT_OPS_LIB"
ISA_ENV = "EDGESDK_BINARY_ISA"  # scalar, avx2, avx512, neon or auto: forces the kernel's instruction path
DEFAULT_LIBRARY = Path(__file__).resolve().parent / "cpp" / "build" / "libedgesdk_ort_ops.so"  # a checkout's build


def ort_ops_library() -> Path | None:
    """The custom-op library: ``$EDGESDK_ORT_OPS_LIB`` when set (it must exist), else the checkout's build if made,
    else None."""
    return built_library(LIBRARY_ENV, DEFAULT_LIBRARY)


def binary_isa_name(library: Path) -> str:
    """The instruction path the library's binary convolution runs now ("avx512", "avx2", "neon" or "scalar");
    raises EdgeSDKError when $EDGESDK_BINARY_ISA names one this CPU cannot run."""
    lib = ctypes.CDLL(str(library))
    lib.edgesdk_binary_isa_name.restype = ctypes.c_char_p
    lib.edgesdk_binary_isa_name.argtypes = []
    name = lib.edgesdk_binary_isa_name().decode()
    if name.startswith("error:"):
        raise EdgeSDKError(f"{ISA_ENV}={os.environ.get(ISA_ENV)!r}: {name[len('error: '):]}")
    return name


def pack_binary_weights(weights: np.ndarray) -> np.ndarray:
    """W_packed of BinaryConv2d from float weights (out_channels, in_channels, kh, kw): numpy.packbits, big bit
    order, of (W < 0) along input channels, shape (out_channels, kh, kw, ceil(in_channels / 8)), one bit a weight."""
    if weights.ndim != 4:
        raise ValueError(f"binary conv weights must be (out, in, kh, kw), got shape {weights.shape}")
    negative = np.ascontiguousarray(np.transpose(weights < 0, (0, 2, 3, 1)))
    return np.packbits(negative, axis=-1, bitorder="big")
