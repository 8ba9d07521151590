"""Users' own models: .pt2 and module:factory, calibrated w8a8, `edgesdk run`, clear refusals."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli_in_process as run_cli
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


def _modes(root: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of the folder, every folder under it and every file in it."""
    found = set()
    for folder, _, names in os.walk(root):
        found.add(("dir", stat.S_IMODE(os.stat(folder).st_mode)))
        found |= {("file", stat.S_IMODE(os.stat(Path(folder, n)).st_mode)) for n in names}
    return found


def test_positional_pt2_and_factory(tmp_path: Path):
    """`edgesdk export model.pt2` and `edgesdk export package.module:factory`: the positional names the model. The
    .pt2 export runs under umask 027: its bundle gets the modes a plain mkdir/open would give, not mkdtemp's 0700."""
    model, inputs, _ = small_classifier()
    torch.export.save(torch.export.export(model, inputs), str(tmp_path / "model.pt2"))
    previous = os.umask(0o027)
    try:
        result = run_cli("export", str(tmp_path / "model.pt2"), "-o", str(tmp_path / "pt2.edge"), "--target", "onnx")
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "pt2.edge" / "manifest.json").read_text())
    assert manifest["family"] == "custom" and set(manifest["components"]["model"]["files"]) == {"onnx"}
    assert _modes(tmp_path / "pt2.edge") == {("dir", 0o750), ("file", 0o640)}
    result = run_cli("export", "tests.fixtures.user_models:small_classifier", "-o", str(tmp_path / "factory.edge"),
                     "--target", "onnx")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "factory.edge" / "manifest.json").read_text())
    assert manifest["family"] == "custom" and manifest["components"]["model"]["inputs"][0]["name"] == "image"


def test_positional_refusals(tmp_path: Path):
    result = run_cli("export", "no-such-thing", "-o", str(tmp_path / "a.edge"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "'no-such-thing'" in lines[0] and "tiny-sd, onestep, bnn, viws" in lines[0]
    assert "model.pt2" in lines[0] and "package.module:factory" in lines[0]
    result = run_cli("export", "tests.fixtures.user_models:small_classifier", "--model",
                     "tests.fixtures.user_models:small_classifier", "-o", str(tmp_path / "b.edge"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "not both" in lines[0], result.stderr
    (tmp_path / "weights.bin").write_bytes(b"not a model")  # an existing file is taken as the model, then refused
    result = run_cli("export", str(tmp_path / "weights.bin"), "-o", str(tmp_path / "c.edge"))
    assert result.returncode == 2 and ".pt2 file" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("export", str(tmp_path / "missing.pt2"), "-o", str(tmp_path / "d.edge"))
    assert result.returncode == 2 and "model file not found" in result.stderr
    assert not any(tmp_path.glob("*.edge"))


def test_parity_is_judged_on_held_out_data(tmp_path: Path):
    """With data, parity and the floor are measured on its held-out last fifth (never on the tracing example), a
    classifier gets top-1 / top-5 agreement, and --calibration-samples caps the calibration batches."""
    from edgesdk.export.parity import compare
    from edgesdk.runtime.backends import open_session
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.user_model import export_user_model

    calibration = _calibration(tmp_path)  # 16 rows at the example's batch 2: 8 batches, the last 2 held out
    logs: list[str] = []
    out = export_user_model("tests.fixtures.user_models:small_classifier", tmp_path / "m.edge", "executorch,onnx",
                            quant="w8a8", calibration=calibration, calibration_samples=4, log=logs.append)
    bundle = Bundle.open(out)
    meta = bundle.model
    assert meta["parity_data"]["batches"] == 2 and meta["parity_data"]["rows"] == 4, meta
    assert meta["calibration_batches"] == 4
    assert any("parity is judged on" in line and "held out" in line for line in logs), logs
    held_out = np.load(calibration)["image"][-4:]
    model, _, _ = small_classifier()
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(held_out[i : i + 2])).numpy() for i in (0, 2)])
    for target in ("onnx", "executorch"):
        figures = bundle.component("model").parity[target]["logits"]
        session = open_session(bundle, "model", target)
        got = np.concatenate([session.run({"image": held_out[i : i + 2]})["logits"] for i in (0, 2)])
        assert figures["sqnr_db"] == compare(reference, got)["sqnr_db"], target  # these rows, not the example's
        expected_top1 = float(np.mean(got.argmax(1) == reference.argmax(1)))
        assert figures["top1_agreement"] == expected_top1 and 0.0 <= figures["top5_agreement"] <= 1.0


def test_every_target_is_judged_before_a_refusal(tmp_path: Path):
    from edgesdk.export.capture import ComponentSpec
    from edgesdk.export.pipeline import export_bundle
    from edgesdk.quant.configs import W8Config
    from edgesdk.runtime.errors import EdgeSDKError

    model, examples, _ = small_classifier()
    spec = ComponentSpec("model", model, examples, ["image"], ["logits"], static_batch=2)
    try:
        export_bundle([spec], family="custom", model_meta={}, assets={}, targets=["executorch", "onnx"],
                      output=tmp_path / "strict.edge", recipe=W8Config(sqnr_floor_db=150.0), log=lambda _m: None)
    except EdgeSDKError as e:
        message = str(e)
    else:
        raise AssertionError("a 150 dB floor must refuse an int8 export")
    assert "model on executorch" in message and "model on onnx" in message, message
    assert not (tmp_path / "strict.edge").exists()


def test_a_folder_of_images_is_calibration_data(tmp_path: Path):
    """Images are resized (shorter side), centre-cropped to the input's size and normalised as told; the batches are
    what the export calibrates on and judges parity on."""
    from PIL import Image

    from edgesdk.export.capture import ComponentSpec
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.runtime.errors import EdgeSDKError
    from edgesdk.user_model import ImagePreprocess, export_user_model, load_calibration

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    model, examples, _ = small_classifier()  # (2, 3, 16, 16)
    spec = ComponentSpec("model", model, examples, ["image"], ["logits"], static_batch=2)
    preprocess = ImagePreprocess(resize=16, mean=(0.5,), std=(0.25, 0.25, 0.5))
    batches = load_calibration(folder, spec, preprocess)
    assert len(batches) == 5 and batches[0][0].shape == (2, 3, 16, 16)
    poisoned = np.zeros((4, 3, 16, 16), np.float32)
    poisoned[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", image=poisoned)
    with pytest.raises(EdgeSDKError, match="'image' holds NaN or infinite values"):
        load_calibration(tmp_path / "nan.npz", spec)
    # by hand: 24 x 40 -> shorter side 16 (16 x 27, PIL's width x height (27, 16)), centre crop 16 x 16
    image = Image.open(folder / "0.png").convert("RGB").resize((27, 16), Image.BILINEAR)
    crop = np.asarray(image.crop((5, 0, 21, 16)), np.float32).transpose(2, 0, 1) / 255.0
    expected = (crop - 0.5) / np.array([0.25, 0.25, 0.5], np.float32).reshape(3, 1, 1)
    np.testing.assert_allclose(batches[0][0][0].numpy(), expected, atol=1e-6)
    out = export_user_model("tests.fixtures.user_models:small_classifier", tmp_path / "m.edge", "onnx",
                            quant="w8a8", calibration=folder, preprocess=preprocess, log=lambda _m: None)
    assert Bundle.open(out).model["parity_data"]["batches"] == 1  # 5 batches: 4 calibrate, 1 judges
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "b.png").write_bytes(b"not a png")
    result = run_cli("export", "tests.fixtures.user_models:small_classifier", "-o", str(tmp_path / "x.edge"),
                     "--quant", "w8a8", "--calibration", str(bad), "--target", "onnx")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot read image"), result.stderr
    from edgesdk.cli import _floats  # the CLI's parser of --image-mean / --image-std (one CLI run is enough above)
    from edgesdk.runtime.errors import EdgeSDKError

    assert _floats("0.485, 0.456,0.406", "--image-mean") == (0.485, 0.456, 0.406)
    with pytest.raises(EdgeSDKError, match="--image-std takes comma-separated numbers"):
        _floats("0.2,x", "--image-std")
    with pytest.raises(EdgeSDKError, match="--image-std values must be finite and positive"):
        ImagePreprocess(std=(0.0,))


def test_per_layer_sensitivity_names_the_layers_int8_hurts():
    """One layer at a time, simulated: the convolutions around a 300x outlier channel cost most (the one writing
    it most of all); a model without one loses little anywhere; the fewest layers kept in fp32 reach a target."""
    from edgesdk.export.capture import ComponentSpec, capture
    from edgesdk.quant.sensitivity import layer_sensitivity
    from tests.fixtures.user_models import outlier_classifier

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 16, 16, generator=generator),) for _ in range(6)]
    reports = {}
    for factory in (small_classifier, outlier_classifier):
        model, examples, _ = factory()
        spec = ComponentSpec("model", model, examples, ["image"], ["logits"], static_batch=2)
        reports[factory.__name__] = layer_sensitivity(capture(spec, dynamic_batch=False).static, batches[:4],
                                                      batches[4:])
    plain, outlier = reports["small_classifier"], reports["outlier_classifier"]
    assert {s.layer for s in plain.layers} == {"features.0", "features.2", "head"}
    assert min(s.sqnr_db for s in plain.layers) > 30 and plain.all_quantized_sqnr_db > 30
    assert [s.layer for s in outlier.layers] == ["features.0", "features.2", "head"], outlier.layers
    assert outlier.all_quantized_sqnr_db < 5 and outlier.layers[0].noise_share > 0.5
    assert abs(sum(s.noise_share for s in outlier.layers) - 1.0) < 1e-6
    assert outlier.float_layers_for(15.0) == ["features.0", "features.2"]
    assert outlier.simulate(["features.0", "features.2"]) >= 15.0 > outlier.simulate(["features.0"])
    assert plain.float_layers_for(15.0) == []


def test_fallback_auto_keeps_the_sensitive_layers_in_fp32(tmp_path: Path):
    """Refused at plain w8a8 (judged on held-out rows); with --fallback auto the fewest sensitive layers stay fp32
    on every target, the bundle meets the floor, and the manifest / inspect --json carry the layers and the
    per-layer figures."""
    import onnx

    from edgesdk.runtime.errors import EdgeSDKError
    from edgesdk.user_model import export_user_model

    calibration = _calibration(tmp_path)
    source = "tests.fixtures.user_models:outlier_classifier"
    with pytest.raises(EdgeSDKError, match="below the recipe's floor of 12 dB: model on onnx"):
        export_user_model(source, tmp_path / "plain.edge", "onnx", quant="w8a8", calibration=calibration,
                          log=lambda _m: None)
    logs: list[str] = []
    bundle = export_user_model(source, tmp_path / "mixed.edge", "executorch,onnx", quant="w8a8",
                               calibration=calibration, fallback="auto", log=logs.append)
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = manifest["components"]["model"]
    assert manifest["quantization"]["fallback"]["layers"] == {"model": ["features.0", "features.2"]}
    assert model["float_layers"] == ["features.0", "features.2"]
    assert all(v["logits"]["sqnr_db"] >= 12.0 for v in model["parity"].values()), model["parity"]
    assert [s["layer"] for s in model["sensitivity"]["layers"]] == ["features.0", "features.2", "head"]
    assert any("keeping 2 of 3 layers in fp32" in line for line in logs), logs
    graph = onnx.load(str(bundle / model["files"]["onnx"])).graph  # fp32 weights for those two only
    weight_inputs = {n.input[1] for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert {w for w in weight_inputs if w in dequantized} and "features.0.weight" in weight_inputs
    assert "features.2.weight" in weight_inputs
    summary = run_cli("inspect", str(bundle), "--json")
    assert summary.returncode == 0, summary.stderr[-2000:]
    component = json.loads(summary.stdout)["components"]["model"]
    assert component["float_layers"] == ["features.0", "features.2"] and component["sensitivity"]["rows"] == 4
    shown = run_cli("inspect", str(bundle))
    assert "kept in fp32" in shown.stdout and "features.0" in shown.stdout


def test_fallback_refusals(tmp_path: Path):
    from edgesdk.quant.configs import W8A8Config, config_from_name
    from edgesdk.runtime.errors import EdgeSDKError

    named = config_from_name("w8a8", fallback="features.0, head,head")
    assert isinstance(named, W8A8Config) and named.fallback == "layers" and named.float_layers == ("features.0", "head")
    with pytest.raises(EdgeSDKError, match="applies to the static int8 recipe"):
        config_from_name("w8", fallback="auto")
    result = run_cli("export", "tests.fixtures.user_models:small_classifier", "-o", str(tmp_path / "x.edge"),
                     "--quant", "w8a8", "--calibration", str(_calibration(tmp_path)), "--target", "onnx",
                     "--fallback", "features.0,fc9")
    assert result.returncode == 2 and "--fallback names no int8 layer 'fc9'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.edge").exists()
    result = run_cli("export", "bnn", "-o", str(tmp_path / "y.edge"), "--fallback", "auto")
    assert result.returncode == 2 and "--fallback and --min-top1 apply to your own model" in result.stderr, \
        result.stderr


def test_fallback_widens_after_a_real_miss():
    """When an export misses the floor although the simulation cleared it, the component's simulated target rises
    by the shortfall and more layers stay fp32; with every layer in fp32 already, or in the last round, it refuses."""
    from edgesdk.export.fallback import LayerChoice, Shortfall
    from edgesdk.quant.configs import W8A8Config
    from edgesdk.quant.sensitivity import LayerSensitivity, SensitivityReport
    from edgesdk.runtime.errors import EdgeSDKError

    names = [f"layer{i}" for i in range(6)]
    report = SensitivityReport([LayerSensitivity(n, "conv2d", 10.0 + i, 0.1) for i, n in enumerate(names)], 5.0,
                               8, simulate=lambda kept: 5.0 + 4.0 * len(kept))  # each fp32 layer: +4 dB
    choice = LayerChoice(W8A8Config(fallback="auto"), measure=True, log=lambda _m: None)
    choice.reports["model"], choice.chosen["model"], choice.target_db["model"] = report, ("layer0", "layer1"), 15.0
    choice.widen([Shortfall("model", "onnx", "model on onnx 10.5 dB", 1.5),
                  Shortfall("model", "executorch", "model on executorch 11.0 dB", 1.0)], last_round=False)
    # target 15 + (12 - 10.5) + 1 = 17.5 dB: 5 + 4k >= 17.5 -> k = 4
    assert choice.chosen["model"] == ("layer0", "layer1", "layer2", "layer3")
    with pytest.raises(EdgeSDKError, match="with 4 of 6 layers in fp32: model on onnx top-1 agreement 90.0%"):
        choice.widen([Shortfall("model", "onnx", "model on onnx top-1 agreement 90.0%", 3.0)], last_round=True)


def test_top1_agreement_floor():
    """--min-top1: a classifier file whose top-1 agreement with fp32 is under it is below the floor even when its
    SQNR is not; outputs that are no classifier logits are judged on SQNR alone."""
    from edgesdk.export.fallback import below_floor, floor_text

    results = {"model": {"onnx": {"logits": {"sqnr_db": 20.0, "top1_agreement": 0.95}},
                         "executorch": {"logits": {"sqnr_db": 20.0, "top1_agreement": 0.99}}},
               "decoder": {"onnx": {"image": {"sqnr_db": 20.0}}}}
    below = below_floor(results, 12.0, 0.98)
    assert [(b.component, b.target) for b in below] == [("model", "onnx")] and below[0].missing_db > 0
    assert "top-1 agreement 95.0%" in below[0].what
    assert below_floor(results, 12.0) == [] and floor_text(12.0, 0.98) == "12 dB and 98% top-1 agreement"
    assert [b.target for b in below_floor(results, 25.0, None)] == ["onnx", "executorch", "onnx"]


def test_onnx_layer_nodes_carry_the_layer_name(tmp_path: Path):
    """A 3-D linear layer's weight becomes an anonymous transposed initializer in ONNX: the node is named after the
    layer at export, so --fallback finds it (and a convolution's by its weight's name)."""
    from torch import nn

    from edgesdk.export.capture import ComponentSpec, capture
    from edgesdk.export.onnx import lower_to_onnx
    from edgesdk.quant.onnx import nodes_of_layers

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.blocks = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.blocks(self.embed(image).flatten(2).transpose(1, 2))

    spec = ComponentSpec("model", Tokens().eval(), (torch.randn(2, 3, 8, 8),), ["image"], ["tokens"], static_batch=2)
    path = tmp_path / "m.onnx"
    path.write_bytes(lower_to_onnx(capture(spec, dynamic_batch=False).static, ["image"], ["tokens"], "model"))
    assert nodes_of_layers(path, ["blocks.2"]) == ["blocks.2/MatMul"]
    assert sorted(nodes_of_layers(path, ["embed", "blocks.0"])) == ["blocks.0/MatMul", "embed/Conv"]
