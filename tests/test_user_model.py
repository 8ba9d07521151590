"""Users' own models: .pt2 and module:factory, calibrated w8a8, `edgesdk run`, clear refusals."""

import json
from pathlib import Path

import numpy as np
import torch

from tests.conftest import run_cli
from tests.fixtures.user_models import small_classifier


def _calibration(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, image=np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32))
    return path


def test_factory_model_w8a8_export_and_run(tmp_path: Path):
    bundle = tmp_path / "mine.edge"
    result = run_cli("export", "--model", "tests.fixtures.user_models:small_classifier", "-o", str(bundle),
                     "--quant", "w8a8", "--calibration", str(_calibration(tmp_path)), "--target", "executorch,onnx")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["family"] == "custom" and manifest["quantization"]["recipe"] == "w8a8"
    parity = manifest["components"]["model"]["parity"]
    assert all(v["logits"]["sqnr_db"] >= 12.0 for v in parity.values())
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model, _, _ = small_classifier()
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    for backend in ("onnx", "executorch"):
        out = tmp_path / f"{backend}.npz"
        result = run_cli("run", str(bundle), "--input", str(tmp_path / "x.npy"), "--backend", backend, "-o", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        logits = np.load(out)["logits"]
        assert logits.shape == (2, 5)
        assert np.abs(logits - reference).max() < 0.1 * np.abs(reference).max() + 1e-3
    result = run_cli("bench", str(bundle), "--runs", "1", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    bench = json.loads(result.stdout)["backends"]
    assert set(bench) == {"onnx", "executorch"} and bench["onnx"]["components"]["model"]["p50_ms"] > 0
    assert bench["onnx"]["weight_residency"]["model"]["int_weights_kept"]


def test_pt2_model_fp32(tmp_path: Path):
    model, inputs, _ = small_classifier()
    torch.export.save(torch.export.export(model, inputs), str(tmp_path / "model.pt2"))
    result = run_cli("export", "--model", str(tmp_path / "model.pt2"), "-o", str(tmp_path / "pt2.edge"),
                     "--target", "onnx")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "pt2.edge" / "manifest.json").read_text())
    assert manifest["components"]["model"]["parity"]["onnx"]
    x = np.zeros((3, 3, 16, 16), np.float32)  # a batch other than the example's: the ONNX file is dynamic
    np.save(tmp_path / "x.npy", x)
    input_name = manifest["components"]["model"]["inputs"][0]["name"]
    result = run_cli("run", str(tmp_path / "pt2.edge"), "--input", f"{input_name}={tmp_path / 'x.npy'}")
    assert result.returncode == 0 and "shape (3, 5)" in result.stdout, result.stderr[-2000:]


def test_user_model_refusals(tmp_path: Path):
    result = run_cli("export", "--model", "tests.fixtures.user_models:small_classifier", "-o",
                     str(tmp_path / "a.edge"), "--quant", "w8a8")
    assert result.returncode == 2 and "needs --calibration" in result.stderr
    empty = tmp_path / "empty.npz"
    np.savez(empty, image=np.zeros((1, 3, 16, 16), np.float32))  # fewer rows than one batch of 2
    result = run_cli("export", "--model", "tests.fixtures.user_models:small_classifier", "-o",
                     str(tmp_path / "b.edge"), "--quant", "w8a8", "--calibration", str(empty))
    assert result.returncode == 2 and "calibration set" in result.stderr and "empty" in result.stderr
    result = run_cli("export", "--model", "nope.module:factory", "-o", str(tmp_path / "c.edge"))
    assert result.returncode == 2 and "cannot import" in result.stderr
    for target, phrase in (("executorch", "ExecuTorch lowering failed"), ("onnx", "ONNX export failed")):
        result = run_cli("export", "--model", "tests.fixtures.user_models:unsupported", "-o",
                         str(tmp_path / "d.edge"), "--target", target)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert phrase in result.stderr and "linalg_inv" in result.stderr, result.stderr
    assert not any(tmp_path.glob("*.edge"))
