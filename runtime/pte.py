"""What an ExecuTorch program file says about its methods' memory, read without torch or the flatbuffers package.

A .pte is a flatbuffer (schema ``program.fbs`` of ExecuTorch, file identifier "ET12"). Each execution plan (a
method) carries ``non_const_buffer_sizes``: the bytes of every arena its memory plan lays activations, inputs and
outputs out in (entry 0 is reserved and always 0). A runtime allocates those arenas when it loads the method — the
Python binding and the C++ ``Module`` as zero-filled vectors, so they are resident at once. Tensors inside an XNNPACK
delegate are not in the plan: XNNPACK keeps them in its own workspace.

Only the fields below are read, by their index in the schema, which ExecuTorch keeps stable (fields are only ever
appended to flatbuffer tables).
"""

from __future__ import annotations

import struct
from pathlib import Path

from edgesdk.runtime.errors import EdgeSDKError

_IDENTIFIER = b"ET12"
_PROGRAM_EXECUTION_PLAN = 1  # table Program { version, execution_plan, ... }
_PLAN_NAME, _PLAN_NON_CONST_BUFFER_SIZES = 0, 8  # table ExecutionPlan { name, ..., non_const_buffer_sizes, ... }


class _Flatbuffer:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)

    def _u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Position of a table's field ``index``, or None where the field is absent (its default)."""
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        vtable_size = struct.unpack_from("<H", self.data, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else None

    def indirect(self, pos: int) -> int:
        return pos + self._u32(pos)

    def vector(self, pos: int) -> tuple[int, int]:
        """(count, position of the first element) of the vector a field at ``pos`` points to."""
        start = self.indirect(pos)
        return self._u32(start), start + 4

    def string(self, pos: int) -> str:
        count, first = self.vector(pos)
        return bytes(self.data[first:first + count]).decode("utf-8")

    def int64s(self, pos: int) -> list[int]:
        count, first = self.vector(pos)
        return list(struct.unpack_from(f"<{count}q", self.data, first))


def planned_buffer_bytes(program: Path | bytes) -> dict[str, int]:
    """Bytes of the memory-planned arenas per method of a .pte (a path or its bytes): what loading the method
    allocates for its activations, inputs and outputs, beside the weights."""
    data = program.read_bytes() if isinstance(program, Path) else program
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise EdgeSDKError("not an ExecuTorch program (no ET12 identifier); re-export the bundle")
    buffer = _Flatbuffer(data)
    try:
        root = buffer.indirect(0)
        plans = buffer.field(root, _PROGRAM_EXECUTION_PLAN)
        if plans is None:
            return {}
        count, first = buffer.vector(plans)
        sizes: dict[str, int] = {}
        for i in range(count):
            plan = buffer.indirect(first + 4 * i)
            name_field = buffer.field(plan, _PLAN_NAME)
            name = buffer.string(name_field) if name_field is not None else f"method {i}"
            sizes_field = buffer.field(plan, _PLAN_NON_CONST_BUFFER_SIZES)
            sizes[name] = sum(buffer.int64s(sizes_field)) if sizes_field is not None else 0
        return sizes
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise EdgeSDKError(f"ExecuTorch program is truncated or corrupt ({exc}); re-export the bundle") from None



_EXTENDED_MAGIC = b"eh00"


def verify_program(data: bytes | memoryview, what: str) -> None:
    """Cheap structural checks of a .pte (its bytes) before ExecuTorch sees it, so a corrupt file is a one-line error
    in milliseconds, before torch is even imported: the ET12 identifier, an extended header whose program and segment
    sizes fit the file, and execution plans whose names are readable. (The binding logs a bad identifier's bytes as
    text, and a non-UTF-8 log line aborts the process; ExecuTorch's own InternalConsistency verification follows.)"""
    head = bytes(data[:64])
    flat = _check_head(head, len(data), what)
    _check_plans(bytes(data[:flat]), what)


def verify_program_file(path: Path) -> None:
    """verify_program on a file, reading only its flatbuffer part (not the weight segments of a 1 GB UNet)."""
    what = repr(str(path))
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = f.seek(0, 2)
            flat = _check_head(head, size, what)
            f.seek(0)
            data = f.read(flat)
    except OSError as e:
        raise EdgeSDKError(f"cannot read {what}: {e.strerror or e}") from None
    _check_plans(data, what)


def _check_head(head: bytes, size: int, what: str) -> int:
    """Checks the identifier and extended header; returns the size of the flatbuffer part."""
    refused = f"{what} is not a valid ExecuTorch program"
    if len(head) < 8 or head[4:8] != _IDENTIFIER:
        raise EdgeSDKError(f"{refused} (no ET12 identifier; {size} bytes); re-export the bundle")
    if head[8:12] != _EXTENDED_MAGIC:
        return size
    if len(head) < 32:
        raise EdgeSDKError(f"{refused} (truncated header); re-export the bundle")
    length, program_size, segment_base = struct.unpack_from("<IQQ", head, 12)
    segment_size = struct.unpack_from("<Q", head, 32)[0] if length > 24 and len(head) >= 40 else 0
    if program_size > size or segment_base + segment_size > size or (segment_base and segment_base < program_size):
        raise EdgeSDKError(f"{refused} (its header says {max(program_size, segment_base + segment_size)} bytes, the "
                           f"file has {size}: truncated); re-export the bundle")
    return program_size


def _check_plans(data: bytes, what: str) -> None:
    try:
        planned_buffer_bytes(data)
    except (EdgeSDKError, ValueError, OverflowError):
        raise EdgeSDKError(f"{what} is not a valid ExecuTorch program (its method table is unreadable); "
                           "re-export the bundle") from None
