"""The bundle manifest's schema (docs/bundle-schema.json) and the checks a schema cannot say.

``validate_manifest`` checks a parsed manifest against the schema, a small JSON Schema subset that the C++ reader
(runtime/cpp/src/schema.cpp) implements the same way from the same file: the two readers must accept and refuse the
same manifests (tests/test_bundle_schema.py and the ctest ``schema_corpus`` run one mutation corpus through both).
``check_consistency`` adds the cross-field rules (dynamic ranges, static batches, shapes against the model section),
``check_assets`` the asset files (.npy headers before any data, the token table and the noise schedule).
Every refusal is one line naming the manifest field. Nothing here imports more than numpy.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError

# next to this module (a link to docs/bundle-schema.json in a checkout, the file itself in a wheel)
SCHEMA_PATH = Path(__file__).with_name("bundle-schema.json")
MAX_MANIFEST_BYTES = 16 << 20  # the largest manifests written (Stable Diffusion, with sensitivity tables) take ~1 MB
MAX_JSON_ASSET_BYTES = 64 << 20  # SD's CLIP tokenizer asset is ~2 MB
MAX_DEPTH = 512  # as the C++ JSON reader: deeper nesting is refused
MAX_TENSOR_ELEMENTS = 1 << 30  # one tensor at its largest batch: 4 GiB of float32
MAX_VOCABULARY = 1 << 20  # token table rows (SD-1.5: 49408)
_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs"}
_KEYWORDS = {"type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
             "minProperties", "maxProperties", "items", "minItems", "maxItems", "minimum", "maximum",
             "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "$ref", "anyOf"}
# .npy dtypes both runtimes read (runtime/cpp/src/npy.cpp); object arrays never
NPY_DTYPES = {"<f4", "<f8", "<i8", "<i4", "|u1", "<u4"}
MAX_PATTERN_INPUT = 4096  # longer strings never match a pattern (std::regex recurses per character)


def refuse(where: str, problem: str) -> EdgeSDKError:
    return EdgeSDKError(f"manifest field {where or '(top level)'}: {problem}; the bundle is refused")


@cache
def load_schema() -> dict[str, Any]:
    """The schema, checked to use only the supported keywords (a typo in it must not silently accept anything)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

    def check(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            raise ValueError(f"bundle schema {where}: not an object")
        unknown = set(node) - _KEYWORDS - _ANNOTATIONS
        if unknown:
            raise ValueError(f"bundle schema {where}: unsupported keyword(s) {sorted(unknown)}")
        for key in ("properties", "$defs"):
            for name, child in node.get(key, {}).items():
                check(child, f"{where}/{key}/{name}")
        for key in ("additionalProperties", "propertyNames", "items"):
            if isinstance(node.get(key), dict):
                check(node[key], f"{where}/{key}")
        for i, child in enumerate(node.get("anyOf", [])):
            check(child, f"{where}/anyOf/{i}")

    check(schema, "#")
    return schema


def _kind(value: Any) -> str:
    """The JSON type of a parsed value. An integer is a number written without fraction or exponent (Python's json
    makes those ints; a bool is never one)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches_type(value: Any, wanted: str) -> bool:
    kind = _kind(value)
    if wanted == "number":  # a schema "number" is finite: NaN and infinities are never a valid setting
        return kind == "integer" or (kind == "number" and math.isfinite(value))
    return kind == wanted


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is not 1.0."""
    if _kind(a) != _kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def shown(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _range_text(schema: dict[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))

    def number(x: Any) -> str:
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)

    if low is not None and high is not None:
        return f" {'>' if 'exclusiveMinimum' in schema else ''}{number(low)}..{number(high)}"
    if low is not None:
        return f" {'>' if 'exclusiveMinimum' in schema else '>='} {number(low)}"
    return f" <= {number(high)}" if high is not None else ""


def describe(schema: dict[str, Any]) -> str:
    """What a schema node expects, in words ("an integer 1..65536")."""
    schema = _resolve(schema)
    if "const" in schema:
        return shown(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(shown(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(describe(s) for s in schema["anyOf"])
    types = schema.get("type")
    names = types if isinstance(types, list) else [types] if types else ["any value"]
    articles = {"integer": "an integer", "number": "a finite number", "string": "a string", "boolean": "a boolean",
                "null": "null", "array": "an array", "object": "an object", "any value": "any value"}
    text = " or ".join(articles[n] for n in names)
    if any(n in ("integer", "number") for n in names):
        text += _range_text(schema)
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    return text


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"bundle schema: unsupported $ref {ref!r}")
        schema = load_schema()["$defs"][ref.removeprefix("#/$defs/")]
    return schema


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    schema = _resolve(schema)
    if "anyOf" in schema:
        if not any(_accepts(value, option) for option in schema["anyOf"]):
            raise refuse(where, f"expected {describe(schema)}, got {shown(value)}")
    types = schema.get("type")
    if types is not None:
        wanted = types if isinstance(types, list) else [types]
        if not any(_matches_type(value, t) for t in wanted):
            raise refuse(where, f"expected {describe(schema)}, got {shown(value)}")
    if "const" in schema and not _same(value, schema["const"]):
        raise refuse(where, f"expected {shown(schema['const'])}, got {shown(value)}")
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        raise refuse(where, f"expected {describe(schema)}, got {shown(value)}")
    kind = _kind(value)
    if kind in ("integer", "number"):
        if kind == "number" and not math.isfinite(value) and any(
                k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            raise refuse(where, f"expected {describe(schema)}, got {shown(value)}")
        too_low = ("minimum" in schema and value < schema["minimum"]) or \
                  ("exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"])
        too_high = ("maximum" in schema and value > schema["maximum"]) or \
                   ("exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"])
        if too_low or too_high:
            raise refuse(where, f"expected {describe(schema)}, got {shown(value)}")
    elif kind == "string":
        if "minLength" in schema and len(value) < schema["minLength"] or \
                "maxLength" in schema and len(value) > schema["maxLength"]:
            raise refuse(where, f"expected a string of {schema.get('minLength', 0)}..{schema.get('maxLength', '')} "
                                f"characters, got {len(value)} characters")
        if "pattern" in schema and (len(value) > MAX_PATTERN_INPUT or re.fullmatch(schema["pattern"], value) is None):
            raise refuse(where, f"expected a string matching {schema['pattern']}, got {shown(value)}")
    elif kind == "array":
        if "minItems" in schema and len(value) < schema["minItems"] or \
                "maxItems" in schema and len(value) > schema["maxItems"]:
            raise refuse(where, f"expected {schema.get('minItems', 0)}..{schema.get('maxItems', '')} items, "
                                f"got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{where}[{i}]")
    elif kind == "object":
        if "minProperties" in schema and len(value) < schema["minProperties"] or \
                "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise refuse(where, f"expected {schema.get('minProperties', 0)}..{schema.get('maxProperties', '')} "
                                f"entries, got {len(value)}")
        for key in schema.get("required", []):
            if key not in value:
                raise refuse(_join(where, key), "required but missing")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema and not _accepts(key, schema["propertyNames"]):
                raise refuse(where, f"key {shown(key)} is not {describe(schema['propertyNames'])}")
            if key in properties:
                _check(item, properties[key], _join(where, key))
            elif extra is False:
                raise refuse(_join(where, key), "unknown key")
            elif isinstance(extra, dict):
                _check(item, extra, _join(where, key))


def _accepts(value: Any, schema: dict[str, Any]) -> bool:
    try:
        _check(value, schema, "")
    except EdgeSDKError:
        return False
    return True


def validate_manifest(manifest: Any) -> None:
    """Refuse a manifest the schema does not accept, naming the first field that is wrong."""
    _check(manifest, load_schema(), "")


def parse_manifest(text: bytes, what: str) -> dict[str, Any]:
    """JSON as both readers parse it: UTF-8, at most MAX_DEPTH levels, strings that have a UTF-8 form."""
    try:
        manifest = json.loads(text.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise EdgeSDKError(f"{what} is not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           "re-export the bundle") from None
    except UnicodeDecodeError:
        raise EdgeSDKError(f"{what} is not JSON (not UTF-8 text); re-export the bundle") from None
    except RecursionError:
        raise EdgeSDKError(f"{what} is not JSON this runtime reads (nesting deeper than {MAX_DEPTH} levels); "
                           "re-export the bundle") from None
    _check_text(manifest, what)
    if not isinstance(manifest, dict):
        raise EdgeSDKError(f"{what} must hold a JSON object; re-export the bundle")
    return manifest


def _check_text(value: Any, what: str) -> None:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EdgeSDKError(f"{what} is not JSON this runtime reads (nesting deeper than {MAX_DEPTH} levels); "
                               "re-export the bundle")
        strings = [item] if isinstance(item, str) else list(item) if isinstance(item, dict) else []
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise EdgeSDKError(f"{what} is not JSON this runtime reads (a lone UTF-16 surrogate); "
                                   "re-export the bundle") from None
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refused (without blocking) when it is a link, FIFO or device, or larger than limit."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise EdgeSDKError(f"{what} is a symbolic link; a bundle's manifest must be a regular file")
        if not stat.S_ISREG(info.st_mode):
            raise EdgeSDKError(f"{what} is not a regular file; the bundle is refused")
        if info.st_size > limit:
            raise EdgeSDKError(f"{what} is {info.st_size} bytes, more than the {limit} a bundle may use; "
                               "the bundle is refused")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise EdgeSDKError(f"cannot read {what}: {e.strerror or e}") from None
    if len(data) > limit:
        raise EdgeSDKError(f"{what} is more than {limit} bytes; the bundle is refused")
    return data


# ---- cross-field rules ----

def _int_dims(shape: list[Any]) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in shape]


def check_consistency(manifest: dict[str, Any]) -> None:
    """What the schema cannot say: ranges that agree, static batches inside them, tensors of bounded size that
    agree with the model section. Runs after validate_manifest (types and bounds are known good)."""
    model = manifest.get("model", {})
    files = manifest["files"]
    for name, entry in manifest["components"].items():
        where = f"components.{name}"
        ranges = entry.get("dynamic_dims", {})
        for dim, bounds in ranges.items():
            if bounds["min"] > bounds["max"]:
                raise refuse(f"{where}.dynamic_dims.{dim}", f"min {bounds['min']} is above max {bounds['max']}")
        batch_range = ranges.get("batch")
        for backend, static in entry.get("static_shapes", {}).items():
            at = f"{where}.static_shapes.{backend}"
            if backend not in entry["files"]:
                raise refuse(at, f"names backend {backend!r}, which has no file in {where}.files")
            batches = [static["batch"], *(int(b) for b in static.get("methods", {}))]
            for batch in batches:
                if batch_range is not None and not batch_range["min"] <= batch <= batch_range["max"]:
                    raise refuse(at, f"static batch {batch} is outside the dynamic range "
                                     f"{batch_range['min']}..{batch_range['max']}")
        engine = entry.get("tensorrt_engine")
        if isinstance(engine, str) and engine not in files:
            raise refuse(f"{where}.tensorrt_engine", f"{engine!r} is not listed in files")
        _check_binary_kernel(entry, where, files)
        for side in ("inputs", "outputs"):
            seen: set[str] = set()
            for i, spec in enumerate(entry[side]):
                at = f"{where}.{side}[{i}]"
                if spec["name"] in seen:
                    raise refuse(f"{at}.name", f"{spec['name']!r} is listed twice")
                seen.add(spec["name"])
                elements = 1
                for j, dim in enumerate(spec["shape"]):
                    if isinstance(dim, str):
                        if dim not in ranges:
                            raise refuse(f"{at}.shape[{j}]", f"dynamic dim {dim!r} has no range in "
                                                             f"{where}.dynamic_dims")
                        dim = ranges[dim]["max"]
                    elements *= dim
                if elements > MAX_TENSOR_ELEMENTS:
                    raise refuse(f"{at}.shape", f"{elements} elements at the largest batch, more than "
                                                f"{MAX_TENSOR_ELEMENTS}")
                _check_against_model(spec, model, f"{at}.shape")
    for a, b in (("tile_overlap", "tile"), ("timestep", "train_timesteps")):
        if a in model and b in model and model[a] >= model[b]:
            raise refuse(f"model.{a}", f"{model[a]} must be below model.{b} ({model[b]})")
    if "channels" in model:
        for key in ("mean", "std"):
            if key in model and len(model[key]) != model["channels"]:
                raise refuse(f"model.{key}", f"has {len(model[key])} values for {model['channels']} channels")


# components.<name>.binary_kernel.onnx: the graph whose binary convolutions run on edgesdk's op (export/binary_onnx.py).
# The schema file only says binary_kernel is an object (its per-runtime keys are each reader's own); this reader checks
# the entry it uses.
BINARY_KERNEL_ONNX = {
    "type": "object",
    "required": ["file", "op", "binary_layers", "packed_weight_bytes"],
    "properties": {
        "file": {"$ref": "#/$defs/path"},
        "op": {"type": "string", "minLength": 1, "maxLength": 128},
        "binary_layers": {"type": "integer", "minimum": 1, "maximum": 100000},
        "packed_weight_bytes": {"type": "integer", "minimum": 1, "maximum": 1099511627776},
    },
}


def _check_binary_kernel(entry: dict[str, Any], where: str, files: dict[str, Any]) -> None:
    """The ONNX binary-kernel graph is a listed (checksummed) file, offered beside a float ONNX graph to fall back
    to; its contents are checked when a session opens it (edgesdk.runtime.backends)."""
    onnx_kernel = entry.get("binary_kernel", {}).get("onnx")
    if onnx_kernel is None:
        return
    at = f"{where}.binary_kernel.onnx"
    _check(onnx_kernel, BINARY_KERNEL_ONNX, at)
    if onnx_kernel["file"] not in files:
        raise refuse(f"{at}.file", f"{onnx_kernel['file']!r} is not listed in files")
    if "onnx" not in entry["files"]:
        raise refuse(at, f"a binary-kernel graph needs the float ONNX graph beside it ({where}.files.onnx), for "
                         "runtimes without the op")
    if onnx_kernel["file"] == entry["files"]["onnx"]:
        raise refuse(f"{at}.file", "names the float ONNX graph itself")


def _check_against_model(spec: dict[str, Any], model: dict[str, Any], where: str) -> None:
    """The tensors the pipelines build from the model section must have its sizes."""
    dims = _int_dims(spec["shape"])
    expected: list[tuple[int, str]] = []
    if spec["name"] == "latent" and len(dims) == 4:
        expected = [(1, "latent_channels"), (2, "latent_size"), (3, "latent_size")]
    elif spec["name"] == "input_embeddings" and len(dims) == 3:
        expected = [(1, "max_tokens"), (2, "text_width")]
    for index, key in expected:
        if key in model and dims[index] is not None and dims[index] != model[key]:
            raise refuse(f"{where}[{index}]", f"{dims[index]} disagrees with model.{key} ({model[key]})")


# ---- asset files ----

def read_npy_header(path: Path, what: str) -> tuple[str, tuple[int, ...], int]:
    """(dtype, shape, data offset) of an .npy file, checked before any data is read: a dtype the runtimes know (never
    an object array, so nothing can be unpickled), C order, and a file exactly as long as the shape says."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 10 or head[:6] != b"\x93NUMPY" or head[6] not in (1, 2, 3):
                raise EdgeSDKError(f"{what} is not an .npy file (bad magic); re-export the bundle")
            if head[6] == 1:
                length, start = struct.unpack_from("<H", head, 8)[0], 10
            else:
                if len(head) < 12:
                    raise EdgeSDKError(f"{what} is a truncated .npy file; re-export the bundle")
                length, start = struct.unpack_from("<I", head, 8)[0], 12
            if length > 65536 or start + length > size:
                raise EdgeSDKError(f"{what} has an .npy header of {length} bytes, past the file or too long; "
                                   "re-export the bundle")
            f.seek(start)
            text = f.read(length).decode("latin-1")
    except OSError as e:
        raise EdgeSDKError(f"cannot read {what}: {e.strerror or e}") from None
    match = re.fullmatch(r"\{'descr': '([<>|=][a-zA-Z][0-9]*)', 'fortran_order': (True|False), "
                         r"'shape': \(((?:[0-9]+, ?)*[0-9]*)\), *\} *\n?", text.strip(" \n") + "\n")
    if match is None:
        raise EdgeSDKError(f"{what} has an .npy header this runtime does not read ({text.strip()[:60]!r}); "
                           "re-export the bundle")
    dtype, fortran, dims = match.groups()
    if dtype not in NPY_DTYPES:
        raise EdgeSDKError(f"{what} holds dtype {dtype!r}; bundles use little-endian numbers only (never objects); "
                           "re-export the bundle")
    if fortran == "True":
        raise EdgeSDKError(f"{what} is in Fortran order; bundles store arrays in C order; re-export the bundle")
    shape = tuple(int(d) for d in dims.replace(" ", "").split(",") if d)
    itemsize = int(dtype[2:])
    count = math.prod(shape)
    if count * itemsize != size - start - length:
        raise EdgeSDKError(f"{what} holds {size - start - length} data bytes, but its header says {shape} {dtype} "
                           f"({count * itemsize} bytes); re-export the bundle")
    return dtype, shape, start + length


def check_assets(root: Path, manifest: dict[str, Any]) -> None:
    """Asset files agree with the model section: every .npy header, the token table (vocab, text_width) float32,
    the noise schedule (train_timesteps,) of finite values in (0, 1); JSON assets of a bounded size."""
    model = manifest.get("model", {})
    for name, rel in manifest.get("assets", {}).items():
        where = f"assets.{name}"
        path = root / rel
        if rel.endswith(".json"):
            if path.stat().st_size > MAX_JSON_ASSET_BYTES:
                raise refuse(where, f"{rel!r} is larger than {MAX_JSON_ASSET_BYTES} bytes")
            continue
        if not rel.endswith(".npy"):
            continue
        dtype, shape, offset = read_npy_header(path, f"bundle asset {rel!r}")
        if name == "token_embedding":
            if len(shape) != 2 or dtype != "<f4" or not 1 <= shape[0] <= MAX_VOCABULARY:
                raise refuse(where, f"expected a (vocabulary 1..{MAX_VOCABULARY}, text_width) float32 table, got "
                                    f"{shape} {dtype}")
            if "text_width" in model and shape[1] != model["text_width"]:
                raise refuse(where, f"the table is {shape[1]} wide, model.text_width is {model['text_width']}")
            row = _first_non_finite_row(path, shape, offset)
            if row is not None:
                raise refuse(where, f"row {row} of the token table holds NaN or infinite values")
        elif name == "alphas_cumprod":
            if len(shape) != 1 or dtype not in ("<f4", "<f8"):
                raise refuse(where, f"expected a 1-D float schedule, got {shape} {dtype}")
            if "train_timesteps" in model and shape[0] != model["train_timesteps"]:
                raise refuse(where, f"the schedule has {shape[0]} steps, model.train_timesteps is "
                                    f"{model['train_timesteps']}")
            values = np.fromfile(path, dtype=dtype, count=shape[0], offset=offset)
            if not (np.all(np.isfinite(values)) and np.all(values > 0) and np.all(values < 1)):
                raise refuse(where, "the schedule holds values that are not finite numbers in (0, 1)")


_FINITE_CHUNK_BYTES = 4 << 20  # the token table is checked in slices this big: bounded memory for SD's 152 MB table


def _first_non_finite_row(path: Path, shape: tuple[int, ...], offset: int) -> int | None:
    """The first row of a (rows, width) float32 .npy holding NaN or an infinity, or None: read through a memory map in
    slices, so only one slice of a large table is resident at a time."""
    rows, width = shape
    if rows * width == 0:
        return None
    table = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(rows, width))
    try:
        step = max(1, _FINITE_CHUNK_BYTES // (4 * width))
        for start in range(0, rows, step):
            finite = np.isfinite(table[start:start + step]).all(axis=1)
            if not finite.all():
                return start + int(np.argmin(finite))
        return None
    finally:
        del table
