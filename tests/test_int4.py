"""The 4-bit grid (edgesdk.quant.int4): one grid on both targets, idempotent, and the quantization-aware
distillation of a one-step student that lands on it (edgesdk.train.quant_aware)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgesdk.exporting import export_model
from edgesdk.quant import W4Config, quantize
from edgesdk.quant.int4 import (
    as_matrix,
    bake_quant_aware,
    fake_quantize,
    group_for,
    make_quant_aware,
    quantizable_layers,
    scales_and_codes,
)
from edgesdk.runtime import EdgeSDKError
from edgesdk.train.quant_aware import QuantAwareConfig, train_quant_aware
from edgesdk.zoo.onestep import default_onestep_path, default_onestep_w4_path, load_onestep


def dequantized(matrix: np.ndarray, group: int) -> np.ndarray:
    scales, codes = scales_and_codes(matrix, group)
    out_features, features = matrix.shape
    return (codes.reshape(out_features, -1, group) * scales[..., None]).reshape(out_features, features)


def test_group_choice_follows_the_kernels():
    assert group_for(128, 64) == 64 and group_for(96, 64) == 32 and group_for(36, 64) is None


def test_grid_codes_scales_and_idempotence():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 128)).astype(np.float32)
    weight[3, :64] = 0.0  # an all-zero group keeps code 0 and stays zero
    scales, codes = scales_and_codes(weight, 64)
    assert scales.shape == (16, 2) and codes.min() >= -8 and codes.max() <= 7
    blocks = codes.reshape(16, 2, 64)
    # each group's extreme sits exactly on -8 or 7: nothing clipped, and the grid maps onto itself
    assert np.all((blocks.min(-1) == -8) | (blocks.max(-1) == 7) | (np.abs(blocks).max(-1) == 0))
    snapped = dequantized(weight, 64)
    assert np.abs(snapped - weight).max() <= scales.max() / 2 + 1e-6
    again_scales, again_codes = scales_and_codes(snapped, 64)
    np.testing.assert_array_equal(again_codes, codes)
    np.testing.assert_allclose(again_scales, scales, rtol=1e-6)
    assert not np.any(dequantized(weight, 64)[3, :64])


def test_fake_quantize_matches_the_grid_for_convolutions_and_passes_gradients():
    torch.manual_seed(0)
    conv = torch.randn(8, 16, 3, 3, requires_grad=True)  # 144 features: groups of 32 (tap-major, channel-minor)
    snapped = fake_quantize(conv, 16)
    reference = dequantized(as_matrix(conv.detach()).numpy(), 16)
    np.testing.assert_allclose(as_matrix(snapped.detach()).numpy(), reference, atol=1e-6)
    snapped.sum().backward()  # straight through: d(snapped)/d(weight) = 1
    torch.testing.assert_close(conv.grad, torch.ones_like(conv))


def test_quant_aware_layers_and_baking_leave_weights_on_the_grid():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 8, 1),
                        nn.Conv2d(8, 8, 3, groups=2), nn.Linear(64, 10))
    layers = quantizable_layers(net, 64)
    # 4x9 = 36 inputs: no group divides; 32x9 = 288: groups of 32; grouped convolutions are not matrix products
    assert sorted(layers) == ["1", "2", "4"] and layers["1"][1] == 32 and layers["2"][1] == 64
    assert make_quant_aware(net, 64) == 3
    bake_quant_aware(net)
    for name, (layer, group) in quantizable_layers(net, 64).items():
        matrix = as_matrix(layer.weight.detach()).numpy()
        np.testing.assert_allclose(dequantized(matrix, group), matrix, atol=1e-6, err_msg=name)
    assert isinstance(net[1].weight, nn.Parameter)  # plain layers again


def test_both_targets_store_the_same_grid():
    torch.manual_seed(0)
    linear = nn.Linear(192, 48).eval()
    x = torch.randn(5, 192)
    snapped = dequantized(linear.weight.detach().numpy(), 64)
    exact = x.numpy() @ snapped.T + linear.bias.detach().numpy()
    onnx_bytes = torch.onnx.export(linear, (x,), dynamo=True).model_proto.SerializeToString()
    session = ort.InferenceSession(quantize(onnx_bytes, W4Config(), target="onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    # int8 activations on the fly cost ~1 %; a wrong scale or nibble order would cost ~100 %
    assert np.abs(got - exact).max() < 0.03 * np.abs(exact).max()

    from edgesdk.quant.pt2e import int4_module

    module = int4_module(torch.export.export(linear, (x,)), 64)
    weights = [m.weight for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(weights) == 1
    scales, codes = scales_and_codes(linear.weight.detach().numpy(), 64)
    np.testing.assert_array_equal(weights[0].qdata.numpy(), codes)
    np.testing.assert_allclose(weights[0].scale.numpy().reshape(scales.shape), scales, rtol=1e-6)


def test_quant_aware_distillation_learns_writes_the_grid_and_resumes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    import edgesdk.train.quant_aware as quant_aware

    cfg = QuantAwareConfig(iterations=48, batch=8, lr=3e-4, validation=16, checkpoint_every=24)
    out, checkpoints = tmp_path / "w4.safetensors", tmp_path / "ckpt"
    save = quant_aware.atomic_torch_save

    def save_then_die(state: dict, path: Path) -> None:  # a kill right after the first checkpoint
        save(state, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(quant_aware, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_quant_aware(out, checkpoints, cfg=cfg, show_progress=False)
    monkeypatch.setattr(quant_aware, "atomic_torch_save", save)
    assert not out.exists()
    with pytest.raises(EdgeSDKError, match="other student or settings"):
        train_quant_aware(out, checkpoints, cfg=QuantAwareConfig(**{**cfg.__dict__, "batch": 4}), show_progress=False)
    result = train_quant_aware(out, checkpoints, cfg=cfg, show_progress=False)  # resumes at 24
    assert result["after_db"] > result["before_db"] + 3.0, result
    student = load_onestep(out)
    assert student.info["quant_aware"]["recipe"] == "w4" and student.info["quant_aware"]["group"] == 64
    for name, (layer, group) in quantizable_layers(student.generator, 64).items():
        matrix = as_matrix(layer.weight.detach()).numpy()
        # fp16 storage moves a snapped weight by at most ~1e-3 of itself
        np.testing.assert_allclose(dequantized(matrix, group), matrix, rtol=2e-3, atol=1e-6, err_msg=name)
    unbroken = train_quant_aware(tmp_path / "w4b.safetensors", tmp_path / "ckpt2", cfg=cfg, show_progress=False)
    assert unbroken["after_db"] == pytest.approx(result["after_db"], abs=1e-6)  # resuming changes nothing
    with pytest.raises(EdgeSDKError, match="already a quantization-aware student"):
        train_quant_aware(tmp_path / "x.safetensors", tmp_path / "c3", student_path=out, cfg=cfg, show_progress=False)


def test_w4_onestep_export_needs_a_quant_aware_student(tmp_path: Path):
    with pytest.raises(EdgeSDKError, match="not quantization-aware.*train onestep-w4"):
        export_model("onestep", tmp_path / "x.edge", "onnx", weights=default_onestep_path(), quant="w4")
    assert not (tmp_path / "x.edge").exists()


def test_shipped_w4_student_lies_on_the_grid_and_draws_what_the_fp32_student_draws():
    """The shipped quantization-aware student: its weights are already on the 4-bit grid (so the export loses
    nothing in them) and its eager x0 agrees with the fp32 student's. Its full export (parity per target, MatMulNBits,
    prompt accuracy) is measured by benchmarks/onestep_quant.py: a full-size export is suite time (README, Tests)."""
    shipped = load_onestep(default_onestep_w4_path())
    assert shipped.info["quant_aware"]["x0_sqnr_db_vs_fp32_student"]["after"] >= 15.0
    layers = quantizable_layers(shipped.generator, shipped.info["quant_aware"]["group"])
    assert len(layers) >= 20  # what ONNX Runtime runs as MatMulNBits
    for name, (layer, group) in layers.items():
        matrix = as_matrix(layer.weight.detach()).float().numpy()
        scales, _ = scales_and_codes(matrix, group)
        off_grid = np.abs(dequantized(matrix, group) - matrix).reshape(*scales.shape, group) / scales[..., None]
        assert off_grid.max() < 0.01, (name, off_grid.max())  # the weights file's 16-bit rounding; a step is 1
    fp32 = load_onestep()
    with torch.no_grad():
        noise, text = torch.randn(32, 4, 8, 8), fp32.encode_text(["a large red star"] * 32)
        reference, quant_aware = fp32.generator(noise, text), copy.deepcopy(shipped.generator)(noise, text)
    assert 10 * torch.log10((reference ** 2).sum() / ((reference - quant_aware) ** 2).sum()) >= 15.0


def test_cli_bad_input_is_one_line(tmp_path: Path):
    from tests.conftest import run_cli_in_process

    result = run_cli_in_process("train", "onestep-w4", "--group", "48", "-o", str(tmp_path / "x.safetensors"),
                                "--quiet")
    assert result.returncode != 0 and "group must be a power of two" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli_in_process("export", "onestep", "--weights", str(default_onestep_path()), "--quant", "w4",
                     "-o", str(tmp_path / "y.edge"))
    assert result.returncode != 0 and "not quantization-aware" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.edge").exists()
