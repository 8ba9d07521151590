"""The fuzz corpus: hostile or broken inputs per category, generated per case into the case's own folder.

A case is a command line (run in its folder), a setup that writes the inputs it names there, and what counts as
behaving: by default a clean refusal (exit 2, one `error: ` line, nothing written, inputs untouched). A case whose
input is harmless may also succeed ("success allowed"); its output is then checked.

The same generators make the bundle, manifest, model, asset and token cases for both CLIs, over a text-to-image
bundle each runs: the micro synthetic ONNX bundle (edgesdk.runtime.testing) for `edgesdk`, the shipped tiny-sd's
ExecuTorch programs for `edgesdk-run`. Mutations of a bundle rewrite the file they change and its checksum in
manifest.json, so that the content checks are reached rather than the checksum check.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Setup = Callable[[Path, Any], None]
Validate = Callable[[Path], "str | None"]

CATEGORIES = ("bundle", "manifest", "model", "asset", "tokens", "checkpoint", "image", "video", "numpy", "args")


@dataclass
class Case:
    name: str
    category: str
    argv: list[str]
    setup: Setup
    success_allowed: bool = False
    outputs: tuple[str, ...] = ()  # what a success may create (fnmatch patterns, relative to the case folder)
    validate: Validate | None = None
    timeout: float | None = None  # s; None: the runner's (runner.py)

    def may_write(self, name: str, succeeded: bool) -> bool:
        return succeeded and self.success_allowed and any(fnmatch.fnmatch(name, p) for p in self.outputs)


# ---- small writers ----

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def write_manifest(bundle: Path, manifest: Any) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")  # NaN stays NaN


def replace_file(bundle: Path, rel: str, data: bytes, rehash: bool = True) -> None:
    """Write `data` as bundle/rel (never through a hard link) and, with `rehash`, record its checksum."""
    path = bundle / rel
    if path.is_symlink() or path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if rehash:
        manifest = read_manifest(bundle)
        manifest["files"][rel] = hashlib.sha256(data).hexdigest()
        write_manifest(bundle, manifest)


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_lying_header(shape: tuple[int, ...], dtype: str = "<f4", payload: bytes = b"\0" * 64) -> bytes:
    """A .npy whose header claims `shape` over only `payload`."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    header: dict[str, Any] = {}
    data = b""
    names = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int32"): "I32",
             np.dtype("float16"): "F16"}
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        offsets = [len(data), len(data) + len(raw)]
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": offsets}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_raw(header: Any, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def png_bytes(width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, colour: int = 2,
              truncate_idat: bool = False) -> bytes:
    """A PNG with an honest (or, with `rows` too short for the header, lying) IHDR and valid CRCs."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    if rows is None:
        channels = {0: 1, 2: 3, 6: 4}[colour]
        rows = b"".join(b"\0" + bytes(range(width * channels * bit_depth // 8)) for _ in range(height))
    idat = zlib.compress(rows)
    if truncate_idat:
        idat = idat[: len(idat) // 2]
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming width x height, followed by a few bytes of pixels."""
    pixels = b"\0" * 48
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b",\0\0\0\0" + struct.pack(
        "<HH", width, height) + b"\0\x02\x02D\x01\0;"


def valid_png(width: int = 8, height: int = 8, grey: bool = False, seed: int = 0) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (height, width) if grey else (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def fifo(path: Path) -> None:
    os.mkfifo(path)


def device(path: Path, minor: int) -> None:
    """A character device like /dev/null (minor 3) or /dev/full (minor 7) at `path`: a node of our own where we
    may make one (root), else a symlink to the machine's. A command that replaces it replaces only our copy."""
    try:
        import stat

        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (PermissionError, OSError):
        os.symlink({3: "/dev/null", 7: "/dev/full"}[minor], path)


def zero_device(path: Path) -> None:
    os.symlink("/dev/zero", path)


def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def is_png(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} was not written"
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as e:  # noqa: BLE001 - any failure to decode is the complaint
        return f"{path.name} is not a readable PNG ({type(e).__name__})"
    return None


def png_output(name: str = "out.png") -> Validate:
    return lambda case_dir: is_png(case_dir / name)


def file_output(name: str) -> Validate:
    return lambda case_dir: None if (case_dir / name).is_file() and (case_dir / name).stat().st_size else \
        f"{name} was not written"


def still_device(name: str) -> Validate:
    def check(case_dir: Path) -> str | None:
        path = case_dir / name
        if path.is_symlink() or path.is_char_device():
            return None
        return f"{name} was replaced by a regular file"
    return check


# ---- targets: a text-to-image bundle and the command that reads it, per CLI ----

@dataclass
class Target:
    cli: str  # python | cpp
    base: str  # the base bundle (tests/fuzz/bases.py)
    backend: str  # the manifest's files key the command loads
    model_rel: str  # a model file the command loads (its unet)
    prompt: str = "a red circle"

    def sample(self, *extra: str, bundle: str = "b.edge", output: str = "out.png",
               prompt: str | None = None) -> list[str]:
        argv = ["sample", bundle, "-p", prompt or self.prompt, "--steps", "1", "-o", output]
        if self.cli == "python" and self.backend != "onnx":
            argv += ["--backend", self.backend]
        return argv + list(extra)


PY_T2I = Target("python", "synthetic", "onnx", "onnx/unet.onnx")
CPP_T2I = Target("cpp", "tiny-sd", "executorch", "executorch/unet.pte")


def with_bundle(base: str, mutate: Callable[[Path], None] | None = None, extra: Setup | None = None) -> Setup:
    def setup(case_dir: Path, bases: Any) -> None:
        bundle = bases.copy(base, case_dir / "b.edge")
        if mutate is not None:
            mutate(bundle)
        if extra is not None:
            extra(case_dir, bases)
    return setup


def edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """A manifest mutation: `change` edits the parsed manifest in place (or returns a replacement)."""
    def mutate(bundle: Path) -> None:
        manifest = read_manifest(bundle)
        replaced = change(manifest)
        write_manifest(bundle, manifest if replaced is None else replaced)
    return mutate


def rewrite(rel: str, make: Callable[[bytes], bytes], rehash: bool = True) -> Callable[[Path], None]:
    """A file mutation: `make` turns the file's bytes into the new bytes (checksum updated)."""
    def mutate(bundle: Path) -> None:
        replace_file(bundle, rel, make((bundle / rel).read_bytes()), rehash=rehash)
    return mutate


def flip(offsets: range) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        out = bytearray(data)
        for i in offsets:
            if i < len(out):
                out[i] ^= 0xFF
        return bytes(out)
    return make


def garbage(size: int, seed: int = 1) -> Callable[[bytes], bytes]:
    return lambda _data: np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def outside_file(case_dir: Path, name: str = "outside.bin", data: bytes = b"secret\n") -> Path:
    path = case_dir / name
    path.write_bytes(data)
    return path


# ---- bundles: layout, symlinks, special files ----

def bundle_cases(t: Target) -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    rel = t.model_rel

    def case(name: str, setup: Setup, **kw: Any) -> None:
        add(Case(f"bundle/{name}", "bundle", kw.pop("argv", t.sample()), setup, **kw))

    def bare(make: Callable[[Path], None]) -> Setup:
        return lambda case_dir, _bases: make(case_dir)

    case("missing", bare(lambda d: None))
    case("is_a_file", bare(lambda d: (d / "b.edge").write_text("hello")))
    case("empty_folder", bare(lambda d: (d / "b.edge").mkdir()))
    case("no_manifest", with_bundle(t.base, lambda b: (b / "manifest.json").unlink()))
    case("manifest_is_folder", with_bundle(t.base, lambda b: ((b / "manifest.json").unlink(),
                                                               (b / "manifest.json").mkdir())))
    case("manifest_empty", with_bundle(t.base, lambda b: (b / "manifest.json").write_bytes(b"")))
    case("manifest_not_utf8", with_bundle(t.base, lambda b: (b / "manifest.json").write_bytes(b"\xff\xfe{\x00\x81")))
    case("manifest_truncated", with_bundle(t.base, lambda b: (b / "manifest.json").write_bytes(
        (b / "manifest.json").read_bytes()[:200])))
    case("manifest_json_array", with_bundle(t.base, lambda b: (b / "manifest.json").write_text("[1, 2, 3]")))
    case("manifest_json_null", with_bundle(t.base, lambda b: (b / "manifest.json").write_text("null")))
    case("manifest_deep_nesting", with_bundle(t.base, lambda b: (b / "manifest.json").write_text(
        '{"deep": ' + "[" * 200_000 + "]" * 200_000 + ", " + (b / "manifest.json").read_text()[1:])))
    case("manifest_fifo", with_bundle(t.base, lambda b: ((b / "manifest.json").unlink(), fifo(b / "manifest.json"))))
    case("manifest_dev_zero", with_bundle(t.base, lambda b: ((b / "manifest.json").unlink(),
                                                              zero_device(b / "manifest.json"))))
    case("manifest_sparse_3gb", with_bundle(t.base, lambda b: ((b / "manifest.json").unlink(),
                                                                sparse(b / "manifest.json", 3 << 30))))

    def manifest_link_out(b: Path) -> None:
        outside = b.parent / "outside-manifest.json"
        outside.write_bytes((b / "manifest.json").read_bytes())
        (b / "manifest.json").unlink()
        os.symlink("../outside-manifest.json", b / "manifest.json")
    case("manifest_symlink_outside", with_bundle(t.base, manifest_link_out))

    def model_link_out(b: Path) -> None:
        outside = b.parent / "outside-model"
        outside.write_bytes((b / rel).read_bytes())
        (b / rel).unlink()
        os.symlink(os.path.relpath(outside, (b / rel).parent), b / rel)
    case("model_symlink_outside", with_bundle(t.base, model_link_out))
    case("model_missing", with_bundle(t.base, lambda b: (b / rel).unlink()))
    case("model_is_folder", with_bundle(t.base, lambda b: ((b / rel).unlink(), (b / rel).mkdir())))
    case("model_fifo", with_bundle(t.base, lambda b: ((b / rel).unlink(), fifo(b / rel))))
    case("model_dev_zero", with_bundle(t.base, lambda b: ((b / rel).unlink(), zero_device(b / rel))))
    case("model_fifo_unverified", with_bundle(t.base, lambda b: ((b / rel).unlink(), fifo(b / rel))),
         argv=t.sample("--no-verify") if t.cli == "cpp" else t.sample())

    def asset_link_out(b: Path) -> None:
        asset = b / "assets/token_embedding.npy"
        outside = b.parent / "outside.npy"
        outside.write_bytes(asset.read_bytes())
        asset.unlink()
        os.symlink("../../outside.npy", asset)
    case("asset_symlink_outside", with_bundle(t.base, asset_link_out))
    case("assets_folder_missing", with_bundle(t.base, lambda b: [p.unlink() for p in (b / "assets").iterdir()]
                                              and (b / "assets").rmdir()))

    def link_bundle_folder(case_dir: Path, bases: Any) -> None:
        bases.copy(t.base, case_dir / "real.edge")
        os.symlink("real.edge", case_dir / "b.edge")
    case("bundle_is_symlink", link_bundle_folder, success_allowed=True, outputs=("out.png",),
         validate=png_output())
    case("unlisted_extra_file", with_bundle(t.base, lambda b: (b / "notes.txt").write_text("hi")),
         success_allowed=True, outputs=("out.png",), validate=png_output())
    case("name_too_long", bare(lambda d: None), argv=t.sample(bundle="x" * 300 + ".edge"))
    case("checksum_mismatch", with_bundle(t.base, rewrite(rel, flip(range(200, 216)), rehash=False)))
    return cases


# ---- manifests: content of a checksum-valid manifest ----

def manifest_cases(t: Target) -> list[Case]:
    b = t.backend
    unet = "unet"
    huge = 10**12

    def shape_dim(value: Any) -> Callable[[dict[str, Any]], Any]:
        def change(m: dict[str, Any]) -> None:
            m["components"][unet]["inputs"][0]["shape"][1] = value
        return change

    def model_key(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
        def change(m: dict[str, Any]) -> None:
            m["model"][key] = value
        return change

    def set_(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
        def change(m: dict[str, Any]) -> None:
            node = m
            for key in path[:-1]:
                node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
            node[path[-1]] = value
        return change

    def delete(*path: Any) -> Callable[[dict[str, Any]], Any]:
        def change(m: dict[str, Any]) -> None:
            node = m
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
        return change

    def first_file(m: dict[str, Any]) -> str:
        return sorted(m["files"])[0]

    comp = ("components", unet)
    refuse: dict[str, Callable[[dict[str, Any]], Any]] = {
        "format_version_true": set_(("format_version",), True),
        "format_version_string": set_(("format_version",), "1"),
        "format_version_float": set_(("format_version",), 1.5),
        "format_version_2": set_(("format_version",), 2),
        "format_version_null": set_(("format_version",), None),
        "format_missing": delete("format"),
        "format_wrong": set_(("format",), "zip"),
        "components_list": lambda m: m.__setitem__("components", sorted(m["components"])),
        "components_empty": set_(("components",), {}),
        "components_missing": delete("components"),
        "component_not_object": set_(comp, 42),
        "component_files_missing": delete(*comp, "files"),
        "component_file_not_string": set_((*comp, "files", b), 42),
        "inputs_not_list": set_((*comp, "inputs"), "latent"),
        "input_name_missing": delete(*comp, "inputs", 0, "name"),
        "input_shape_not_list": set_((*comp, "inputs", 0, "shape"), 4),
        "input_dim_negative": shape_dim(-4),
        "input_dim_zero": shape_dim(0),
        "input_dim_huge": shape_dim(huge),
        "input_dim_true": shape_dim(True),
        "input_dim_float": shape_dim(4.5),
        "input_dim_unknown_symbol": shape_dim("banana"),
        "input_dtype_float128": set_((*comp, "inputs", 0, "dtype"), "float128"),
        "input_dtype_object": set_((*comp, "inputs", 0, "dtype"), "object"),
        "input_dtype_number": set_((*comp, "inputs", 0, "dtype"), 42),
        "output_shape_wrong": set_((*comp, "outputs", 0, "shape"), ["batch", 3, 2, 2]),
        "image_size_negative": model_key("image_size", -8),
        "image_size_zero": model_key("image_size", 0),
        "image_size_huge": model_key("image_size", 10**9),
        "image_size_string": model_key("image_size", "32"),
        "image_size_true": model_key("image_size", True),
        "image_size_float": model_key("image_size", 8.5),
        "latent_channels_zero": model_key("latent_channels", 0),
        "latent_size_huge": model_key("latent_size", 10**6),
        "max_tokens_huge": model_key("max_tokens", 10**9),
        "max_tokens_zero": model_key("max_tokens", 0),
        "text_width_negative": model_key("text_width", -1),
        "train_timesteps_zero": model_key("train_timesteps", 0),
        "train_timesteps_huge": model_key("train_timesteps", huge),
        "guidance_nan": model_key("guidance_scale", float("nan")),
        "guidance_inf": model_key("guidance_scale", float("inf")),
        "guidance_string": model_key("guidance_scale", "strong"),
        "prediction_unknown": model_key("prediction", "banana"),
        "model_not_object": set_(("model",), []),
        "model_missing": delete("model"),
        "batch_min_zero": set_((*comp, "dynamic_dims", "batch", "min"), 0),
        "batch_max_huge": set_((*comp, "dynamic_dims", "batch", "max"), 10**9),
        "batch_min_above_max": set_((*comp, "dynamic_dims", "batch"), {"min": 8, "max": 1}),
        "dynamic_dims_not_object": set_((*comp, "dynamic_dims"), "batch"),
        "static_batch_huge": set_((*comp, "static_shapes", b, "batch"), 10**9),
        "static_batch_zero": set_((*comp, "static_shapes", b, "batch"), 0),
        "static_batch_true": set_((*comp, "static_shapes", b, "batch"), True),
        "assets_not_object": set_(("assets",), []),
        "asset_missing": delete("assets", "token_embedding"),
        "asset_path_absolute": set_(("assets", "token_embedding"), "/etc/hostname"),
        "asset_path_dotdot": set_(("assets", "token_embedding"), "../outside.bin"),
        "files_not_object": lambda m: m.__setitem__("files", sorted(m["files"])),
        "file_checksum_not_string": lambda m: m["files"].__setitem__(first_file(m), 42),
        "file_entry_dotdot": lambda m: m["files"].__setitem__("../outside.bin", hashlib.sha256(b"secret\n")
                                                              .hexdigest()),
        "file_entry_absolute": lambda m: m["files"].__setitem__("/etc/hostname", "0" * 64),
        "family_number": set_(("family",), 42),
        "task_unknown": set_(("task",), "banana"),
        "quantization_not_object": set_(("quantization",), "int8"),
        "component_renamed": lambda m: m["components"].__setitem__("ünet", m["components"].pop(unet)),
    }
    if t.cli == "cpp":
        methods = (*comp, "static_shapes", b, "methods")
        refuse.update({
            "methods_odd_key": set_(methods, {"banana": "forward"}),
            "methods_huge_batch_key": set_(methods, {"1000000000": "forward", "2": "forward"}),
            "methods_negative_key": set_(methods, {"-3": "forward", "2": "forward"}),
            "methods_unknown_method": set_(methods, {"2": "no_such_method", "3": "forward_b3"}),
            "methods_not_object": set_(methods, ["forward"]),
            "methods_value_number": set_(methods, {"2": 7}),
        })
    allow = {
        # the family is a label (the schema bounds it as a name); the task decides what opens a bundle, in both
        # readers (runtime/bundle.py Bundle.task, bundle.cpp Bundle::task), so a new family of a known task opens
        "family_unknown": set_(("family",), "banana"),
        "extra_top_level_key": set_(("comment",), "made by hand"),
        "extra_model_key": model_key("colour", "blue"),
    }
    cases = [Case(f"manifest/{name}", "manifest", t.sample(),
                  with_bundle(t.base, edit(change), extra=lambda d, _b: outside_file(d)))
             for name, change in refuse.items()]
    cases += [Case(f"manifest/{name}", "manifest", t.sample(), with_bundle(t.base, edit(change)),
                   success_allowed=True, outputs=("out.png",), validate=png_output())
              for name, change in allow.items()]
    return cases


# ---- model files (checksums updated) ----

def model_cases(t: Target) -> list[Case]:
    rel = t.model_rel
    other = rel.replace("unet", "text_encoder")
    mutations: dict[str, Callable[[Path], None]] = {
        "garbage": rewrite(rel, garbage(4096)),
        "garbage_large": rewrite(rel, garbage(1 << 20, seed=2)),
        "truncated_half": rewrite(rel, lambda d: d[: len(d) // 2]),
        "truncated_100_bytes": rewrite(rel, lambda d: d[:100]),
        "zero_bytes": rewrite(rel, lambda d: b""),
        "header_flipped": rewrite(rel, flip(range(0, 32))),
        "header_kept_body_garbage": rewrite(rel, lambda d: d[:64] + garbage(len(d) - 64, seed=3)(d)),
        "another_component": lambda b: replace_file(b, rel, (b / other).read_bytes()),
    }
    if t.backend == "onnx":
        mutations.update(onnx_mutations(rel))
    return [Case(f"model/{name}", "model", t.sample(), with_bundle(t.base, mutate)) for name, mutate in
            mutations.items()]


def onnx_mutations(rel: str) -> dict[str, Callable[[Path], None]]:
    def edit_model(change: Callable[[Any], None]) -> Callable[[Path], None]:
        def mutate(b: Path) -> None:
            import onnx

            model = onnx.load_from_string((b / rel).read_bytes())
            change(model)
            replace_file(b, rel, model.SerializeToString())
        return mutate

    def external_outside(model: Any) -> None:
        # an initializer whose bytes live "outside the bundle": ONNX external data with a relative path up
        tensor = next(t for t in model.graph.initializer if t.name == "time_scale")
        for name in ("raw_data", "float_data"):
            tensor.ClearField(name)
        for key, value in (("location", "../../outside.bin"), ("offset", "0"), ("length", "4")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = 1  # EXTERNAL

    def unknown_op(model: Any) -> None:
        model.graph.node[0].domain = "com.example.evil"
        model.opset_import.add(domain="com.example.evil", version=1)

    def opset_99(model: Any) -> None:
        model.opset_import[0].version = 99

    def huge_reshape(model: Any) -> None:
        from onnx import numpy_helper

        for i, tensor in enumerate(model.graph.initializer):
            if tensor.name == "shift_shape":
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                    np.array([1 << 40, 1 << 20, 1, 1], dtype=np.int64), "shift_shape"))

    def with_outside(change: Callable[[Any], None]) -> Callable[[Path], None]:
        mutate = edit_model(change)
        return lambda b: (outside_file(b.parent), mutate(b))

    return {"onnx_external_data_outside": with_outside(external_outside),
            "onnx_unknown_op_domain": edit_model(unknown_op), "onnx_opset_99": edit_model(opset_99),
            "onnx_huge_reshape": edit_model(huge_reshape)}


def python_pte_cases() -> list[Case]:
    """ExecuTorch programs through the Python CLI (the issue's SIGABRT after 60 s)."""
    rel = "executorch/unet.pte"
    target = Target("python", "tiny-sd", "executorch", rel)
    mutations = {"garbage": rewrite(rel, garbage(4096)), "truncated_half": rewrite(rel, lambda d: d[: len(d) // 2]),
                 "zero_bytes": rewrite(rel, lambda d: b"")}
    return [Case(f"model/pte_{name}", "model", target.sample(), with_bundle("tiny-sd", mutate))
            for name, mutate in mutations.items()]


def onebit_cases(cli: str) -> list[Case]:
    """The 1-bit container of a binary classifier whose header lies (classify)."""
    backend = "executorch" if cli == "cpp" else "onnx"
    rel = f"{backend}/classifier.{'pte' if backend == 'executorch' else 'onnx'}.1bit"
    magic = b"EDGESDK1BIT\0"

    def header_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
        def make(blob: bytes) -> bytes:
            (length,) = struct.unpack_from("<I", blob, len(magic))
            start = len(magic) + 4
            header = json.loads(blob[start:start + length])
            change(header)
            text = json.dumps(header).encode()
            return magic + struct.pack("<I", len(text)) + text + blob[start + length:]
        return make

    lies: dict[str, Callable[[bytes], bytes]] = {
        "original_size_huge": header_edit(lambda h: h.__setitem__("original_size", 1 << 40)),
        "original_size_negative": header_edit(lambda h: h.__setitem__("original_size", -1)),
        "binary_words_huge": header_edit(lambda h: h.__setitem__("binary_words", 1 << 40)),
        "run_beyond_file": header_edit(lambda h: h.__setitem__("runs", [[1 << 30, 1 << 20]])),
        "runs_not_list": header_edit(lambda h: h.__setitem__("runs", "many")),
        "skeleton_size_huge": header_edit(lambda h: h.__setitem__("skeleton_size", 1 << 40)),
        "header_length_huge": lambda blob: magic + struct.pack("<I", 0xFFFFFFF0) + blob[len(magic) + 4:],
        "header_not_json": lambda blob: magic + struct.pack("<I", 4) + b"{{{{" + blob[len(magic) + 8:],
        "truncated": lambda blob: blob[: len(blob) // 3],
        "magic_only": lambda blob: magic,
    }
    # the C++ runtime opens a bundle's binary-kernel program when it has one: --float-kernel makes it open the float
    # program these cases corrupt (the Python runtime runs the float graph unless the ONNX op library is built)
    argv = ["classify", "b.edge", "digit.png"] + (["--backend", backend] if cli == "python" else ["--float-kernel"])
    return [Case(f"model/onebit_{name}", "model", argv,
                 with_bundle("bnn-digits", rewrite(rel, make),
                             extra=lambda d, _b: (d / "digit.png").write_bytes(valid_png(8, 8, grey=True))))
            for name, make in lies.items()]


# ---- assets ----

def asset_cases(t: Target) -> list[Case]:
    emb, alphas, vocab = "assets/token_embedding.npy", "assets/alphas_cumprod.npy", "assets/vocabulary.json"

    def array_edit(rel: str, change: Callable[[np.ndarray], Any], pickle: bool = False) -> Callable[[Path], None]:
        return rewrite(rel, lambda d: npy_bytes(np.asarray(change(np.load(__import__("io").BytesIO(d)))),
                                                allow_pickle=pickle))

    def vocab_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
        def make(data: bytes) -> bytes:
            value = json.loads(data)
            replaced = change(value)
            return json.dumps(value if replaced is None else replaced).encode()
        return rewrite(vocab, make)

    def poison(value: float) -> Callable[[np.ndarray], np.ndarray]:
        def change(a: np.ndarray) -> np.ndarray:
            a = a.copy()
            a.flat[len(a.flat) // 2] = value
            return a
        return change

    refuse: dict[str, Callable[[Path], None]] = {
        "embedding_transposed": array_edit(emb, lambda a: a.T.copy()),
        "embedding_1d": array_edit(emb, lambda a: a.ravel()),
        "embedding_3d": array_edit(emb, lambda a: a[None]),
        "embedding_int64": array_edit(emb, lambda a: a.astype(np.int64)),
        "embedding_complex": array_edit(emb, lambda a: a.astype(np.complex64)),
        "embedding_object_pickled": array_edit(emb, lambda a: np.array([{"x": 1}, None], dtype=object), pickle=True),
        "embedding_not_npy": rewrite(emb, garbage(256)),
        "embedding_empty_rows": array_edit(emb, lambda a: a[:0]),
        "embedding_nan": array_edit(emb, poison(float("nan"))),
        "embedding_inf": array_edit(emb, poison(float("inf"))),
        "embedding_header_lies": rewrite(emb, lambda d: npy_lying_header((1 << 20, 1 << 20))),
        "embedding_header_negative": rewrite(emb, lambda d: npy_lying_header((-5, 8))),
        "embedding_sparse_huge": lambda b: ((b / emb).unlink(), sparse(b / emb, 3 << 30), rehash_sparse(b, emb)),
        "schedule_short": array_edit(alphas, lambda a: a[:10]),
        "schedule_nan": array_edit(alphas, poison(float("nan"))),
        "schedule_above_one": array_edit(alphas, lambda a: a * 0 + 2.0),
        "schedule_negative": array_edit(alphas, lambda a: -a),
        "schedule_2d": array_edit(alphas, lambda a: a[None]),
        "schedule_empty": array_edit(alphas, lambda a: a[:0]),
        "schedule_pickled": array_edit(alphas, lambda a: np.array(["x", 1], dtype=object), pickle=True),
        "vocabulary_not_json": rewrite(vocab, lambda d: b"{tokens"),
        "vocabulary_list": vocab_edit(lambda v: ["a", "b"]),
        "vocabulary_tokens_numbers": vocab_edit(lambda v: v.__setitem__("tokens", list(range(len(v["tokens"]))))),
        "vocabulary_tokens_missing": vocab_edit(lambda v: v.pop("tokens") and None),
        "vocabulary_max_tokens_huge": vocab_edit(lambda v: v.__setitem__("max_tokens", 10**9)),
        "vocabulary_max_tokens_negative": vocab_edit(lambda v: v.__setitem__("max_tokens", -3)),
        "vocabulary_pad_unknown": vocab_edit(lambda v: v.__setitem__("pad", "<nothing>")),
        "vocabulary_empty": vocab_edit(lambda v: v.__setitem__("tokens", [])),
    }
    if t.base != "synthetic":
        refuse.pop("schedule_short", None)  # only the synthetic bundle keeps its schedule as an asset
        for name in [n for n in refuse if n.startswith("schedule_")]:
            refuse.pop(name)
    cases = [Case(f"asset/{name}", "asset", t.sample(), with_bundle(t.base, mutate)) for name, mutate in
             refuse.items()]
    cases.append(Case("asset/embedding_fortran_order", "asset", t.sample(),
                      with_bundle(t.base, array_edit(emb, lambda a: np.asfortranarray(a))), success_allowed=True,
                      outputs=("out.png",), validate=png_output()))
    return cases


def rehash_sparse(bundle: Path, rel: str) -> None:
    """The checksum of a 3 GB sparse file of zeros, computed without reading it."""
    digest = hashlib.sha256()
    block = b"\0" * (1 << 20)
    for _ in range((bundle / rel).stat().st_size >> 20):
        digest.update(block)
    manifest = read_manifest(bundle)
    manifest["files"][rel] = digest.hexdigest()
    write_manifest(bundle, manifest)


# ---- learned tokens (--embedding) ----

def token_cases(t: Target, width: int) -> list[Case]:
    good = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)

    def token_file(data: bytes | Callable[[Path], None]) -> Setup:
        def extra(case_dir: Path, _bases: Any) -> None:
            if callable(data):
                data(case_dir / "tok.safetensors")
            else:
                (case_dir / "tok.safetensors").write_bytes(data)
        return with_bundle(t.base, extra=extra)

    def poisoned(value: float) -> bytes:
        vectors = good.copy()
        vectors[0, width // 2] = value
        return safetensors_bytes({"<tok>": vectors})

    refuse: dict[str, bytes | Callable[[Path], None]] = {
        "nan": poisoned(float("nan")),
        "inf": poisoned(float("inf")),
        "wrong_width": safetensors_bytes({"<tok>": np.ones((1, width + 3), np.float32)}),
        "three_dims": safetensors_bytes({"<tok>": np.ones((1, 1, width), np.float32)}),
        "zero_vectors": safetensors_bytes({"<tok>": np.ones((0, width), np.float32)}),
        "more_vectors_than_tokens": safetensors_bytes({"<tok>": np.ones((4096, width), np.float32)}),
        "int32": safetensors_bytes({"<tok>": np.ones((1, width), np.int32)}),
        "header_length_huge": safetensors_raw({}, length=1 << 60),
        "header_not_json": safetensors_raw(b"{not json}"),
        "offsets_beyond_file": safetensors_raw({"<tok>": {"dtype": "F32", "shape": [1, width],
                                                          "data_offsets": [0, 4 * width]}}, b"\0" * 8),
        "shape_lies": safetensors_raw({"<tok>": {"dtype": "F32", "shape": [1 << 20, 1 << 20],
                                                 "data_offsets": [0, 4 * width]}}, b"\0" * 4 * width),
        "empty_file": b"",
        "garbage": garbage(300)(b""),
        "no_tensors": safetensors_raw({}),
        "fifo": fifo,
        "dev_zero": zero_device,
        "folder": lambda p: p.mkdir(),
        "vocabulary_word_as_token": safetensors_bytes({"red": good}),
    }
    def argv(name: str) -> list[str]:
        prompt = None if name == "vocabulary_word_as_token" else "a <tok> circle"
        return t.sample("--embedding", "tok.safetensors", prompt=prompt)

    cases = [Case(f"tokens/{name}", "tokens", argv(name), token_file(data)) for name, data in refuse.items()]
    cases.append(Case("tokens/valid", "tokens", argv("valid"),
                      token_file(safetensors_bytes({"<tok>": good})), success_allowed=True, outputs=("out.png",),
                      validate=png_output()))
    cases.append(Case("tokens/missing", "tokens", t.sample("--embedding", "nothing.safetensors"),
                      with_bundle(t.base)))
    return cases


# ---- checkpoints (personalize --resume) ----

def personalize_argv(cli: str, *extra: str, output: str = "tok.safetensors", images: str = "imgs",
                     steps: int = 4) -> list[str]:
    """The personalization run the checkpoint bases were made with (bases.py), `steps` long."""
    if cli == "python":
        argv = ["personalize", "b.edge", "--images", images, "--token", "<x>", "--init-word", "cat", "--caption",
                "a {}", "--steps", str(steps), "--checkpoint-every", "1", "-o", output]
    else:
        argv = ["personalize", "b.edge", "--images", images, "--token", "<x>", "--init-word", "circle", "--steps",
                str(steps), "-o", output]
    return argv + list(extra)


def checkpoint_cases(cli: str) -> list[Case]:
    suffix = ".ckpt.npz" if cli == "python" else ".ckpt.safetensors"
    ckpt = "tok.safetensors" + suffix

    def with_checkpoint(change: Callable[[Path], None]) -> Setup:
        def setup(case_dir: Path, bases: Any) -> None:
            bases.personalization(cli, case_dir)
            change(case_dir / ckpt)
        return setup

    def arrays(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
        if cli == "python":
            def mutate(path: Path) -> None:
                with np.load(path) as data:
                    values = {k: data[k] for k in data.files}
                change(values)
                with open(path, "wb") as f:
                    np.savez(f, **values)
        else:
            def mutate(path: Path) -> None:
                from safetensors import safe_open
                from safetensors.numpy import save_file

                with safe_open(str(path), "np") as f:
                    values = {k: f.get_tensor(k) for k in f.keys()}
                    metadata = f.metadata()
                change(values)
                metadata = values.pop("__metadata__", metadata)
                path.unlink()
                save_file(values, str(path), metadata=metadata)
        return mutate

    def poison(key: str, value: float) -> Callable[[dict[str, Any]], None]:
        def change(values: dict[str, Any]) -> None:
            values[key] = values[key].copy()
            values[key][0] = value
        return change

    def scalar(key: str, value: int) -> Callable[[dict[str, Any]], None]:
        def change(values: dict[str, Any]) -> None:
            values[key] = np.full_like(values[key], value)
        return change

    mutations: dict[str, Callable[[Path], None]] = {
        "garbage": lambda p: p.write_bytes(garbage(512)(b"")),
        "zero_bytes": lambda p: p.write_bytes(b""),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "theta_nan": arrays(poison("theta", float("nan"))),
        "theta_inf": arrays(poison("theta", float("inf"))),
        "adam_v_nan": arrays(poison("v", float("nan"))),
        "theta_wrong_length": arrays(lambda v: v.__setitem__("theta", v["theta"][:3].copy())),
        "theta_missing": arrays(lambda v: v.pop("theta") is None),
        "step_negative": arrays(scalar("step", -5)),
        "step_huge": arrays(scalar("step", 10**15)),
        "t_range_reversed": arrays(lambda v: v.__setitem__("t_range", v["t_range"][::-1].copy())),
        "sg_index_huge": arrays(scalar("sg_index", 10**12)),
    }
    if cli == "python":
        mutations["config_not_json"] = arrays(lambda v: v.__setitem__("config", np.array("{not json")))
        mutations["rng_state_garbage"] = arrays(lambda v: v.__setitem__("rng_state", np.array('{"x": 1}')))
        mutations["object_pickled"] = lambda p: _pickled_npz(p)
    else:
        mutations["config_not_json"] = _cpp_meta(ckpt, "config", "{not json")
        mutations["rng_state_garbage"] = _cpp_meta(ckpt, "rng", '{"x": 1}')
        mutations["format_wrong"] = _cpp_meta(ckpt, "format", "edgesdk-zo-cpp-999")
    cases = [Case(f"checkpoint/{name}", "checkpoint", personalize_argv(cli, "--resume"), with_checkpoint(change))
             for name, change in mutations.items()]
    cases.append(Case("checkpoint/valid_resume", "checkpoint", personalize_argv(cli, "--resume"),
                      with_checkpoint(lambda p: None), success_allowed=True, outputs=("tok.safetensors*",),
                      validate=file_output("tok.safetensors")))
    cases.append(Case("checkpoint/resume_without_checkpoint", "checkpoint",
                      personalize_argv(cli, "--resume", output="new.safetensors"),
                      with_checkpoint(lambda p: None)))
    return cases


def _pickled_npz(path: Path) -> None:
    with np.load(path) as data:
        values = {k: data[k] for k in data.files}
    values["theta"] = np.array([{"evil": 1}], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **values)


def _cpp_meta(ckpt: str, key: str, text: str) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        from safetensors import safe_open
        from safetensors.numpy import save_file

        with safe_open(str(path), "np") as f:
            values = {k: f.get_tensor(k) for k in f.keys()}
            metadata = dict(f.metadata())
        metadata[key] = text
        path.unlink()
        save_file(values, str(path), metadata=metadata)
    return mutate


# ---- images (classify; personalize's folder) ----

def image_files() -> dict[str, bytes | Callable[[Path], None]]:
    """Hostile "images": what classify refuses, one file each."""
    return {
        "png_claims_20000_squared": png_bytes(20000, 20000, rows=b"\0" * 64),
        "png_claims_2_31": png_bytes(0x7FFFFFFF, 0x7FFFFFFF, rows=b"\0" * 64),
        "png_zero_width": png_bytes(0, 8, rows=b""),
        "png_truncated": valid_png(8, 8)[:60],
        "png_idat_truncated": png_bytes(8, 8, truncate_idat=True),
        "bmp_claims_2_30_squared": bmp_header(1 << 30, 1 << 30),
        "gif_claims_65535_squared": gif_header(65535, 65535),
        "zero_bytes": b"",
        "text": b"not an image at all\n",
        "fifo": fifo,
        "dev_zero": zero_device,
        "folder": lambda p: p.mkdir(),
        "sparse_3gb": lambda p: sparse(p, 3 << 30),
    }


def image_cases(cli: str) -> list[Case]:
    cases: list[Case] = []
    backend = [] if cli == "cpp" else ["--backend", "onnx"]
    for name, data in image_files().items():
        def setup(case_dir: Path, bases: Any, data: Any = data) -> None:
            bases.copy("bnn-digits", case_dir / "b.edge")
            path = case_dir / "x.png"
            data(path) if callable(data) else path.write_bytes(data)
        cases.append(Case(f"image/{name}", "image", ["classify", "b.edge", "x.png", *backend], setup))

    def good(data: bytes, name: str = "x.png") -> Setup:
        return with_bundle("bnn-digits", extra=lambda d, _b: (d / name).write_bytes(data))
    cases.append(Case("image/name_too_long", "image", ["classify", "b.edge", "x" * 300 + ".png", *backend],
                      with_bundle("bnn-digits")))
    for name, data in {"valid_grey": valid_png(8, 8, grey=True), "valid_rgb_odd_size": valid_png(13, 5),
                       "valid_1x1": valid_png(1, 1), "valid_16_bit": png_bytes(4, 4, bit_depth=16, colour=0)}.items():
        cases.append(Case(f"image/{name}", "image", ["classify", "b.edge", "x.png", *backend], good(data),
                          success_allowed=True))
    # one bomb among good images must not sink the good ones: refusing the run or skipping it with a note are
    # both fine, as long as nothing is written on a refusal
    def folder(bad: bytes | Callable[[Path], None]) -> Setup:
        def setup(case_dir: Path, bases: Any) -> None:
            bases.personalization(cli, case_dir, checkpoint=False)
            path = case_dir / "imgs" / "zz-bad.png"
            bad(path) if callable(bad) else path.write_bytes(bad)
        return setup
    outputs = ("tok.safetensors", "tok.safetensors.ckpt.*")
    cases.append(Case("image/personalize_folder_with_bomb", "image", personalize_argv(cli, steps=2),
                      folder(png_bytes(20000, 20000, rows=b"\0" * 64)), success_allowed=True, outputs=outputs,
                      validate=file_output("tok.safetensors")))
    cases.append(Case("image/personalize_folder_with_fifo", "image", personalize_argv(cli, steps=2), folder(fifo),
                      success_allowed=True, outputs=outputs, validate=file_output("tok.safetensors")))
    cases.append(Case("image/personalize_folder_empty", "image", personalize_argv(cli, images="none"),
                      lambda d, b: (b.personalization(cli, d, checkpoint=False), (d / "none").mkdir())))
    cases.append(Case("image/personalize_folder_is_file", "image", personalize_argv(cli, images="afile"),
                      lambda d, b: (b.personalization(cli, d, checkpoint=False), (d / "afile").write_text("x"))))
    return cases


# ---- videos (restore, Python CLI) ----

def video_cases() -> list[Case]:
    def restore(*extra: str, source: str = "in.mp4", output: str = "out.mp4") -> list[str]:
        return ["restore", "b.edge", source, "-o", output, *extra]

    def with_video(make: Callable[[Path, Any], None]) -> Setup:
        def setup(case_dir: Path, bases: Any) -> None:
            bases.copy("viws", case_dir / "b.edge")
            make(case_dir, bases)
        return setup

    def frames_folder(sizes: list[tuple[int, int]]) -> Callable[[Path, Any], None]:
        def make(case_dir: Path, _bases: Any) -> None:
            (case_dir / "frames").mkdir()
            for i, (w, h) in enumerate(sizes):
                (case_dir / "frames" / f"{i:03d}.png").write_bytes(valid_png(w, h, seed=i))
        return make

    def good_video(case_dir: Path, bases: Any) -> None:
        (case_dir / "in.mp4").write_bytes(bases.video_bytes())

    cases = [
        # a legitimate success that takes seconds (6,889 tiles: 4 s on a quiet core, 8 s beside a loaded suite):
        # bounded and announced, given a minute before it counts as a hang
        Case("video/frames_4000_square", "video", restore(source="frames"),
             with_video(lambda d, b: ((d / "frames").mkdir(), (d / "frames/000.png").write_bytes(b.big_frame()))),
             success_allowed=True, outputs=("out.mp4",), validate=file_output("out.mp4"), timeout=60.0),
        Case("video/frames_claim_20000_square", "video", restore(source="frames"),
             with_video(lambda d, b: ((d / "frames").mkdir(), (d / "frames/000.png").write_bytes(
                 png_bytes(20000, 20000, rows=b"\0" * 64))))),
        Case("video/frames_mixed_sizes", "video", restore(source="frames"), with_video(frames_folder(
            [(16, 16), (24, 8), (16, 16)]))),
        Case("video/frames_folder_empty", "video", restore(source="frames"),
             with_video(lambda d, b: (d / "frames").mkdir())),
        Case("video/truncated", "video", restore(),
             with_video(lambda d, b: (d / "in.mp4").write_bytes(b.video_bytes()[: len(b.video_bytes()) // 3]))),
        Case("video/garbage", "video", restore(), with_video(lambda d, b: (d / "in.mp4").write_bytes(
            garbage(5000)(b"")))),
        Case("video/zero_bytes", "video", restore(), with_video(lambda d, b: (d / "in.mp4").write_bytes(b""))),
        Case("video/fifo", "video", restore(), with_video(lambda d, b: fifo(d / "in.mp4"))),
        Case("video/dev_zero", "video", restore(), with_video(lambda d, b: zero_device(d / "in.mp4"))),
        Case("video/missing", "video", restore(), with_video(lambda d, b: None)),
        Case("video/output_unknown_suffix", "video", restore(output="out.xyz"), with_video(good_video)),
        Case("video/side_by_side_wrong_suffix", "video", restore("--side-by-side", "pair.txt"),
             with_video(good_video)),
        Case("video/output_is_input", "video", restore(output="in.mp4"), with_video(good_video)),
        Case("video/output_is_manifest", "video", restore(output="b.edge/manifest.json"), with_video(good_video)),
        Case("video/output_fifo", "video", restore(output="pipe.mp4"),
             with_video(lambda d, b: (good_video(d, b), fifo(d / "pipe.mp4")))),
        Case("video/output_dev_full", "video", restore(output="full.mp4"),
             with_video(lambda d, b: (good_video(d, b), device(d / "full.mp4", 7)))),
        Case("video/fps_zero", "video", restore("--fps", "0"), with_video(good_video)),
        Case("video/fps_nan", "video", restore("--fps", "nan"), with_video(good_video)),
        Case("video/fps_inf", "video", restore("--fps", "inf"), with_video(good_video)),
        Case("video/fps_huge", "video", restore("--fps", "1e12"), with_video(good_video)),
        Case("video/threads_100000", "video", restore("--threads", "100000"), with_video(good_video)),
        Case("video/not_a_restorer", "video", restore(),
             lambda d, b: (b.copy("bnn-digits", d / "b.edge"), good_video(d, b))),
        Case("video/valid", "video", restore(), with_video(good_video), success_allowed=True, outputs=("out.mp4",),
             validate=file_output("out.mp4")),
    ]
    return cases


# ---- numpy inputs (run) ----

def numpy_cases() -> list[Case]:
    shape = (1, 8, 8)  # the synthetic text encoder's input_embeddings

    def run(*extra: str, inputs: tuple[str, ...] = ("x.npy",), output: str = "out.npz") -> list[str]:
        argv = ["run", "b.edge", "--component", "text_encoder", "-o", output]
        for name in inputs:
            argv += ["-i", name]
        return argv + list(extra)

    def with_input(data: bytes | Callable[[Path], None], name: str = "x.npy") -> Setup:
        def extra(case_dir: Path, _bases: Any) -> None:
            path = case_dir / name
            data(path) if callable(data) else path.write_bytes(data)
        return with_bundle("synthetic", extra=extra)

    good = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    def poisoned(value: float) -> bytes:
        a = good.copy()
        a.flat[5] = value
        return npy_bytes(a)

    refuse: dict[str, bytes | Callable[[Path], None]] = {
        "object_pickled": npy_bytes(np.array([{"x": 1}], dtype=object), allow_pickle=True),
        "wrong_shape": npy_bytes(np.ones((1, 8, 7), np.float32)),
        "wrong_rank": npy_bytes(np.ones((8, 8), np.float32)),
        "scalar": npy_bytes(np.array(1.0, np.float32)),
        "int64": npy_bytes(np.ones(shape, np.int64)),
        "complex": npy_bytes(np.ones(shape, np.complex64)),
        "strings": npy_bytes(np.array([["a"] * 8] * 8)),
        "nan": poisoned(float("nan")),
        "inf": poisoned(float("inf")),
        "batch_zero": npy_bytes(np.ones((0, 8, 8), np.float32)),
        "batch_beyond_max": npy_bytes(np.ones((4096, 8, 8), np.float32)),
        "header_lies": npy_lying_header((1 << 30, 8, 8)),
        "header_negative": npy_lying_header((-1, 8, 8)),
        "header_huge_length": b"\x93NUMPY\x02\x00" + struct.pack("<I", 0x7FFFFFF0) + b"{",
        "not_npy": garbage(200)(b""),
        "empty_file": b"",
        "fifo": fifo,
        "dev_zero": zero_device,
        "folder": lambda p: p.mkdir(),
        "sparse_3gb": lambda p: sparse(p, 3 << 30),
    }
    cases = [Case(f"numpy/{name}", "numpy", run(), with_input(data)) for name, data in refuse.items()]
    cases += [
        Case("numpy/unknown_input_name", "numpy", run(inputs=("banana=x.npy",)), with_input(npy_bytes(good))),
        Case("numpy/same_input_twice", "numpy", run(inputs=("x.npy", "input_embeddings=x.npy")),
             with_input(npy_bytes(good))),
        Case("numpy/missing_file", "numpy", run(inputs=("nothing.npy",)), with_bundle("synthetic")),
        Case("numpy/unknown_component", "numpy", ["run", "b.edge", "--component", "banana", "-i", "x.npy"],
             with_input(npy_bytes(good))),
        Case("numpy/output_is_input", "numpy", run(output="x.npy"), with_input(npy_bytes(good))),
        Case("numpy/output_is_manifest", "numpy", run(output="b.edge/manifest.json"), with_input(npy_bytes(good))),
        Case("numpy/output_dev_full", "numpy", run(output="full.npz"),
             lambda d, b: (with_input(npy_bytes(good))(d, b), device(d / "full.npz", 7))),
        Case("numpy/valid_fortran_order", "numpy", run(), with_input(npy_bytes(np.asfortranarray(good))),
             success_allowed=True, outputs=("out.npz",), validate=file_output("out.npz")),
        Case("numpy/valid_float64", "numpy", run(), with_input(npy_bytes(good.astype(np.float64))),
             success_allowed=True, outputs=("out.npz",), validate=file_output("out.npz")),
    ]
    return cases


# ---- command-line arguments ----

def output_cases(t: Target, argv: Callable[[str], list[str]], base: str, prefix: str, suffix: str,
                 extra: Setup | None = None) -> list[Case]:
    """Outputs that must be refused (or, for a device, written to and never replaced): `argv(output)`. The names
    carry the command's own suffix, so that what is tested is the kind of file, not the suffix."""
    def setup(make: Callable[[Path], None] | None = None) -> Setup:
        def run(case_dir: Path, bases: Any) -> None:
            bases.copy(base, case_dir / "b.edge")
            if extra is not None:
                extra(case_dir, bases)
            if make is not None:
                make(case_dir)
        return run

    pipe, full, null = f"pipe{suffix}", f"full{suffix}", f"null{suffix}"
    return [
        Case(f"args/{prefix}_output_is_manifest", "args", argv("b.edge/manifest.json"), setup()),
        Case(f"args/{prefix}_output_is_model_file", "args", argv(f"b.edge/{t.model_rel}"), setup()),
        Case(f"args/{prefix}_output_is_bundle", "args", argv("b.edge"), setup()),
        Case(f"args/{prefix}_output_is_folder", "args", argv(f"outdir{suffix}"),
             setup(lambda d: (d / f"outdir{suffix}").mkdir())),
        Case(f"args/{prefix}_output_fifo", "args", argv(pipe), setup(lambda d: fifo(d / pipe))),
        Case(f"args/{prefix}_output_dev_full", "args", argv(full), setup(lambda d: device(d / full, 7))),
        # a missing parent folder may be created (as `mkdir -p` would) or refused
        Case(f"args/{prefix}_output_missing_folder", "args", argv(f"nowhere/out{suffix}"), setup(),
             success_allowed=True, outputs=("nowhere", "nowhere/*"), validate=file_output(f"nowhere/out{suffix}")),
        Case(f"args/{prefix}_output_name_too_long", "args", argv("o" * 300 + suffix), setup()),
        Case(f"args/{prefix}_output_dev_null", "args", argv(null), setup(lambda d: device(d / null, 3)),
             success_allowed=True, validate=still_device(null)),
    ]


def sample_arg_cases(t: Target) -> list[Case]:
    setup = with_bundle(t.base)
    bad: dict[str, list[str]] = {
        "steps_zero": ["--steps", "0"], "steps_negative": ["--steps", "-1"], "steps_huge": ["--steps", "1000000000000"],
        "steps_fraction": ["--steps", "2.5"], "steps_word": ["--steps", "two"],
        "guidance_nan": ["--guidance", "nan"], "guidance_inf": ["--guidance", "inf"],
        "guidance_minus_inf": ["--guidance", "-inf"], "guidance_huge": ["--guidance", "1e308"],
        "seed_too_big": ["--seed", str(2**70)], "sampler_unknown": ["--sampler", "banana"],
        "threads_100000": ["--threads", "100000"], "threads_zero": ["--threads", "0"],
        "threads_negative": ["--threads", "-1"], "unknown_option": ["--step", "2"],
        "unknown_flag": ["--fast"], "backend_unknown": ["--backend", "banana"],
    }
    if t.cli == "python":
        bad.update({"per_prompt_1e12": ["--per-prompt", "1e12"], "per_prompt_huge": ["--per-prompt", "1000000000000"],
                    "per_prompt_zero": ["--per-prompt", "0"], "backend_missing_target": ["--backend", "tensorrt"]})
    else:
        bad.update({"raw_output_is_manifest": ["--raw", "b.edge/manifest.json"], "option_with_equals": ["--json=1"]})
    # argv order: the bad options after a valid command line (a parser must not let a later value win silently)
    cases = [Case(f"args/sample_{name}", "args", t.sample(*extra), setup) for name, extra in bad.items()]
    cases += [
        Case("args/sample_empty_prompt", "args", t.sample(prompt=" "), setup),
        Case("args/sample_unknown_word", "args", t.sample(prompt="a zebra circle"), setup),
        Case("args/sample_prompt_10000_words", "args", t.sample(prompt=" ".join(["red"] * 10000)), setup),
        Case("args/sample_failed_run_keeps_old_output", "args", t.sample(prompt="a zebra"),
             with_bundle(t.base, extra=lambda d, _b: (d / "out.png").write_bytes(valid_png(4, 4)))),
        Case("args/sample_no_bundle", "args", ["sample"], lambda d, b: None),
        Case("args/unknown_command", "args", ["banana", "b.edge"], setup),
    ]
    cases += output_cases(t, lambda out: t.sample(output=out), t.base, "sample", ".png")
    return cases


def personalize_arg_cases(cli: str) -> list[Case]:
    def setup(case_dir: Path, bases: Any) -> None:
        bases.personalization(cli, case_dir, checkpoint=False)

    bad = {
        "directions_1000000": ["--directions", "1000000"], "directions_zero": ["--directions", "0"],
        "vectors_zero": ["--vectors", "0"], "vectors_1000000": ["--vectors", "1000000"],
        "mu_nan": ["--mu", "nan"], "mu_zero": ["--mu", "0"], "mu_inf": ["--mu", "inf"],
        "lr_inf": ["--lr", "inf"], "lr_negative": ["--lr", "-1"], "lr_nan": ["--lr", "nan"],
        "time_budget_nan": ["--time-budget", "nan"], "time_budget_negative": ["--time-budget", "-1"],
        "checkpoint_every_zero": ["--checkpoint-every", "0"], "query_batch_zero": ["--query-batch", "0"],
        "draws_zero": ["--draws", "0"], "steps_zero": ["--steps", "0"], "steps_huge": ["--steps", "1e15"],
        "threads_100000": ["--threads", "100000"], "token_empty": ["--token", ""],
        "token_is_vocabulary_word": ["--token", "red"], "init_word_unknown": ["--init-word", "zebra"],
        "caption_without_slot": ["--caption", "a red circle"], "unknown_option": ["--stpes", "2"],
        "backend_unknown": ["--backend", "banana"],
    }
    cases = [Case(f"args/personalize_{name}", "args", personalize_argv(cli, *extra), setup)
             for name, extra in bad.items()]
    cases.append(Case("args/personalize_output_is_an_image", "args", personalize_argv(cli, output="imgs/0.png"),
                      setup))
    cases += output_cases(CPP_T2I if cli == "cpp" else PY_T2I, lambda out: personalize_argv(cli, output=out),
                          "synthetic" if cli == "python" else "tiny-sd", "personalize", ".safetensors",
                          extra=lambda d, b: b.personalization(cli, d, checkpoint=False, bundle=False))
    return cases


def classify_arg_cases(cli: str) -> list[Case]:
    setup = with_bundle("bnn-digits", extra=lambda d, _b: (d / "x.png").write_bytes(valid_png(8, 8, grey=True)))
    bad = {"top_k_zero": ["--top-k", "0"], "top_k_negative": ["--top-k", "-3"], "top_k_word": ["--top-k", "all"],
           "backend_unknown": ["--backend", "banana"], "unknown_option": ["--topk", "2"],
           "threads_100000": ["--threads", "100000"]}
    if cli == "python":
        bad.pop("threads_100000")  # classify has no --threads in the Python CLI: the unknown option case covers it
    cases = [Case(f"args/classify_{name}", "args", ["classify", "b.edge", "x.png", *extra], setup)
             for name, extra in bad.items()]
    cases.append(Case("args/classify_top_k_huge", "args", ["classify", "b.edge", "x.png", "--top-k", "1000000000"],
                      setup, success_allowed=True))
    cases.append(Case("args/classify_no_images", "args", ["classify", "b.edge"], setup))
    return cases


def onestep_arg_cases(cli: str) -> list[Case]:
    setup = with_bundle("onestep")
    base = ["sample", "b.edge", "-p", "a red circle", "-o", "out.png"]
    cases = [Case(f"args/onestep_{name}", "args", base + extra, setup) for name, extra in {
        "guidance": ["--guidance", "2"], "steps": ["--steps", "4"], "sampler": ["--sampler", "dpmpp-2m"]}.items()]
    cases.append(Case("args/onestep_valid", "args", base, setup, success_allowed=True, outputs=("out.png",),
                      validate=png_output()))
    return cases


# ---- the corpus per CLI ----

def python_cases() -> list[Case]:
    t = PY_T2I
    cases = (bundle_cases(t) + manifest_cases(t) + model_cases(t) + python_pte_cases() + onebit_cases("python")
             + asset_cases(t) + token_cases(t, width=8) + checkpoint_cases("python") + image_cases("python")
             + video_cases() + numpy_cases() + sample_arg_cases(t) + personalize_arg_cases("python")
             + classify_arg_cases("python") + onestep_arg_cases("python"))
    cases.append(Case("args/inspect_a_file", "args", ["inspect", "x.png"],
                      lambda d, b: (d / "x.png").write_bytes(valid_png())))
    return _unique(cases)


def cpp_cases() -> list[Case]:
    t = CPP_T2I
    cases = (bundle_cases(t) + manifest_cases(t) + model_cases(t) + onebit_cases("cpp") + asset_cases(t)
             + token_cases(t, width=128) + checkpoint_cases("cpp") + image_cases("cpp") + sample_arg_cases(t)
             + personalize_arg_cases("cpp") + classify_arg_cases("cpp") + onestep_arg_cases("cpp"))
    cases += [Case(f"bundle/verify_{c.name.split('/')[1]}", "bundle", ["verify", "b.edge"], c.setup)
              for c in bundle_cases(t) if c.name.split("/")[1] in VERIFY_TOO]
    return _unique(cases)


VERIFY_TOO = {"manifest_fifo", "manifest_dev_zero", "manifest_sparse_3gb", "manifest_symlink_outside",
              "model_symlink_outside", "model_fifo", "model_dev_zero", "manifest_deep_nesting", "checksum_mismatch"}


def _unique(cases: list[Case]) -> list[Case]:
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate fuzz case names: {sorted(duplicates)}")
    return cases
