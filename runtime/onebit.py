"""1-bit storage of a model file whose binary weights are runs of +-1.0 float32 values.

A binary network's exported file (.pte or .onnx) holds each binary convolution's weights as fp32 +-1: 32 bits
for one bit of information. ``pack`` finds every run of consecutive 4-byte words equal to +1.0f or -1.0f (at
any byte alignment: protobuf does not align) and stores the file as a skeleton without those runs plus one bit
per word; ``unpack`` rebuilds the exact original bytes, checked against its SHA-256, at load time. The format
does not need to know how ExecuTorch's XNNPACK delegate or ONNX lays out a tensor: it is lossless on any bytes.

Container (``*.1bit``): b"EDGESDK1BIT\\0", a little-endian u32 header length, a JSON header (original size and
SHA-256, runs as [offset, words] in original-file coordinates, skeleton and bit sizes), the skeleton, the bits
(numpy ``packbits`` order: bit 1 = -1.0).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError

MAGIC = b"EDGESDK1BIT\0"
SUFFIX = ".1bit"
PLUS_ONE, MINUS_ONE = 0x3F800000, 0xBF800000
MIN_RUN_WORDS = 64  # shorter runs are left in the skeleton: not worth an index entry


def sign_runs(data: bytes, min_words: int = MIN_RUN_WORDS) -> list[tuple[int, int]]:
    """Non-overlapping (byte offset, word count) of every run of >= ``min_words`` +-1.0f words, in file order."""
    runs: list[tuple[int, int]] = []
    for phase in range(4):
        usable = (len(data) - phase) // 4
        if usable <= 0:
            continue
        words = np.frombuffer(data, dtype="<u4", count=usable, offset=phase)
        is_sign = (words == PLUS_ONE) | (words == MINUS_ONE)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], is_sign.astype(np.int8), [0]))))
        for start, stop in zip(edges[0::2], edges[1::2], strict=True):
            if stop - start >= min_words:
                runs.append((phase + 4 * int(start), int(stop - start)))
    runs.sort()
    kept: list[tuple[int, int]] = []
    for offset, words in runs:  # runs found at two phases cannot share bytes, but make sure
        if kept and offset < kept[-1][0] + 4 * kept[-1][1]:
            continue
        kept.append((offset, words))
    return kept


def pack(data: bytes, min_words: int = MIN_RUN_WORDS) -> tuple[bytes, dict]:
    """The ``.1bit`` container of ``data`` and its header (runs, sizes)."""
    runs = sign_runs(data, min_words)
    skeleton, bits, cursor = bytearray(), [], 0
    for offset, words in runs:
        skeleton += data[cursor:offset]
        values = np.frombuffer(data, dtype="<u4", count=words, offset=offset)
        bits.append(values == MINUS_ONE)
        cursor = offset + 4 * words
    skeleton += data[cursor:]
    packed = np.packbits(np.concatenate(bits)).tobytes() if bits else b""
    header = {"original_size": len(data), "original_sha256": hashlib.sha256(data).hexdigest(),
              "runs": [[o, w] for o, w in runs], "skeleton_size": len(skeleton), "bits_size": len(packed),
              "binary_words": int(sum(w for _, w in runs))}
    text = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + bytes(skeleton) + packed, header


def read_header(blob: bytes) -> tuple[dict, int]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise EdgeSDKError("not a 1-bit model container (bad magic)")
    (length,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    if length > len(blob) - start:
        raise EdgeSDKError("1-bit model container is truncated (its header runs past the file)")
    try:
        header = json.loads(blob[start:start + length])
    except (ValueError, RecursionError):
        raise EdgeSDKError("1-bit model container header is not JSON") from None
    _check_header(header, len(blob) - start - length)
    return header, start + length


def _check_header(header: object, body_bytes: int) -> None:
    """The runs must tile the original in order, the skeleton fill exactly the gaps and the bits cover every run word,
    all inside the file: a header that lies is refused before anything is allocated (as runtime/cpp/src/onebit.cpp)."""
    def bad(why: str) -> EdgeSDKError:
        return EdgeSDKError(f"1-bit model container header is malformed ({why}); re-export the bundle")

    if not isinstance(header, dict):
        raise bad("not an object")
    counts = {}
    for key in ("original_size", "skeleton_size", "bits_size", "binary_words"):
        value = header.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"{key} is not a count")
        counts[key] = value
    digest = header.get("original_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise bad("original_sha256 is not a SHA-256")
    runs = header.get("runs")
    if not isinstance(runs, list):
        raise bad("runs is not a list")
    cursor = words = 0
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 and v >= 0 for v in run)):
            raise bad("a run is not [offset, words]")
        offset, count = run
        if offset < cursor or offset > counts["original_size"] or count > (counts["original_size"] - offset) // 4:
            raise bad("runs overlap or leave the original file")
        cursor, words = offset + 4 * count, words + count
    if words != counts["binary_words"] or (words + 7) // 8 > counts["bits_size"]:
        raise bad("binary_words does not match the runs and bits")
    if counts["original_size"] - 4 * words != counts["skeleton_size"]:
        raise bad("skeleton_size does not match the runs")
    if counts["skeleton_size"] + counts["bits_size"] > body_bytes:
        raise bad("the container is truncated")


def unpack(blob: bytes) -> bytes:
    """The original model bytes: skeleton with every run of +-1.0f put back from its bits."""
    header, body = read_header(blob)
    skeleton = memoryview(blob)[body:body + header["skeleton_size"]]
    bit_bytes = np.frombuffer(blob, dtype=np.uint8, count=header["bits_size"], offset=body + header["skeleton_size"])
    signs = np.unpackbits(bit_bytes)[:header["binary_words"]].astype(bool)
    out = bytearray(header["original_size"])
    cursor_in = cursor_out = used = 0
    for offset, words in header["runs"]:
        gap = offset - cursor_out
        out[cursor_out:offset] = skeleton[cursor_in:cursor_in + gap]
        cursor_in += gap
        values = np.where(signs[used:used + words], np.uint32(MINUS_ONE), np.uint32(PLUS_ONE)).astype("<u4")
        out[offset:offset + 4 * words] = values.tobytes()
        used += words
        cursor_out = offset + 4 * words
    out[cursor_out:] = skeleton[cursor_in:]
    if hashlib.sha256(out).hexdigest() != header["original_sha256"]:
        raise EdgeSDKError("1-bit model container is corrupt (rebuilt bytes do not match their checksum)")
    return bytes(out)


def model_source(path: Path) -> Path | bytes:
    """What a backend loads: the path itself, or the unpacked bytes of a ``.1bit`` container."""
    if path.suffix != SUFFIX:
        return path
    try:
        return unpack(path.read_bytes())
    except OSError as exc:
        raise EdgeSDKError(f"cannot read {path}: {exc.strerror or exc}") from exc
