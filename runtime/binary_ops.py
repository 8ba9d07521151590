"""The ONNX Runtime custom-op library of edgesdk (runtime/cpp/ort/edgesdk_ort_ops.cpp, built by `make cpp` as
runtime/cpp/build/libedgesdk_ort_ops.so): where it is, which instruction path its binary convolution runs, and the
packed weight format of its op ``ai.edgesdk::BinaryConv2d`` (numpy only: this module is part of the torch-free
runtime).

The op computes y = conv2d(s(x), B) with s(x) = clamp(x * 2^100, -1, 1) and B the +-1 weights (+1 where W >= 0),
zero padding, exactly (binary_conv.hpp says how). Inputs: X float32 (N, C, H, W) and W_packed uint8
(ceil(O / 8), kh, kw, ceil(C / 64), 8, 8) from :func:`pack_binary_weights`: the kernel's own layout, which it reads
in place; attributes ``in_channels``, ``out_channels``, ``kernel_shape``, ``strides`` and ``pads`` (ONNX order:
top, left, bottom, right).
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


OUTPUT_BLOCK = 8  # output channels per block of the layout (the kernel's kOutputBlock)
WORD_BITS = 64  # input channels per word


def packed_weights_shape(out_channels: int, in_channels: int, kernel_h: int, kernel_w: int) -> tuple[int, ...]:
    """Shape of the packed weights of a layer: (blocks, kh, kw, words, 8 lanes, 8 bytes) with blocks =
    ceil(out_channels / 8) and words = ceil(in_channels / 64)."""
    return (-(-out_channels // OUTPUT_BLOCK), kernel_h, kernel_w, -(-in_channels // WORD_BITS), OUTPUT_BLOCK, 8)


def pack_binary_weights(weights: np.ndarray) -> np.ndarray:
    """W_packed from float weights (out_channels, in_channels, kh, kw): the binary convolution kernel's layout, so
    that it runs on the array in place. Little-endian uint64 words stored as bytes, shape
    :func:`packed_weights_shape`: word [block][ky][kx][word][lane] holds in bit c the sign bit (W < 0) of output
    channel block * 8 + lane and input channel word * 64 + c; bits past in_channels and lanes past out_channels
    are 0 (the kernel never reads them into a result: see :func:`unpack_binary_weights`)."""
    if weights.ndim != 4:
        raise ValueError(f"binary conv weights must be (out, in, kh, kw), got shape {weights.shape}")
    out_channels, in_channels, kh, kw = weights.shape
    blocks, _, _, words, lanes, _ = packed_weights_shape(out_channels, in_channels, kh, kw)
    negative = np.zeros((blocks * lanes, kh, kw, words * WORD_BITS), dtype=bool)
    negative[:out_channels, :, :, :in_channels] = np.transpose(weights < 0, (0, 2, 3, 1))
    # little bit order: channel 8k + b of a word is bit b of byte k, which is bit 8k + b of the little-endian word
    word_bytes = np.packbits(negative, axis=-1, bitorder="little").reshape(blocks, lanes, kh, kw, words, 8)
    return np.ascontiguousarray(word_bytes.transpose(0, 2, 3, 4, 1, 5))


def unpack_binary_weights(packed: np.ndarray, in_channels: int, out_channels: int) -> np.ndarray:
    """The sign bits (W < 0), bool (out_channels, in_channels, kh, kw), of W_packed: :func:`pack_binary_weights`
    inverted. Bits past in_channels and lanes past out_channels are dropped, as the kernel's result ignores them
    (the activations' ``nonzero`` plane is 0 past in_channels, and lanes past out_channels are never stored).
    Raises ValueError unless ``packed`` is uint8 of the layer's shape."""
    if packed.dtype != np.uint8 or packed.ndim != 6:
        raise ValueError(f"packed binary weights must be uint8 with 6 dimensions, got {packed.dtype} "
                         f"{tuple(packed.shape)}")
    kh, kw = int(packed.shape[1]), int(packed.shape[2])
    want = packed_weights_shape(out_channels, in_channels, kh, kw)
    if tuple(packed.shape) != want:
        raise ValueError(f"packed binary weights must have shape {want} for {out_channels} output and "
                         f"{in_channels} input channels, got {tuple(packed.shape)}")
    blocks, _, _, words, lanes, _ = want
    bits = np.unpackbits(packed, axis=-1, bitorder="little")  # (blocks, kh, kw, words, lanes, 64)
    bits = bits.transpose(0, 4, 1, 2, 3, 5).reshape(blocks * lanes, kh, kw, words * WORD_BITS)
    return np.ascontiguousarray(bits[:out_channels, :, :, :in_channels].transpose(0, 3, 1, 2)).astype(bool)


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
