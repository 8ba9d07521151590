"""The manifest schema and the bundle checks around it, with ONE mutation corpus for both readers.

``corpus()`` builds every case from two base manifests (a tiny-sd-like text-to-image bundle and a bnn-like
classifier) and says whether the readers must accept it. The tests here run it through the Python reader; run as a
script (``python tests/test_bundle_schema.py --write DIR``) it writes the same cases, plus bundles with broken asset
files, for the C++ reader's ctest ``test_schema`` (runtime/cpp/tests/test_schema.cpp), which must agree on each.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesdk.runtime import schema
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError

HASH = "0" * 64


def _tensor(name: str, *dims: int | str) -> dict[str, Any]:
    return {"name": name, "dtype": "float32", "shape": list(dims)}


def _component(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs,
            "files": {"executorch": f"executorch/{name}.pte", "onnx": f"onnx/{name}.onnx"},
            "static_shapes": {"executorch": {"batch": 2, "methods": {"2": "forward", "3": "forward_b3"}}},
            "dynamic_dims": {"batch": {"min": 1, "max": 8}},
            "parity": {"executorch": {"out": {"max_abs": 0.0, "sqnr_db": math.inf}}},
            "delegation": {"executorch": {"delegated_share": 1.0}}, "fp32_weight_bytes": 1024}


def text_to_image_manifest() -> dict[str, Any]:
    components = {
        "text_encoder": _component("text_encoder", [_tensor("input_embeddings", "batch", 16, 128)],
                                   [_tensor("text", "batch", 16, 128)]),
        "unet": _component("unet", [_tensor("latent", "batch", 4, 8, 8), _tensor("timestep", "batch"),
                                    _tensor("text", "batch", 16, 128)], [_tensor("noise", "batch", 4, 8, 8)]),
        "vae_decoder": _component("vae_decoder", [_tensor("latent", "batch", 4, 8, 8)],
                                  [_tensor("image", "batch", 3, 32, 32)]),
    }
    assets = {"token_embedding": "assets/token_embedding.npy", "vocabulary": "assets/vocabulary.json",
              "alphas_cumprod": "assets/alphas_cumprod.npy"}
    files = {path: HASH for path in assets.values()}
    for entry in components.values():
        files.update({path: HASH for path in entry["files"].values()})
    return {"format": "edgesdk-bundle", "format_version": 1, "family": "tiny-sd", "task": "text-to-image",
            "created_by": "edgesdk 0.1.0", "quantization": {"recipe": "fp32", "weight_bits": 8, "group_size": None},
            "model": {"image_size": 32, "image_channels": 3, "latent_channels": 4, "latent_size": 8, "max_tokens": 16,
                      "text_width": 128, "train_timesteps": 1000, "prediction": "epsilon", "guidance_scale": 4.0,
                      "schedule": "scaled-linear", "beta_start": 0.00085, "beta_end": 0.012},
            "assets": assets, "components": components, "files": files, "quality": None}


def classifier_manifest() -> dict[str, Any]:
    entry = _component("classifier", [_tensor("image", "batch", 3, 32, 32)], [_tensor("logits", "batch", 5)])
    entry["static_shapes"] = {"executorch": {"batch": 1}}
    entry["dynamic_dims"] = {"batch": {"min": 1, "max": 256}}
    entry["files"] = {"executorch": "executorch/classifier.pte.1bit", "onnx": "onnx/classifier.onnx.1bit"}
    return {"format": "edgesdk-bundle", "format_version": 1, "family": "bnn", "task": "classify",
            "quantization": {"recipe": "binary", "weight_bits": 1},
            "model": {"task": "classify", "classes": ["circle", "square", "triangle", "star", "cross"],
                      "image_size": 32, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            "assets": {}, "components": {"classifier": entry},
            "files": {path: HASH for path in entry["files"].values()}}


Path_ = list[str | int]
# (name, base, edits, accepted): an edit is ("set", path, value) or ("del", path)
Case = tuple[str, str, list[tuple[Any, ...]], bool]
UNET_LATENT: Path_ = ["components", "unet", "inputs", 0, "shape"]
EXECUTORCH_STATIC: Path_ = ["components", "unet", "static_shapes", "executorch"]


def _cases() -> list[Case]:
    set_, del_ = "set", "del"
    cases: list[Case] = [
        ("text-to-image as exported", "t2i", [], True),
        ("classifier as exported", "cls", [], True),
        ("unknown top-level key (newer exporter metadata)", "t2i", [(set_, ["notes"], {"x": [1, 2]})], True),
        ("unknown component key", "t2i", [(set_, ["components", "unet", "sensitivity"], {"a": 1})], True),
        ("parity holds Infinity and NaN", "t2i", [(set_, ["components", "unet", "parity"], {"x": math.nan})], True),
        ("static batch at the top of the range", "t2i", [(set_, [*EXECUTORCH_STATIC, "batch"], 8)], True),
        ("fp32_weight_bytes null", "t2i", [(set_, ["components", "unet", "fp32_weight_bytes"], None)], True),
        ("tensorrt_engine null", "t2i", [(set_, ["components", "unet", "tensorrt_engine"], None)], True),
        ("no model section (a user model)", "t2i", [(del_, ["model"])], True),
        ("format_version true", "t2i", [(set_, ["format_version"], True)], False),
        ("format_version 1.0", "t2i", [(set_, ["format_version"], 1.0)], False),
        ("format_version '1'", "t2i", [(set_, ["format_version"], "1")], False),
        ("format_version 2", "t2i", [(set_, ["format_version"], 2)], False),
        ("format_version missing", "t2i", [(del_, ["format_version"])], False),
        ("format misspelt", "t2i", [(set_, ["format"], "edgesdk-bundl")], False),
        ("manifest is an array inside", "t2i", [(set_, ["components"], [])], False),
        ("no components", "t2i", [(set_, ["components"], {})], False),
        ("components missing", "t2i", [(del_, ["components"])], False),
        ("files missing", "t2i", [(del_, ["files"])], False),
        ("checksum not hex", "t2i", [(set_, ["files", "onnx/unet.onnx"], "z" * 64)], False),
        ("checksum too short", "t2i", [(set_, ["files", "onnx/unet.onnx"], "0" * 63)], False),
        ("checksum a number", "t2i", [(set_, ["files", "onnx/unet.onnx"], 0)], False),
        ("checksum 10k characters", "t2i", [(set_, ["files", "onnx/unet.onnx"], "0" * 10000)], False),
        ("negative dimension", "t2i", [(set_, [*UNET_LATENT, 1], -3)], False),
        ("zero dimension", "t2i", [(set_, [*UNET_LATENT, 1], 0)], False),
        ("fractional dimension", "t2i", [(set_, [*UNET_LATENT, 1], 4.5)], False),
        ("integral float dimension", "t2i", [(set_, [*UNET_LATENT, 1], 4.0)], False),
        ("boolean dimension", "t2i", [(set_, [*UNET_LATENT, 1], True)], False),
        ("huge dimension", "t2i", [(set_, [*UNET_LATENT, 1], 1 << 40)], False),
        ("dimension past int64", "t2i", [(set_, [*UNET_LATENT, 1], 1 << 70)], False),
        ("dimension name with a space", "t2i", [(set_, [*UNET_LATENT, 0], "bat ch")], False),
        ("dynamic dim without a range", "t2i", [(set_, [*UNET_LATENT, 0], "height")], False),
        ("rank 9 tensor", "t2i", [(set_, UNET_LATENT, ["batch", 1, 1, 1, 1, 1, 1, 1, 1])], False),
        ("a tensor of 2^36 elements", "t2i", [(set_, UNET_LATENT, ["batch", 4, 65536, 65536])], False),
        ("dtype bfloat16", "t2i", [(set_, ["components", "unet", "inputs", 0, "dtype"], "bfloat16")], False),
        ("dtype object", "t2i", [(set_, ["components", "unet", "inputs", 0, "dtype"], "object")], False),
        ("dtype missing", "t2i", [(del_, ["components", "unet", "inputs", 0, "dtype"])], False),
        ("shape missing", "t2i", [(del_, ["components", "unet", "inputs", 0, "shape"])], False),
        ("tensor name empty", "t2i", [(set_, ["components", "unet", "inputs", 0, "name"], "")], False),
        ("tensor name 300 characters", "t2i", [(set_, ["components", "unet", "inputs", 0, "name"], "n" * 300)], False),
        ("tensor given as a string", "t2i", [(set_, ["components", "unet", "inputs", 0], "latent (batch,4,8,8)")],
         False),
        ("no inputs", "t2i", [(set_, ["components", "unet", "inputs"], [])], False),
        ("inputs missing", "t2i", [(del_, ["components", "unet", "inputs"])], False),
        ("an input listed twice", "t2i", [(set_, ["components", "unet", "inputs", 1, "name"], "latent")], False),
        ("component files empty", "t2i", [(set_, ["components", "unet", "files"], {})], False),
        ("component path absolute", "t2i", [(set_, ["components", "unet", "files", "onnx"], "/etc/passwd")], False),
        ("component path with backslash", "t2i", [(set_, ["components", "unet", "files", "onnx"], "onnx\\u.onnx")],
         False),
        ("component path starting with ..", "t2i", [(set_, ["components", "unet", "files", "onnx"], "../u.onnx")],
         False),
        ("component path 300 characters", "t2i", [(set_, ["components", "unet", "files", "onnx"], "a" * 300)], False),
        ("component name with a slash", "t2i", [(set_, ["components", "a/b"], {})], False),
        ("dynamic min 0", "t2i", [(set_, ["components", "unet", "dynamic_dims", "batch", "min"], 0)], False),
        ("dynamic max 10^9", "t2i", [(set_, ["components", "unet", "dynamic_dims", "batch", "max"], 10 ** 9)], False),
        ("dynamic max as text", "t2i", [(set_, ["components", "unet", "dynamic_dims", "batch", "max"], "8")], False),
        ("dynamic min above max", "t2i", [(set_, ["components", "unet", "dynamic_dims", "batch", "min"], 9)], False),
        ("static batch 0", "t2i", [(set_, [*EXECUTORCH_STATIC, "batch"], 0)], False),
        ("static batch true", "t2i", [(set_, [*EXECUTORCH_STATIC, "batch"], True)], False),
        ("static batch above the dynamic range", "t2i", [(set_, [*EXECUTORCH_STATIC, "batch"], 9)], False),
        ("static batch 100000", "t2i", [(set_, [*EXECUTORCH_STATIC, "batch"], 100000)], False),
        ("static batch missing", "t2i", [(del_, [*EXECUTORCH_STATIC, "batch"])], False),
        ("method for batch 0", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods", "0"], "forward_b0")], False),
        ("method for batch 'two'", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods", "two"], "forward")], False),
        ("method batch past the range", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods", "9"], "forward_b9")], False),
        ("method batch huge", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods", "99999999"], "f")], False),
        ("method name with a semicolon", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods", "3"], "f;rm")], False),
        ("method name a number", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods", "3"], 3)], False),
        ("methods empty", "t2i", [(set_, [*EXECUTORCH_STATIC, "methods"], {})], False),
        ("static shapes for a backend without a file", "t2i",
         [(set_, ["components", "unet", "static_shapes", "tensorrt"], {"batch": 2})], False),
        ("tensorrt_engine not listed", "t2i", [(set_, ["components", "unet", "tensorrt_engine"], "tensorrt/u.plan")],
         False),
        ("fp32_weight_bytes negative", "t2i", [(set_, ["components", "unet", "fp32_weight_bytes"], -1)], False),
        ("fp32_weight_bytes 2^41", "t2i", [(set_, ["components", "unet", "fp32_weight_bytes"], 1 << 41)], False),
        ("image_size 0", "t2i", [(set_, ["model", "image_size"], 0)], False),
        ("image_size 10^6", "t2i", [(set_, ["model", "image_size"], 10 ** 6)], False),
        ("image_size 32.0", "t2i", [(set_, ["model", "image_size"], 32.0)], False),
        ("image_size true", "t2i", [(set_, ["model", "image_size"], True)], False),
        ("max_tokens 100000", "t2i", [(set_, ["model", "max_tokens"], 100000)], False),
        ("text_width 0", "t2i", [(set_, ["model", "text_width"], 0)], False),
        ("train_timesteps 0", "t2i", [(set_, ["model", "train_timesteps"], 0)], False),
        ("latent_size disagrees with the UNet", "t2i", [(set_, ["model", "latent_size"], 16)], False),
        ("text_width disagrees with the text encoder", "t2i", [(set_, ["model", "text_width"], 64)], False),
        ("max_tokens disagrees with the text encoder", "t2i", [(set_, ["model", "max_tokens"], 77)], False),
        ("guidance NaN", "t2i", [(set_, ["model", "guidance_scale"], math.nan)], False),
        ("guidance Infinity", "t2i", [(set_, ["model", "guidance_scale"], math.inf)], False),
        ("guidance 1e308", "t2i", [(set_, ["model", "guidance_scale"], 1e308)], False),
        ("guidance as text", "t2i", [(set_, ["model", "guidance_scale"], "4")], False),
        ("prediction unknown", "t2i", [(set_, ["model", "prediction"], "noise")], False),
        ("timestep at train_timesteps", "t2i", [(set_, ["model", "timestep"], 1000)], False),
        ("model a list", "t2i", [(set_, ["model"], [1])], False),
        ("asset path absolute", "t2i", [(set_, ["assets", "vocabulary"], "/etc/passwd")], False),
        ("asset path a number", "t2i", [(set_, ["assets", "vocabulary"], 1)], False),
        ("family with a space", "t2i", [(set_, ["family"], "tiny sd")], False),
        ("family a number", "t2i", [(set_, ["family"], 5)], False),
        ("task 300 characters", "t2i", [(set_, ["task"], "t" * 300)], False),
        ("weight_bits 0", "t2i", [(set_, ["quantization", "weight_bits"], 0)], False),
        ("group_size as text", "t2i", [(set_, ["quantization", "group_size"], "64")], False),
        ("quality a number", "t2i", [(set_, ["quality"], 3)], False),
        ("classes empty", "cls", [(set_, ["model", "classes"], [])], False),
        ("classes numbers", "cls", [(set_, ["model", "classes"], [1, 2, 3, 4, 5])], False),
        ("mean for 2 of 3 channels", "cls", [(set_, ["model", "mean"], [0.5, 0.5])], False),
        ("std 0", "cls", [(set_, ["model", "std"], [0.5, 0.0, 0.5])], False),
        ("std NaN", "cls", [(set_, ["model", "std"], [0.5, math.nan, 0.5])], False),
        ("channels 0", "cls", [(set_, ["model", "channels"], 0)], False),
        ("tile overlap as large as the tile", "cls",
         [(set_, ["model", "tile"], 8), (set_, ["model", "tile_overlap"], 8)], False),
        ("frames 10^6", "cls", [(set_, ["model", "frames"], 10 ** 6)], False),
        ("5000 files", "cls", [(set_, ["files"], {f"f/{i}": HASH for i in range(5000)})], False),
    ]
    return cases


def _apply(manifest: dict[str, Any], edits: list[tuple[Any, ...]]) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    for edit in edits:
        *parents, last = edit[1]
        node: Any = manifest
        for key in parents:
            node = node[key]
        if edit[0] == "set":
            node[last] = edit[2]
        else:
            del node[last]
    return manifest


def corpus() -> list[tuple[str, dict[str, Any], bool]]:
    bases = {"t2i": text_to_image_manifest(), "cls": classifier_manifest()}
    return [(name, _apply(bases[base], edits), accepted) for name, base, edits, accepted in _cases()]


def python_verdict(manifest: dict[str, Any]) -> str | None:
    """None when the Python reader accepts the manifest, else its one-line message."""
    try:
        schema.validate_manifest(manifest)
        schema.check_consistency(manifest)
    except EdgeSDKError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name,manifest,accepted", corpus(), ids=[case[0] for case in corpus()])
def test_corpus_case(name: str, manifest: dict[str, Any], accepted: bool):
    verdict = python_verdict(json.loads(json.dumps(manifest)))  # as read from a file
    if accepted:
        assert verdict is None, verdict
    else:
        assert verdict is not None, f"{name}: accepted"
        assert "\n" not in verdict and verdict.startswith("manifest field "), verdict


def test_messages_name_the_field():
    manifest = _apply(text_to_image_manifest(), [("set", [*UNET_LATENT, 1], -3)])
    assert python_verdict(manifest) == ("manifest field components.unet.inputs[0].shape[1]: expected an integer "
                                        "1..1048576 or a string matching ^[A-Za-z0-9_][A-Za-z0-9_.+-]*$, got -3; "
                                        "the bundle is refused")
    manifest = _apply(text_to_image_manifest(), [("set", ["format_version"], True)])
    assert python_verdict(manifest) == "manifest field format_version: expected one of 1, got true; the bundle " \
                                       "is refused"


def test_schema_uses_only_the_documented_subset():
    loaded = schema.load_schema()
    assert loaded["properties"]["format_version"] == {"type": "integer", "enum": [1]}
    documented = (Path(__file__).resolve().parent.parent / "docs" / "bundle-format.md").read_text()
    for keyword in sorted(schema._KEYWORDS):
        assert f"`{keyword}`" in documented, f"docs/bundle-format.md does not document {keyword}"


# ---- bundles on disk: the synthetic bundle of edgesdk.runtime.testing, broken one file at a time ----

def _synthetic(tmp: Path) -> Path:
    from edgesdk.runtime.testing import write_synthetic_bundle

    return write_synthetic_bundle(tmp / "synthetic.edge")


def _refinalize(root: Path) -> None:
    from edgesdk.runtime.testing import finalize_bundle

    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("files")
    (root / "manifest.json").unlink()
    finalize_bundle(root, manifest)


def _save_raw_npy(path: Path, header: str, data: bytes) -> None:
    text = header.encode("latin-1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data)


def _asset_breakers() -> dict[str, Any]:
    """Broken asset files, each written into a fresh synthetic bundle (re-checksummed, so only the check sees it)."""
    def token_table(width: int):
        return lambda root: np.save(root / "assets/token_embedding.npy", np.zeros((40, width), np.float32))

    def schedule(values: np.ndarray):
        return lambda root: np.save(root / "assets/alphas_cumprod.npy", values)

    return {
        "token table of the wrong width": token_table(64),
        "token table of float64": lambda root: np.save(root / "assets/token_embedding.npy", np.zeros((40, 16))),
        "token table of objects (pickled)": lambda root: np.save(
            root / "assets/token_embedding.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
        "token table whose header lies about its shape": lambda root: _save_raw_npy(
            root / "assets/token_embedding.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 16), }",
            b"\0" * 64),
        "token table in Fortran order": lambda root: _save_raw_npy(
            root / "assets/token_embedding.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 16), }",
            b"\0" * 256),
        "token table not an .npy": lambda root: (root / "assets/token_embedding.npy").write_bytes(b"PK\3\4 zip"),
        "schedule shorter than train_timesteps": schedule(np.linspace(0.99, 0.01, 50)),
        "schedule with a NaN": schedule(np.where(np.arange(1000) == 5, np.nan, 0.5)),
        "schedule with a 1": schedule(np.full(1000, 1.0)),
        "schedule of int64": schedule(np.arange(1000)),
    }


def write_asset_cases(folder: Path) -> list[str]:
    names = []
    for i, breaker in enumerate(_asset_breakers().values()):
        root = _synthetic(folder / f"asset-{i}")
        breaker(root)
        _refinalize(root)
        names.append(str(root))
    return names


@pytest.mark.parametrize("name", list(_asset_breakers()))
def test_broken_asset_is_refused(tmp_path: Path, name: str):
    root = _synthetic(tmp_path)
    _asset_breakers()[name](root)
    _refinalize(root)
    with pytest.raises(EdgeSDKError) as refused:
        Bundle.open(root)
    assert "\n" not in str(refused.value)


def test_synthetic_bundles_validate(tmp_path: Path):
    from edgesdk.runtime.testing import write_synthetic_bundle

    Bundle.open(write_synthetic_bundle(tmp_path / "dynamic.edge"))
    Bundle.open(write_synthetic_bundle(tmp_path / "static.edge", static_batch=2))


def test_every_shared_test_bundle_is_used_so_validated_each_run():
    """tests/bundles.py's shared_bundle() opens every bundle it hands out with the schema on (what the exporters write
    must validate); that covers every exporter only while each shared bundle is asked for by some test file."""
    from tests.bundles import BUNDLES

    sources = "".join(p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")
                      if p.name != Path(__file__).name)
    unused = [name for name in BUNDLES if f'"{name}"' not in sources]
    assert not unused, f"no test asks for the shared bundle(s) {unused}: nothing validates what they export"


def test_manifest_symlink_is_refused(tmp_path: Path):
    root = _synthetic(tmp_path)
    outside = tmp_path / "elsewhere.json"
    (root / "manifest.json").rename(outside)
    (root / "manifest.json").symlink_to(outside)
    with pytest.raises(EdgeSDKError, match="symbolic link"):
        Bundle.open(root)


def test_manifest_fifo_and_listed_fifo_are_refused_without_blocking(tmp_path: Path):
    root = _synthetic(tmp_path)
    (root / "onnx/unet.onnx").unlink()
    os.mkfifo(root / "onnx/unet.onnx")
    started = time.perf_counter()
    with pytest.raises(EdgeSDKError, match="not a regular file"):
        Bundle.open(root)
    other = _synthetic(tmp_path / "b")
    (other / "manifest.json").unlink()
    os.mkfifo(other / "manifest.json")
    with pytest.raises(EdgeSDKError, match="not a regular file"):
        Bundle.open(other)
    assert time.perf_counter() - started < 5


def test_symlink_leading_outside_is_refused(tmp_path: Path):
    root = _synthetic(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (root / "assets/vocabulary.json").unlink()
    (root / "assets/vocabulary.json").symlink_to(secret)
    with pytest.raises(EdgeSDKError, match="leaves the bundle"):
        Bundle.open(root)


def test_deep_nesting_and_oversized_manifests_are_refused(tmp_path: Path):
    root = _synthetic(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    text = json.dumps(manifest)[:-1] + ', "deep": ' + "[" * 600 + "]" * 600 + "}"
    (root / "manifest.json").write_text(text)
    with pytest.raises(EdgeSDKError, match="nesting deeper"):
        Bundle.open(root)
    (root / "manifest.json").write_text(json.dumps(manifest)[:-1] + ', "pad": "' + "x" * (17 << 20) + '"}')
    with pytest.raises(EdgeSDKError, match="more than the"):
        Bundle.open(root)


# ---- model files: verified before any engine sees them ----

def _with_model_file(tmp: Path, relpath: str, data: bytes, backend: str) -> Bundle:
    """The synthetic bundle with its UNet's ``backend`` file replaced by ``data`` (checksums updated to match)."""
    root = _synthetic(tmp)
    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
    (root / relpath).write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["components"]["unet"]["files"][backend] = relpath
    (root / "manifest.json").write_text(json.dumps(manifest))
    _refinalize(root)
    return Bundle.open(root)


PTE_HEAD = b"\x3c\0\0\0ET12eh00" + (32).to_bytes(4, "little") + (10 ** 6).to_bytes(8, "little") * 2 + bytes(8)
BROKEN_MODELS = {
    "garbage .pte": ("executorch/unet.pte", bytes(range(256)) * 20, "executorch"),
    "zero-byte .pte": ("executorch/unet.pte", b"", "executorch"),
    "truncated .pte": ("executorch/unet.pte", PTE_HEAD + bytes(100), "executorch"),
    "garbage .onnx": ("onnx/unet.onnx", bytes(range(256)) * 20, "onnx"),
    "zero-byte .onnx": ("onnx/unet.onnx", b"", "onnx"),
    "1-bit container whose header lies": (
        "onnx/unet.onnx.1bit",
        b"EDGESDK1BIT\0" + len(h := json.dumps({"original_size": 10 ** 12, "original_sha256": "0" * 64, "runs": [],
                                                 "skeleton_size": 10 ** 12, "bits_size": 0,
                                                 "binary_words": 0}).encode()).to_bytes(4, "little") + h,
        "onnx"),
}


@pytest.mark.parametrize("name", list(BROKEN_MODELS))
def test_broken_model_file_is_a_one_line_error_in_well_under_a_second(tmp_path: Path, name: str):
    from edgesdk.runtime.backends import open_session

    relpath, data, backend = BROKEN_MODELS[name]
    bundle = _with_model_file(tmp_path, relpath, data, backend)
    started = time.perf_counter()
    with pytest.raises(EdgeSDKError) as refused:
        open_session(bundle, "unet", backend)
    assert time.perf_counter() - started < 0.5
    assert "\n" not in str(refused.value) and "re-export" in str(refused.value), refused.value


def test_truncated_and_flipped_onnx_files_are_refused(tmp_path: Path):
    from edgesdk.runtime.backends import open_session

    root = _synthetic(tmp_path / "source")
    good = (root / "onnx/unet.onnx").read_bytes()
    cases = {"truncated": good[: len(good) // 2], "flipped": bytearray(good)}
    rng = np.random.default_rng(0)
    for index in rng.choice(len(good), 16, replace=False):
        cases["flipped"][index] ^= 0xFF
    for name, data in cases.items():
        bundle = _with_model_file(tmp_path / name, "onnx/unet.onnx", bytes(data), "onnx")
        try:
            open_session(bundle, "unet", "onnx")
        except EdgeSDKError as e:
            assert "\n" not in str(e)
            continue
        assert name == "flipped", "a truncated model loaded"  # flips inside weights are data, not structure


# ---- ONNX Runtime writes nothing of its own ----

def test_onnx_sessions_write_nothing_to_home_or_tmpdir(tmp_path: Path):
    """A session opened and run in a process whose HOME and TMPDIR are fresh empty folders leaves both empty
    (ONNX Runtime's telemetry store, ~/.cache/Microsoft/DeveloperTools and $TMPDIR/.ses, stays unwritten)."""
    root = _synthetic(tmp_path / "bundle")
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    script = ("import sys, numpy as np\n"
              "from edgesdk.runtime.bundle import Bundle\n"
              "from edgesdk.runtime.backends import open_session\n"
              "bundle = Bundle.open(sys.argv[1])\n"
              "shape = [1, *bundle.component('vae_decoder').inputs[0].shape[1:]]\n"
              "open_session(bundle, 'vae_decoder', 'onnx').run({'latent': np.zeros(shape, np.float32)})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", script, str(root)], env=env, check=True, timeout=120)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in [*home.rglob("*"), *tmp.rglob("*")]) == []


def write_corpus(folder: Path) -> None:
    """The corpus as files for the C++ reader: manifests.json (name, accepted, manifest text) and the broken bundles."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = [{"name": name, "accepted": accepted, "manifest": json.dumps(manifest, allow_nan=True)}
             for name, manifest, accepted in corpus()]
    (folder / "manifests.json").write_text(json.dumps(cases))
    (folder / "bundles.json").write_text(json.dumps(write_asset_cases(folder)))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        sys.exit("usage: test_bundle_schema.py --write FOLDER")
    import shutil

    target = Path(sys.argv[2])
    shutil.rmtree(target, ignore_errors=True)
    write_corpus(target)
    print(f"wrote {len(corpus())} manifests and {len(_asset_breakers())} bundles to {target}")
