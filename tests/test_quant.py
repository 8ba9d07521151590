"""Quantization recipes: clear refusals, the SQNR floor, each recipe on micro nets for both targets, and tiny-sd's
calibration."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgesdk.export.capture import ComponentSpec
from edgesdk.export.pipeline import export_bundle
from edgesdk.quant.configs import Calibration, QuantConfig, W4Config, W8A8Config, W8Config, config_from_name
from edgesdk.runtime import EdgeSDKError
from edgesdk.runtime.bundle import Bundle
from tests.conftest import run_cli_in_process


def test_unknown_and_planned_recipes_are_refused():
    with pytest.raises(EdgeSDKError, match="unknown quantization recipe 'int3'"):
        config_from_name("int3")
    assert config_from_name("W8A8").calibration == Calibration()
    assert config_from_name("w4").weight_bits == 4 and not config_from_name("w4").needs_calibration


def test_recipe_a_target_cannot_express_is_refused():
    with pytest.raises(EdgeSDKError, match="'w8' cannot be expressed for target.*tensorrt"):
        W8Config().check_targets(["onnx", "tensorrt"])
    with pytest.raises(EdgeSDKError, match="'w4' cannot be expressed for target.*tensorrt.*INT4"):
        W4Config().check_targets(["executorch", "tensorrt"])
    with pytest.raises(EdgeSDKError, match="group size"):
        W4Config(group_size=48)


def test_empty_calibration_is_refused():
    with pytest.raises(EdgeSDKError, match="at least 1 sample"):
        Calibration(samples=0)


def test_cli_refusals(tmp_path: Path):
    result = run_cli_in_process("export", "tiny-sd", "-o", str(tmp_path / "a.edge"), "--quant", "int3")
    assert result.returncode == 2 and "unknown quantization recipe" in result.stderr
    result = run_cli_in_process("export", "tiny-sd", "-o", str(tmp_path / "b.edge"), "--quant", "w8",
                                "--target", "tensorrt")
    assert result.returncode == 2 and "cannot be expressed" in result.stderr
    result = run_cli_in_process("export", "tiny-sd", "-o", str(tmp_path / "c.edge"), "--quant", "w8a8",
                     "--calibration-samples", "0")
    assert result.returncode == 2 and "at least 1 sample" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def _small_export(tmp_path: Path, recipe: QuantConfig, targets: tuple[str, ...] = ("executorch", "onnx")) -> Path:
    torch.manual_seed(0)
    spec = ComponentSpec("net", SmallNet(), (torch.randn(1, 3, 16, 16),), ["x"], ["y"])
    calibration = {"net": [(torch.randn(1, 3, 16, 16),) for _ in range(8)]}
    return export_bundle([spec], family="test", model_meta={}, assets={}, targets=list(targets),
                         output=tmp_path / "net.edge", recipe=recipe, calibration=calibration,
                         log=lambda _m: None)


def test_sqnr_below_the_recipe_floor_fails_the_export(tmp_path: Path):
    strict = W8A8Config(sqnr_floor_db=90.0, calibration=Calibration(samples=8))
    with pytest.raises(EdgeSDKError, match="below the recipe's floor of 90 dB"):
        _small_export(tmp_path, strict, targets=("onnx",))  # the floor is the same check on every target
    assert not (tmp_path / "net.edge").exists()
    bundle = Bundle.open(_small_export(tmp_path, W8A8Config(calibration=Calibration(samples=8))))
    for figures in bundle.component("net").parity.values():
        assert all(v["sqnr_db"] >= W8A8Config().sqnr_floor_db for v in figures.values())


def test_w8_exports_to_executorch_and_onnx(tmp_path: Path):
    bundle = Bundle.open(_small_export(tmp_path, W8Config()))
    assert bundle.manifest["quantization"]["recipe"] == "w8"
    for figures in bundle.component("net").parity.values():
        assert all(v["sqnr_db"] >= W8Config().sqnr_floor_db for v in figures.values())


def test_tiny_sd_calibration_records_sampling_trajectories():
    """What a w8a8 export of tiny-sd calibrates on: the UNet's inputs along DDIM sampling trajectories (CFG pairs),
    the decoder's on their final latents. The full-size w8a8 export itself (ExecuTorch and ONNX Runtime, delegation,
    size, prompt accuracy, speed) is measured by benchmarks/quantization.py: it was the suite's longest export
    (~200 s); the w8a8 recipe is exported to both targets here on micro nets."""
    from edgesdk.calibration import tiny_sd_calibration
    from edgesdk.zoo.tiny_sd import load_tiny_sd

    model = load_tiny_sd()
    cal = Calibration(samples=4, steps=3, prompts=2)
    inputs = tiny_sd_calibration(model, cal)
    latent = (model.config.latent_channels, model.config.latent_size, model.config.latent_size)
    unet = inputs["unet"]
    assert len(unet) == cal.samples  # picked evenly from 2 trajectories x 3 steps
    assert all(x.shape == (2, *latent) and t.shape == (2,) for x, t, _ in unet)
    assert len({float(t[0]) for _, t, _ in unet}) <= cal.steps  # the trajectories' timesteps, not random ones
    assert inputs["vae_decoder"] and all(tuple(x.shape) == (1, *latent) for (x,) in inputs["vae_decoder"])
    assert set(inputs) >= {"unet", "vae_decoder", "text_encoder"}


class WideNet(nn.Module):
    """2.4 MB of weights in three matrix products: enough int8 bytes for a residency verdict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(64, 256, 3, padding=1)
        self.fc1 = nn.Linear(256, 2048)
        self.fc2 = nn.Linear(2048, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).mean(dim=(2, 3)))))


def test_memory_truth_detects_and_prevents_dequantize_folding(tmp_path: Path):
    from edgesdk.runtime.memory import onnx_weight_residency

    torch.manual_seed(0)
    spec = ComponentSpec("net", WideNet().eval(), (torch.randn(1, 64, 8, 8),), ["x"], ["y"])
    calibration = [(torch.randn(1, 64, 8, 8),) for _ in range(4)]
    path = export_bundle([spec], family="test", model_meta={}, assets={}, targets=["onnx"],
                         output=tmp_path / "w8a8.edge", recipe=W8A8Config(), calibration={"net": calibration},
                         log=lambda _m: None)
    bundle = Bundle.open(path)
    assert bundle.component("net").delegation["onnx"]["integer_kernel_share"] == 1.0
    onnx_file = bundle.path_of(bundle.component("net").files["onnx"])
    kept = onnx_weight_residency(onnx_file)  # the session options the runtime uses
    assert kept["int_weight_bytes_file"] > 2_000_000 and kept["int_weights_kept"]
    assert kept["integer_kernel_share"] == 1.0
    # ONNX Runtime with its QDQ handling off really does fold DequantizeLinear(int8 weight) into fp32
    folded = onnx_weight_residency(onnx_file, config={"session.disable_quant_qdq": "1"})
    assert not folded["int_weights_kept"]
    assert folded["session_bytes"]["float32"] > 3 * kept["int_weight_bytes_file"]


def test_resident_growth_verdicts():
    from edgesdk.runtime.bench import weight_growth_check

    fp32 = 12_000_000  # the tiny-sd UNet: w4 file 1.9 MB, w8 (ExecuTorch: linears only) file 8.45 MB
    assert weight_growth_check(4.1, 1_900_000, fp32, judge=True)["verdict"] == "kept"
    assert weight_growth_check(13.0, 1_900_000, fp32, judge=True)["verdict"] == "expanded"
    assert weight_growth_check(9.3, 8_450_000, fp32, judge=True)["verdict"] == "kept"
    assert weight_growth_check(13.0, 1_900_000, fp32, judge=False)["verdict"] is None  # ONNX: graph-checked
    assert weight_growth_check(9.0, 100_000, 400_000, judge=True)["verdict"] is None  # too small to tell
    assert weight_growth_check(9.0, 100_000, None, judge=True)["verdict"] is None  # bundle without the figure


def test_one_verb_quantizes_a_module_and_an_onnx_graph():
    import onnxruntime as ort

    from edgesdk.export.capture import capture
    from edgesdk.export.onnx import lower_to_onnx
    from edgesdk.export.parity import compare
    from edgesdk.quant import quantize

    torch.manual_seed(0)
    model, x = SmallNet().eval(), torch.randn(1, 3, 16, 16)
    calibration = [(torch.randn(1, 3, 16, 16),) for _ in range(8)]
    program = quantize(model, W8A8Config(), example_inputs=(x,), calibration=calibration)
    targets = {str(n.target) for n in program.graph.nodes}
    assert any("quantize_per_tensor" in t for t in targets)
    with torch.no_grad():
        reference = model(x).numpy()
        assert compare(reference, program.module()(x).numpy())["sqnr_db"] >= 20
    spec = ComponentSpec("net", model, (x,), ["x"], ["y"])
    fp32_onnx = lower_to_onnx(capture(spec, dynamic_batch=False).static, ["x"], ["y"], "net")
    quantized = quantize(fp32_onnx, W8A8Config(), calibration=calibration, target="onnx", input_names=["x"])
    assert len(quantized) < len(fp32_onnx)
    out = ort.InferenceSession(quantized, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert compare(reference, out)["sqnr_db"] >= 20
    with pytest.raises(EdgeSDKError, match="example_inputs"):
        quantize(model, W8A8Config(), calibration=calibration)


class ConvNet(nn.Module):
    """Convolutions whose input widths (3x3x64) divide into 4-bit groups, a strided one, a 1x1 and a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        self.body = nn.Conv2d(64, 64, 3, padding=1)
        self.proj = nn.Conv2d(64, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(torch.relu(self.body(torch.relu(self.stem(x)))))
        return self.head(h.mean(dim=(2, 3), keepdim=True).flatten(1))  # keepdim: the form XNNPACK takes


def test_convolutions_as_linear_layers_compute_the_same_function():
    from edgesdk.quant.matmul_form import ConvAsLinear, as_linear_layers

    torch.manual_seed(0)
    for kernel, stride, padding, h, w in [(3, 1, 1, 8, 8), (3, 2, 1, 7, 9), (1, 1, 0, 5, 6), (1, 2, 0, 6, 6),
                                          (5, 2, 2, 9, 9), (4, 2, 1, 8, 8)]:
        conv, x = nn.Conv2d(6, 5, kernel, stride=stride, padding=padding), torch.randn(2, 6, h, w)
        as_linear = ConvAsLinear(conv.weight, conv.bias, (stride, stride), (padding, padding))
        torch.testing.assert_close(as_linear(x), conv(x), atol=1e-5, rtol=1e-5)
    model, x = ConvNet().eval(), torch.randn(2, 3, 16, 16)
    module, counts = as_linear_layers(torch.export.export(model, (x,)).module())
    assert counts == {"conv": 3, "linear": 1, "conv_kept": 0}
    assert not any(isinstance(m, nn.Conv2d) for m in module.modules())
    torch.testing.assert_close(module(x), model(x), atol=1e-5, rtol=1e-5)


def test_im2col_budget_keeps_large_convolutions_and_the_same_function():
    from edgesdk.quant.matmul_form import as_linear_layers

    torch.manual_seed(0)
    model, x = ConvNet().eval(), torch.randn(2, 3, 16, 16)
    module, counts = as_linear_layers(torch.export.export(model, (x,)).module(), max_patch_bytes=1)
    # the 1x1 convolution holds no patches (its input is its rows): it is always rewritten
    assert counts["conv_kept"] >= 1 and counts["conv"] + counts["conv_kept"] == 3, counts
    kept = [n for n in module.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.conv2d.default]
    assert len(kept) == counts["conv_kept"]
    torch.testing.assert_close(module(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("recipe", [W8Config(), W4Config(group_size=16)], ids=["w8", "w4"])
def test_quantizing_keeps_no_module_alive(recipe: QuantConfig):
    """PT2E and quantize_ hand every module they prepare to functools caches (torch.ao's, torchao's): unless the
    quantizer empties them, those modules and their weights live as long as the process (most of SD-1.5's 18.6 GB
    after lowering)."""
    import gc
    import weakref

    x = torch.randn(1, 3, 16, 16)
    module = recipe.quantized_module(torch.export.export(ConvNet().eval(), (x,)), (), (x,))
    assert module(x).shape == (1, 10)
    watched = weakref.ref(module)
    del module
    gc.collect()
    assert watched() is None, "a cache still holds the quantized module"


def test_w4_exports_every_weight_in_4_bits(tmp_path: Path):
    torch.manual_seed(0)
    spec = ComponentSpec("net", ConvNet(), (torch.randn(1, 3, 32, 32),), ["x"], ["logits"])
    w4 = export_bundle([spec], family="test", model_meta={}, assets={}, targets=["executorch", "onnx"],
                       output=tmp_path / "w4.edge", recipe=W4Config(group_size=64), log=lambda _m: None)
    quant = Bundle.open(w4)
    info = quant.component("net")
    assert quant.manifest["quantization"]["weight_bits"] == 4
    assert info.delegation["executorch"]["delegated_share"] == 1.0
    # body, proj and head; the RGB stem (3x3x3 = 27 inputs, no group of 32 divides it) keeps fp32 weights, as
    # on ExecuTorch, so both targets compute the same function
    assert info.delegation["onnx"]["onnx_ops"].get("MatMulNBits", 0) == 3
    assert "Conv" not in info.delegation["onnx"]["onnx_ops"]
    for figures in info.parity.values():
        assert all(v["sqnr_db"] >= W4Config().sqnr_floor_db for v in figures.values())
    # against the fp32 weights' bytes (an fp32 file holds them and a little more): 42k weights, so the files' fixed
    # overhead keeps this well short of 8x
    fp32_bytes = 4 * sum(p.numel() for p in spec.module.parameters())
    for target in ("executorch", "onnx"):
        ratio = fp32_bytes / quant.file_sizes()[info.files[target]]
        assert ratio >= 3.0, (target, ratio)


def test_a_quantized_program_has_one_set_of_scales_for_every_batch_method(tmp_path: Path):
    """An extra ExecuTorch batch (a personalization method: tiny-sd's UNet at the ZO batch 3 beside the CFG batch 2)
    is the dynamic-batch capture quantized once and captured again at that batch: each sample comes out of either
    method the same, because both carry the same quantization parameters."""
    from edgesdk.runtime.backends import open_session

    torch.manual_seed(0)
    spec = ComponentSpec("net", SmallNet(), (torch.randn(2, 3, 16, 16),), ["x"], ["y"], static_batch=2,
                         extra_batches=(3,))
    calibration = {"net": [(torch.randn(2, 3, 16, 16),) for _ in range(8)]}
    path = export_bundle([spec], family="test", model_meta={}, assets={}, targets=["executorch"],
                         output=tmp_path / "net.edge", recipe=W8A8Config(calibration=Calibration(samples=8)),
                         calibration=calibration, log=lambda _m: None)
    bundle = Bundle.open(path)
    assert bundle.manifest["components"]["net"]["static_shapes"]["executorch"]["methods"] == {"2": "forward",
                                                                                              "3": "forward_b3"}
    session = open_session(bundle, "net", "executorch")
    x = torch.randn(3, 3, 16, 16).numpy()
    three = session.run({"x": x})["y"]
    two = session.run({"x": x[:2]})["y"]
    assert three.shape[0] == 3 and two.shape[0] == 2
    np.testing.assert_allclose(three[:2], two, atol=1e-6)
    assert np.abs(three).max() > 0


def test_onnx_static_int8_leaves_matmuls_of_two_activations_in_float():
    """Attention's products of two activations keep fp32 (no per-channel weight to quantize; softmax probabilities
    on a uint8 grid ruin a ViT), while the MatMul with a weight is quantized."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.quant.onnx import quantize_onnx_int8

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "weight")
    nodes = [helper.make_node("MatMul", ["x", "weight"], ["projected"], name="projection"),
             helper.make_node("Transpose", ["x"], ["x_t"], perm=[0, 2, 1], name="transpose"),
             helper.make_node("MatMul", ["projected", "x_t"], ["scores"], name="scores")]
    graph = helper.make_graph(nodes, "attention_like",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, 4])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.standard_normal((1, 4, 8)).astype(np.float32)} for _ in range(4)]
    quantized = onnx.load_from_string(quantize_onnx_int8(model.SerializeToString(), True, feeds, "onnx",
                                                      float_activation_matmuls=True))
    produced_by = {output: node.op_type for node in quantized.graph.node for output in node.output}
    matmuls = {node.name: [produced_by.get(name) for name in node.input]
               for node in quantized.graph.node if node.op_type == "MatMul"}
    assert matmuls["projection"] == ["DequantizeLinear", "DequantizeLinear"], matmuls
    # the transposed activation reaches the product in fp32 (quantized, it would come through a DequantizeLinear);
    # the projection's own output may stay quantized, as that of an int8 layer, and the product's is not
    assert matmuls["scores"][1] == "Transpose", matmuls
    assert not any(node.op_type == "QuantizeLinear" and "scores" in node.input for node in quantized.graph.node)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, feeds[0])[0].shape == (1, 4, 4)
