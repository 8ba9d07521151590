"""Quantization recipes: clear refusals, the SQNR floor, and a w8a8 tiny-sd bundle that stays close to fp32."""

from pathlib import Path

import pytest
import torch
from torch import nn

from edgesdk.export.capture import ComponentSpec
from edgesdk.export.pipeline import export_bundle
from edgesdk.exporting import export_model
from edgesdk.quant.recipes import W8, W8A8, Calibration, Recipe, check_targets, recipe_from_name
from edgesdk.runtime import EdgeSDKError
from edgesdk.runtime.bundle import Bundle
from tests.conftest import run_cli


def test_unknown_and_planned_recipes_are_refused():
    with pytest.raises(EdgeSDKError, match="unknown quantization recipe 'int3'"):
        recipe_from_name("int3")
    with pytest.raises(EdgeSDKError, match="w4.*not implemented"):
        recipe_from_name("w4")
    assert recipe_from_name("W8A8").calibration == Calibration()


def test_recipe_a_target_cannot_express_is_refused():
    with pytest.raises(EdgeSDKError, match="'w8' cannot be expressed for target.*tensorrt"):
        check_targets(W8(), ["onnx", "tensorrt"])


def test_empty_calibration_is_refused():
    with pytest.raises(EdgeSDKError, match="at least 1 sample"):
        Calibration(samples=0)


def test_cli_refusals(tmp_path: Path):
    result = run_cli("export", "tiny-sd", "-o", str(tmp_path / "a.edge"), "--quant", "int3")
    assert result.returncode == 2 and "unknown quantization recipe" in result.stderr
    result = run_cli("export", "tiny-sd", "-o", str(tmp_path / "b.edge"), "--quant", "w8", "--target", "tensorrt")
    assert result.returncode == 2 and "cannot be expressed" in result.stderr
    result = run_cli("export", "tiny-sd", "-o", str(tmp_path / "c.edge"), "--quant", "w8a8",
                     "--calibration-samples", "0")
    assert result.returncode == 2 and "at least 1 sample" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def _small_export(tmp_path: Path, recipe: Recipe) -> Path:
    torch.manual_seed(0)
    spec = ComponentSpec("net", SmallNet(), (torch.randn(1, 3, 16, 16),), ["x"], ["y"])
    calibration = {"net": [(torch.randn(1, 3, 16, 16),) for _ in range(8)]}
    return export_bundle([spec], family="test", model_meta={}, assets={}, targets=["executorch", "onnx"],
                         output=tmp_path / "net.edge", recipe=recipe, calibration=calibration,
                         log=lambda _m: None)


def test_sqnr_below_the_recipe_floor_fails_the_export(tmp_path: Path):
    strict = Recipe("w8a8", sqnr_floor_db=90.0, calibration=Calibration(samples=8), targets=("executorch", "onnx"))
    with pytest.raises(EdgeSDKError, match="below the recipe's floor of 90 dB"):
        _small_export(tmp_path, strict)
    assert not (tmp_path / "net.edge").exists()
    bundle = Bundle.open(_small_export(tmp_path, W8A8(Calibration(samples=8))))
    for figures in bundle.component("net").parity.values():
        assert all(v["sqnr_db"] >= W8A8().sqnr_floor_db for v in figures.values())


def test_w8_exports_to_executorch_and_onnx(tmp_path: Path):
    bundle = Bundle.open(_small_export(tmp_path, W8()))
    assert bundle.manifest["quantization"]["recipe"] == "w8"
    for figures in bundle.component("net").parity.values():
        assert all(v["sqnr_db"] >= W8().sqnr_floor_db for v in figures.values())


@pytest.fixture(scope="session")
def w8a8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quant") / "tiny-sd-w8a8.edge"
    return export_model("tiny-sd", out, "executorch,onnx", quant="w8a8", calibration=Calibration(samples=8),
                        log=lambda _m: None)


def test_w8a8_tiny_sd_is_small_delegated_and_above_its_floor(w8a8_bundle: Path, shipped_bundle: Path):
    quant, fp32 = Bundle.open(w8a8_bundle), Bundle.open(shipped_bundle)
    assert quant.manifest["quantization"]["recipe"] == "w8a8"
    assert quant.manifest["quantization"]["calibration"]["trajectory"] == "sampling"
    for name, info in quant.components.items():
        assert info.delegation["executorch"]["delegated_share"] == 1.0
        for target, figures in info.parity.items():
            assert min(v["sqnr_db"] for v in figures.values()) >= W8A8().sqnr_floor_db, (name, target)
    # ONNX Runtime runs every conv / matmul of the quantized graphs in integer kernels, none in the fp32 bundle
    assert quant.component("unet").delegation["onnx"]["integer_kernel_share"] == 1.0
    assert fp32.component("unet").delegation["onnx"]["integer_kernel_share"] == 0.0
    # end-to-end: samples from the quantized files follow prompts about as well as the fp32 model's
    accuracy = quant.manifest["quality"]["prompt_accuracy"]
    for backend in ("executorch", "onnx"):
        for attribute in ("kind", "colour"):
            assert accuracy[backend][attribute] >= accuracy["fp32_eager"][attribute] - 0.15, accuracy
    sizes, fp32_sizes = quant.file_sizes(), fp32.file_sizes()
    assert fp32_sizes["executorch/unet.pte"] / sizes["executorch/unet.pte"] >= 3.0


def test_memory_truth_detects_int8_weights_expanded_to_fp32(w8a8_bundle: Path):
    from edgesdk.runtime.memory import compare_residency, onnx_weight_residency

    bundle = Bundle.open(w8a8_bundle)
    residency = onnx_weight_residency(bundle.path_of(bundle.component("unet").files["onnx"]))
    assert residency["int_weight_bytes_file"] > 2_000_000 and residency["int_weights_kept"]
    # what a session that folded DequantizeLinear(int8 weight) into fp32 initializers would look like
    folded = {"float32": residency["session_bytes"].get("float32", 0) + 4 * residency["int_weight_bytes_file"]}
    assert not compare_residency(residency["file_bytes"], folded)["int_weights_kept"]


def test_one_verb_quantizes_a_module_and_an_onnx_graph():
    import onnxruntime as ort

    from edgesdk.export.capture import capture
    from edgesdk.export.onnx import lower_to_onnx
    from edgesdk.export.parity import compare
    from edgesdk.quant import quantize

    torch.manual_seed(0)
    model, x = SmallNet().eval(), torch.randn(1, 3, 16, 16)
    calibration = [(torch.randn(1, 3, 16, 16),) for _ in range(8)]
    program = quantize(model, W8A8(), example_inputs=(x,), calibration=calibration)
    targets = {str(n.target) for n in program.graph.nodes}
    assert any("quantize_per_tensor" in t for t in targets)
    with torch.no_grad():
        reference = model(x).numpy()
        assert compare(reference, program.module()(x).numpy())["sqnr_db"] >= 20
    spec = ComponentSpec("net", model, (x,), ["x"], ["y"])
    fp32_onnx = lower_to_onnx(capture(spec, dynamic_batch=False).static, ["x"], ["y"], "net")
    quantized = quantize(fp32_onnx, W8A8(), calibration=calibration, target="onnx", input_names=["x"])
    assert len(quantized) < len(fp32_onnx)
    out = ort.InferenceSession(quantized, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert compare(reference, out)["sqnr_db"] >= 20
    with pytest.raises(EdgeSDKError, match="example_inputs"):
        quantize(model, W8A8(), calibration=calibration)
