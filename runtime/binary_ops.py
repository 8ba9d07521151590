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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgesdk.runtime.cpp_backend import built_library
from edgesdk.runtime.errors import EdgeSDKError

if TYPE_CHECKING:
    from edgesdk.runtime.bundle import Bundle, ComponentInfo

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


# ---- which graph an ONNX Runtime session of a BNN bundle opens ----

KERNEL_ENV = "EDGESDK_BINARY_KERNEL"  # "auto" (default: the binary graph where the op library is found) or "float"
OP_NAME = f"{DOMAIN}::{BINARY_CONV}"


@dataclass(frozen=True)
class OnnxKernelChoice:
    """The graph to open: ``path``, with ``library`` to register for it (None: a float graph), ``kernel`` to show
    ("binary avx512", "float"; None for a bundle that offers no binary graph) and ``note``, one line saying why a
    bundle that offers the binary graph runs the float one."""

    path: Path
    library: Path | None
    kernel: str | None
    note: str | None = None


def onnx_kernel_choice(bundle: Bundle, info: ComponentInfo) -> OnnxKernelChoice:
    """The binary graph of ``info`` where the bundle offers one and this runtime can run it, else the float graph
    (with a note saying why). A bundle without a binary graph gets its float graph and no kernel name."""
    float_path = bundle.path_of(info.files["onnx"])
    offered = info.binary_kernel.get("onnx")
    if offered is None:
        return OnnxKernelChoice(float_path, None, None)

    def fallback(why: str) -> OnnxKernelChoice:
        return OnnxKernelChoice(float_path, None, "float",
                                f"component {info.name!r} runs its float ONNX graph, not the binary one: {why}")

    choice = os.environ.get(KERNEL_ENV, "auto")
    if choice not in ("auto", "float"):
        raise EdgeSDKError(f"{KERNEL_ENV}={choice!r}: choose auto or float")
    if choice == "float":
        return fallback(f"{KERNEL_ENV}=float")
    if offered["op"] != OP_NAME:
        return fallback(f"it needs op {offered['op']}, which this runtime does not know (it has {OP_NAME})")
    try:
        library = ort_ops_library()
    except EdgeSDKError as e:
        return fallback(str(e))
    if library is None:
        return fallback(f"{DEFAULT_LIBRARY.name} is not built (`make cpp` builds it where ONNX Runtime's "
                        f"onnxruntime_c_api.h is found; {LIBRARY_ENV} names a build)")
    try:
        isa = binary_isa_name(library)
    except OSError as e:  # not a loadable library
        return fallback(f"{str(library)!r} cannot be loaded ({e})")
    except (EdgeSDKError, AttributeError) as e:  # a forced path this CPU cannot run; a library without the symbol
        return fallback(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return OnnxKernelChoice(bundle.path_of(offered["file"]), library, f"binary {isa}")
