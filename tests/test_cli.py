"""The CLI as a user meets it: bad input gets one line on stderr and exit code 2, never a traceback."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli, run_cli_in_process, run_without_torch


def _assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def bundle_copy(shipped_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.edge"
    shutil.copytree(shipped_bundle, target)
    return target


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_missing_bundle(tmp_path: Path):
    _assert_clean_error(run_cli("sample", str(tmp_path / "nope.edge"), "-p", "a red star"), "does not exist")


def test_manifest_not_json(bundle_copy: Path):
    (bundle_copy / "manifest.json").write_text("{ not json")
    _assert_clean_error(run_cli("inspect", str(bundle_copy)), "not JSON")


def test_wrong_format_version(bundle_copy: Path):
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=99))
    _assert_clean_error(run_cli("inspect", str(bundle_copy)), "99")


def test_checksum_mismatch(bundle_copy: Path):
    with open(bundle_copy / "onnx" / "unet.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    _assert_clean_error(run_cli("sample", str(bundle_copy), "-p", "a red star"), "unet.onnx", "checksum")


def test_path_leaving_the_bundle(bundle_copy: Path):
    def escape(m: dict) -> None:
        m["components"]["unet"]["files"]["onnx"] = "../outside.onnx"
        m["files"]["../outside.onnx"] = "0" * 64

    _edit_manifest(bundle_copy, escape)
    _assert_clean_error(run_cli("inspect", str(bundle_copy)), "../outside.onnx")


def test_unknown_backend(shipped_bundle: Path):
    _assert_clean_error(run_cli("sample", str(shipped_bundle), "-p", "a red star", "--backend", "coreml"),
                        "coreml", "onnx")


def test_empty_prompt(shipped_bundle: Path):
    _assert_clean_error(run_cli("sample", str(shipped_bundle), "-p", "  "), "empty prompt")


def test_words_outside_vocabulary_are_named(shipped_bundle: Path):
    _assert_clean_error(run_cli("sample", str(shipped_bundle), "-p", "a red dragon on a purple moon"),
                        '"dragon"', '"moon"')


def test_negative_steps(shipped_bundle: Path):
    _assert_clean_error(run_cli("sample", str(shipped_bundle), "-p", "a red star", "--steps", "-3"), "steps")


def test_unknown_family_and_existing_output(shipped_bundle: Path, tmp_path: Path):
    _assert_clean_error(run_cli_in_process("export", "tiny-xl", "-o", str(tmp_path / "x.edge")), "tiny-xl")
    _assert_clean_error(run_cli_in_process("export", "tiny-sd", "-o", str(shipped_bundle)), "already exists",
                        "--overwrite")


def test_sample_writes_a_grid(shipped_bundle: Path, tmp_path: Path):
    out = tmp_path / "grid.png"
    result = run_cli("sample", str(shipped_bundle), "-p", "a red star", "-p", "a blue circle", "--per-prompt", "2",
                     "--steps", "5", "--backend", "executorch", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size == (2 * 32, 2 * 32)


def test_inspect_json(shipped_bundle: Path):
    result = run_cli("inspect", str(shipped_bundle), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["family"] == "tiny-sd" and "star" in summary["vocabulary"]
    unet = summary["components"]["unet"]
    assert unet["files"]["executorch"]["bytes"] > 0 and "executorch" in unet["parity"]


def test_bench_json(shipped_bundle: Path):
    result = run_cli("bench", str(shipped_bundle), "--steps", "2", "--runs", "1", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout)
    assert set(results["backends"]) == {"executorch", "onnx"}  # tensorrt is skipped where it cannot run
    for res in results["backends"].values():
        assert res["sample"]["p50_ms"] > 0 and res["rss_mb"]["peak"] > 0
        assert set(res["components"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}


def test_runtime_samples_the_real_bundle_without_torch(shipped_bundle: Path):
    result = run_without_torch(f"""
from edgesdk.runtime import TextToImage
images = TextToImage({str(shipped_bundle)!r}, backend="onnx").generate(["a red star"], steps=5)
assert images.shape == (1, 32, 32, 3) and images.dtype.name == "uint8"
print("ok")
""")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
