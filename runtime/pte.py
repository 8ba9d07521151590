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
