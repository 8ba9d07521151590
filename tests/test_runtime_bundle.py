"""Bundle verification: every refusal names the problem and what to do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgesdk.runtime import Bundle, EdgeSDKError, open_bundle
from edgesdk.runtime.testing import finalize_bundle, write_synthetic_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_synthetic_bundle(tmp_path / "tiny.edge")


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_opens_and_exposes_accessors(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    assert bundle.family == "synthetic"
    assert bundle.model["latent_size"] == 4
    assert set(bundle.components) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    unet = bundle.components["unet"]
    assert unet.input_names == ["latent", "timestep", "text"]
    assert unet.outputs[0].shape == ("batch", 4, 4, 4)
    assert bundle.asset_array("token_embedding").shape == (12, 8)
    assert bundle.asset_json("vocabulary")["bos"] == "<bos>"
    assert bundle.targets() == ["onnx"]
    assert bundle.path_of("onnx/unet.onnx").is_file()
    assert bundle.file_sizes()["onnx/unet.onnx"] > 0


def test_targets_is_what_every_component_has(bundle_dir: Path) -> None:
    manifest = _manifest(bundle_dir)
    (bundle_dir / "tensorrt").mkdir()
    (bundle_dir / "tensorrt/unet.onnx").write_bytes((bundle_dir / "onnx/unet.onnx").read_bytes())
    manifest["components"]["unet"]["files"]["tensorrt"] = "tensorrt/unet.onnx"
    finalize_bundle(bundle_dir, manifest)
    assert Bundle.open(bundle_dir).targets() == ["onnx"]


def test_missing_directory_names_path(tmp_path: Path) -> None:
    with pytest.raises(EdgeSDKError, match="nowhere.edge"):
        Bundle.open(tmp_path / "nowhere.edge")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(EdgeSDKError, match="no manifest.json"):
        Bundle.open(tmp_path)


def test_manifest_not_json(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text('{"format": "edgesdk-bundle",\n oops}')
    with pytest.raises(EdgeSDKError, match=r"not JSON .*line 2 column 2"):
        Bundle.open(bundle_dir)


def test_unknown_format_version(bundle_dir: Path) -> None:
    manifest = _manifest(bundle_dir)
    manifest["format_version"] = 7
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSDKError, match=r"format_version 7 .*reads version 1"):
        Bundle.open(bundle_dir)


def test_wrong_format(bundle_dir: Path) -> None:
    manifest = _manifest(bundle_dir)
    manifest["format"] = "something-else"
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSDKError, match="edgesdk-bundle"):
        Bundle.open(bundle_dir)


def test_checksum_mismatch(bundle_dir: Path) -> None:
    np.save(bundle_dir / "assets/token_embedding.npy", np.zeros((12, 8), dtype=np.float32))
    with pytest.raises(EdgeSDKError, match=r"'assets/token_embedding.npy': checksum mismatch.*re-export"):
        Bundle.open(bundle_dir)
    Bundle.open(bundle_dir, verify_checksums=False)  # explicit opt-out still checks structure only


@pytest.mark.parametrize("bad", ["../outside.onnx", "onnx/../../outside.onnx", "/etc/passwd"])
def test_paths_must_stay_inside(bundle_dir: Path, bad: str) -> None:
    manifest = _manifest(bundle_dir)
    manifest["components"]["unet"]["files"]["onnx"] = bad
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    # a path that cannot even be one (absolute, starting with "..") is refused by the schema, the rest after it
    refusal = "leaves the bundle" if bad.startswith("onnx/") else r"components\.unet\.files\.onnx: expected a string"
    with pytest.raises(EdgeSDKError, match=refusal):
        Bundle.open(bundle_dir)


def test_symlink_out_of_bundle_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.npy").write_bytes(b"x")
    (bundle_dir / "assets/link.npy").symlink_to(tmp_path / "secret.npy")
    manifest = _manifest(bundle_dir)
    manifest["assets"]["link"] = "assets/link.npy"
    finalize_bundle(bundle_dir, manifest)
    with pytest.raises(EdgeSDKError, match="leaves the bundle"):
        Bundle.open(bundle_dir)


def test_referenced_file_must_be_listed_and_exist(bundle_dir: Path) -> None:
    manifest = _manifest(bundle_dir)
    del manifest["files"]["onnx/unet.onnx"]
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSDKError, match="'onnx/unet.onnx' is not listed"):
        Bundle.open(bundle_dir)
    (bundle_dir / "onnx/unet.onnx").unlink()
    finalize_bundle(bundle_dir, _manifest(bundle_dir))  # rebuilds 'files' without it
    manifest = _manifest(bundle_dir)
    manifest["files"]["onnx/unet.onnx"] = "0" * 64
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSDKError, match="'onnx/unet.onnx' is missing"):
        Bundle.open(bundle_dir)


def test_unknown_asset_and_component(bundle_dir: Path) -> None:
    bundle = Bundle.open(bundle_dir)
    with pytest.raises(EdgeSDKError, match="no asset 'nope'.*token_embedding"):
        bundle.asset_array("nope")
    with pytest.raises(EdgeSDKError, match="no component 'nope'.*unet"):
        bundle.component("nope")


def test_unknown_family_without_a_task_is_refused(bundle_dir: Path) -> None:
    manifest = _manifest(bundle_dir)
    manifest["family"] = "banana"
    finalize_bundle(bundle_dir, manifest)
    with pytest.raises(EdgeSDKError, match=r"manifest field family: \"banana\" is not a family this runtime knows"):
        open_bundle(bundle_dir)
    manifest["task"] = "text-to-image"  # a family of the user's own that says what it does opens
    finalize_bundle(bundle_dir, manifest)
    assert open_bundle(bundle_dir).task == "text-to-image"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_token_table_with_non_finite_values_is_refused(bundle_dir: Path, value: float) -> None:
    table = np.load(bundle_dir / "assets/token_embedding.npy")
    table[7, 3] = value
    np.save(bundle_dir / "assets/token_embedding.npy", table)
    finalize_bundle(bundle_dir, _manifest(bundle_dir))
    with pytest.raises(EdgeSDKError, match=r"assets.token_embedding: row 7 of the token table holds NaN or infinite"):
        open_bundle(bundle_dir)


def test_token_table_is_checked_in_slices(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgesdk.runtime import schema

    monkeypatch.setattr(schema, "_FINITE_CHUNK_BYTES", 64)  # two rows of 8 float32 per slice: the last slice counts
    table = np.load(bundle_dir / "assets/token_embedding.npy")
    table[-1, -1] = np.nan
    np.save(bundle_dir / "assets/token_embedding.npy", table)
    finalize_bundle(bundle_dir, _manifest(bundle_dir))
    with pytest.raises(EdgeSDKError, match=f"row {len(table) - 1} of the token table"):
        open_bundle(bundle_dir)


def test_json_asset_that_is_not_json_is_a_one_line_refusal(bundle_dir: Path) -> None:
    (bundle_dir / "assets/vocabulary.json").write_bytes(b"{tokens")
    finalize_bundle(bundle_dir, _manifest(bundle_dir))
    bundle = open_bundle(bundle_dir)
    with pytest.raises(EdgeSDKError, match=r"bundle asset 'vocabulary' \('assets/vocabulary.json'\) is not JSON"):
        bundle.asset_json("vocabulary")
