"""Binary networks with ReSTE (spec ../shared/specs/reste-bnn.md §10): the estimator, schedule and indicators, the
network and its inference folding, training (resume, torchrun), the 1-bit container, export and classification."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesdk.data.classification import load_classification, normalise
from edgesdk.exporting import export_model
from edgesdk.quant.binary import (
    BinaryConv2d,
    ClippedSTESign,
    ReSTESign,
    binary_layers,
    delegable_sign,
    estimating_error,
    gradient_instability,
    o_schedule,
    rectified_multiplier,
    set_o,
)
from edgesdk.runtime import EdgeSDKError, ImageClassifier
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.onebit import pack, sign_runs, unpack
from edgesdk.train.bnn import BNNTrainConfig, train_bnn
from edgesdk.zoo.bnn import BNN, PRESETS, binary_share, default_bnn_path, folded_for_inference, load_bnn
from edgesdk.zoo.weights import load_weights
from tests.conftest import run_cli, run_cli_in_process, run_without_torch

# spec §2: the multiplier at |z| = 0.05 (inside m), 0.3, 0.5, 1.0, 1.5 and 1.6 (clipped)
TABLE = {1: [1, 1, 1, 1, 1, 0], 2: [3.162, 0.913, 0.707, 0.5, 0.408, 0], 3: [4.642, 0.744, 0.529, 0.333, 0.254, 0]}
POINTS = [0.05, 0.3, 0.5, 1.0, 1.5, 1.6]


def reste_gradient(z: torch.Tensor, o: float) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    ReSTESign.apply(z, o).sum().backward()
    return z.grad


@pytest.mark.parametrize("o", [1, 2, 3])
def test_rectified_multipliers_match_the_spec_table(o: int):
    for sign in (1.0, -1.0):
        grad = reste_gradient(torch.tensor(POINTS) * sign, float(o))
        np.testing.assert_allclose(grad.numpy(), TABLE[o], atol=1e-3)  # the table has 3 decimals
    z = torch.tensor([0.0, 1e-6, 0.03, 0.1])
    assert torch.allclose(reste_gradient(z, float(o)), torch.full((4,), 0.1 ** ((1 - o) / o)), atol=1e-6)
    assert not reste_gradient(torch.tensor([1.5001, 2.0, -7.0]), float(o)).any()


def test_vectorised_backward_equals_a_masked_reference():
    torch.manual_seed(0)
    z = torch.randn(10_000) * 1.2
    for o in (1.0, 1.7, 3.0, 10.0):
        reference = torch.zeros_like(z)
        for i, value in enumerate(z.abs().tolist()):  # the straightforward, per-element form
            if value <= 0.1:
                reference[i] = 0.1 ** ((1 - o) / o)
            elif value <= 1.5:
                reference[i] = (1 / o) * value ** ((1 - o) / o)
        torch.testing.assert_close(rectified_multiplier(z, o), reference, atol=5e-6, rtol=1e-5)


def test_ste_clips_where_asked_and_forward_is_sign_with_zero():
    z = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.2], requires_grad=True)
    out = ClippedSTESign.apply(z, 1.0)
    out.sum().backward()
    assert out.tolist() == [-1.0, -1.0, -1.0, 0.0, 1.0, 1.0]  # sign(0) = 0
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_o_schedule_is_the_cosine_ramp():
    expected = {0: 1.000, 100: 1.025, 250: 1.152, 500: 1.586, 750: 2.235, 900: 2.687, 999: 2.997}
    for epoch, value in expected.items():
        assert o_schedule(epoch, 1000) == pytest.approx(value, abs=1e-3)
    assert o_schedule(5, 10) == pytest.approx(o_schedule(500, 1000))  # a short run scales the ramp
    with pytest.raises(EdgeSDKError):
        o_schedule(10, 10)


def test_binary_layer_forward_alpha_gradient_and_state():
    torch.manual_seed(0)
    layer = BinaryConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 5, 5)
    alpha = layer.weight.abs().mean()
    expected = torch.nn.functional.conv2d(torch.sign(x), torch.sign(layer.weight) * alpha, padding=1)
    torch.testing.assert_close(layer(x), expected)
    assert set(layer.state_dict()) == {"weight"}  # o and t are not persistent: restored from the epoch
    # alpha is not detached: W's gradient has the sign path (ReSTE at o = 1: identity inside t) plus d alpha/dW
    w = layer.weight.detach().clone().requires_grad_(True)
    (torch.sign(w).detach() * w.abs().mean() + (w - w.detach()) * w.abs().mean().detach()).sum().backward()
    layer.binary_weight().sum().backward()
    inside = (layer.weight.abs() <= 1.5)
    torch.testing.assert_close(layer.weight.grad[inside], w.grad[inside])
    model = BNN(PRESETS["digits"])
    set_o(model, 2.5)
    assert all(float(m.o) == 2.5 for m in binary_layers(model)) and not hasattr(model.stem, "o")


def test_indicators_trade_off_with_o():
    torch.manual_seed(0)
    model = BNN(PRESETS["digits"])
    errors = [estimating_error(model, o) for o in (1.0, 2.0, 3.0, 5.0, 10.0)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))  # e falls as o grows
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    instability = []
    for o in (1.0, 3.0, 10.0):
        model.zero_grad()
        set_o(model, o)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        instability.append(gradient_instability(binary_layers(model)))
    assert instability[0] < instability[1] < instability[2]  # s rises with o


def test_network_layout_and_full_precision_layers():
    model = BNN(PRESETS["resnet20"])
    total = sum(p.numel() for p in model.parameters())
    assert total + 5 * 64 + 5 == 269_850  # the spec's CIFAR ResNet-20 (10 classes); we have 5
    assert binary_share(model) == pytest.approx(0.99, abs=0.005)
    assert len(binary_layers(model)) == 18
    assert not isinstance(model.stem, BinaryConv2d) and isinstance(model.fc, torch.nn.Linear)


def test_folding_keeps_the_function_and_pure_sign_weights():
    torch.manual_seed(0)
    model = BNN(PRESETS["digits"])
    model.train()
    with torch.no_grad():  # realistic batch-norm statistics
        for _ in range(5):
            model(torch.randn(64, 1, 8, 8))
    model.eval()
    x = torch.randn(256, 1, 8, 8)
    folded, unfolded = folded_for_inference(model), folded_for_inference(model, fold_alpha=False)
    with torch.no_grad():
        reference, a, b = model(x), folded(x), unfolded(x)
    torch.testing.assert_close(a, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b, reference, atol=1e-4, rtol=1e-4)
    assert (a.argmax(1) == b.argmax(1)).all()
    for m in folded.modules():
        if hasattr(m, "bits"):
            assert set(m.bits.unique().tolist()) <= {-1.0, 1.0}
    v = torch.tensor([0.0, 1e-20, -3e-8, 5.0, -float("inf")])
    assert delegable_sign(v).tolist() == torch.sign(v).tolist()


def test_one_bit_container_round_trips_any_bytes():
    rng = np.random.default_rng(0)
    signs = rng.choice(np.array([1.0, -1.0], dtype="<f4"), size=300).tobytes()
    noise = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
    data = noise[:13] + signs + noise[13:500] + signs[:4 * 70] + noise[500:] + signs[:4 * 10]  # odd offsets
    runs = sign_runs(data)
    assert runs == [(13, 300), (13 + 1200 + 487, 70)]  # the 10-word tail is too short to index
    blob, header = pack(data)
    assert unpack(blob) == data and header["binary_words"] == 370
    assert len(blob) < len(data) - 4 * 370 + 370 // 8 + 400  # the runs leave; their bits and a header come in
    assert unpack(pack(noise)[0]) == noise  # nothing to pack: still exact
    corrupt = bytearray(blob)
    corrupt[-1] ^= 0xFF
    with pytest.raises(EdgeSDKError, match="corrupt"):
        unpack(bytes(corrupt))


def test_training_learns_resumes_exactly_and_refuses_other_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import edgesdk.train.bnn as trainer

    cfg = BNNTrainConfig(dataset="digits", epochs=4, batch=64, seed=3)
    straight = train_bnn(tmp_path / "a.safetensors", tmp_path / "ck-a", cfg, show_progress=False)
    assert straight["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    history = straight["history"]
    assert [round(h["o"], 6) for h in history] == [round(o_schedule(e, 4), 6) for e in range(4)]
    assert all(h["error_at_o"] >= h["error_at_o_end"] and h["instability"] > 0 for h in history)
    save = trainer.atomic_torch_save

    def save_then_die(state: dict, path: Path) -> None:
        save(state, path)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_bnn(tmp_path / "b.safetensors", tmp_path / "ck-b", cfg, show_progress=False)
    monkeypatch.setattr(trainer, "atomic_torch_save", save)
    with pytest.raises(EdgeSDKError, match="other settings"):
        train_bnn(tmp_path / "b.safetensors", tmp_path / "ck-b", BNNTrainConfig(dataset="digits", epochs=4, batch=32,
                                                                                 seed=3), show_progress=False)
    resumed = train_bnn(tmp_path / "b.safetensors", tmp_path / "ck-b", cfg, show_progress=False)
    a, _ = load_weights(tmp_path / "a.safetensors")
    b, meta = load_weights(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == history and meta["estimator"] == "reste"


def test_torchrun_two_processes_one_epoch(tmp_path: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2",
           "-m", "edgesdk.cli", "train", "bnn", "--dataset", "digits",
           "--estimator", "ste", "--epochs", "1", "--batch", "256", "-o", str(tmp_path / "s.safetensors"),
           "--checkpoint-dir", str(tmp_path / "ck"), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = load_weights(tmp_path / "s.safetensors")[1]
    assert meta["estimator"] == "ste" and len(meta["history"]) == 1
    epoch = meta["history"][0]  # STE is ReSTE's o = 1 member: its error is read at o = 1, above the o_end one
    assert epoch["error_at_o"] > epoch["error_at_o_end"] > 0 and epoch["instability"] > 0


def test_cli_bad_training_options_are_one_line(tmp_path: Path):
    for args, message in ((["--estimator", "xnor"], "unknown estimator 'xnor'"),
                          (["--dataset", "cifar"], "unknown dataset 'cifar'"),
                          (["--dataset", "digits", "--preset", "resnet20"], "takes 32x32x3 images")):
        done = run_cli_in_process("train", "bnn", *args, "-o", str(tmp_path / "x.safetensors"), "--quiet")
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------- shipped network


@pytest.fixture(scope="module")
def digits_bundle(shared: Callable[[str], Path]) -> Path:
    return shared("bnn-digits")  # export_model("bnn", out, "executorch,onnx"): the shipped digits network


def test_shipped_weights_are_trained_reste(digits_bundle: Path):
    model = load_bnn(default_bnn_path("digits"))
    assert model.config.estimator == "reste" and model.info["test_accuracy"] >= 0.9
    shapes = load_bnn(default_bnn_path("shapes"))
    assert shapes.config.blocks == 3 and shapes.info["test_accuracy"] >= 0.95  # the ResNet-20


def test_bundle_stores_one_bit_per_binary_weight(digits_bundle: Path):
    bundle = Bundle.open(digits_bundle)
    assert bundle.family == "bnn" and bundle.manifest["quantization"]["recipe"] == "binary"
    info = bundle.component("classifier")
    model = load_bnn(default_bnn_path("digits"))
    binary = sum(m.weight.numel() for m in binary_layers(model))
    for target in ("executorch", "onnx"):
        assert info.files[target].endswith(".1bit")
        # every binary weight went to the bit stream (XNNPACK or ONNX may hold a few +-1 runs of their own)
        packed = bundle.manifest["components"]["classifier"]["one_bit"][target]
        assert binary <= packed["binary_weights"] <= binary * 1.01
        assert bundle.file_sizes()[info.files[target]] < binary * 4 / 8  # well under a byte per binary weight
    assert info.delegation["executorch"]["delegated_share"] == 1.0 and info.delegation["executorch"]["segments"] == 1
    layers = bundle.manifest["model"]["binary_layers"]
    assert len(layers) == len(binary_layers(model)) and all(layer["alpha"] > 0 for layer in layers)


@pytest.fixture(scope="module")
def shapes_bundle(shared: Callable[[str], Path]) -> Path:
    return shared("bnn-shapes")  # the shipped ResNet-20 on shapes


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
@pytest.mark.parametrize("backend", ["onnx", "executorch"])
def test_backends_agree_with_eager_on_every_test_image(digits_bundle: Path, shapes_bundle: Path, backend: str,
                                                        dataset: str):
    model = load_bnn(default_bnn_path(dataset))
    split = load_classification(dataset)
    with torch.no_grad():
        eager = model(torch.from_numpy(normalise(split.test_images, model.config.mean, model.config.std)))
    bundle = digits_bundle if dataset == "digits" else shapes_bundle
    logits = ImageClassifier(bundle, backend=backend).logits(split.test_images)
    agreement = float((logits.argmax(1) == eager.argmax(1).numpy()).mean())
    assert agreement == 1.0, agreement
    assert float((logits.argmax(1) == split.test_labels).mean()) == pytest.approx(model.info["test_accuracy"],
                                                                                  abs=1e-9)


def test_classify_cli_converts_resizes_and_refuses_non_images(digits_bundle: Path, tmp_path: Path):
    split = load_classification("digits")
    index = int(np.flatnonzero(split.test_labels == 7)[0])
    small = split.test_images[index][..., 0]
    Image.fromarray(small, "L").resize((32, 32), Image.Resampling.NEAREST).convert("RGB").save(tmp_path / "seven.png")
    done = run_cli("classify", str(digits_bundle), str(tmp_path / "seven.png"), "-k", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)[0]
    assert result["top"][0]["class"] == "7" and len(result["top"]) == 2
    assert "note:" in done.stderr and "resized 32x32 -> 8x8" in done.stderr and "converted 3 channel(s)" in done.stderr
    (tmp_path / "notes.txt").write_text("not an image")
    done = run_cli("classify", str(digits_bundle), str(tmp_path / "notes.txt"))
    assert done.returncode == 2 and "is not an image file" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_cli("classify", str(digits_bundle), str(tmp_path / "missing.png"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_classifier_runs_without_torch(digits_bundle: Path, tmp_path: Path):
    model = load_bnn(default_bnn_path("digits"))
    images = load_classification("digits").test_images[:40]
    with torch.no_grad():
        eager = model(torch.from_numpy(normalise(images, model.config.mean, model.config.std))).argmax(1).tolist()
    np.save(tmp_path / "images.npy", images)
    code = f"""
import numpy as np
from edgesdk.runtime import ImageClassifier
clf = ImageClassifier({str(digits_bundle)!r}, backend="onnx")
preds = clf.classify(list(np.load({str(tmp_path / 'images.npy')!r})), top_k=1)
print(",".join(p.top[0][0] for p in preds))
"""
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().split(",") == [model.config.classes[i] for i in eager]


def test_wrong_family_and_recipes_are_refused(digits_bundle: Path, tmp_path: Path):
    from edgesdk.runtime.testing import write_synthetic_bundle

    with pytest.raises(EdgeSDKError, match=re.escape("takes --quant binary | fp32")):
        export_model("bnn", tmp_path / "x.edge", "onnx", quant="w8a8")
    with pytest.raises(EdgeSDKError, match="'binary' stores the weights of a network trained binary"):
        export_model("tiny-sd", tmp_path / "y.edge", "onnx", quant="binary")
    with pytest.raises(EdgeSDKError, match="not an image classifier"):
        ImageClassifier(write_synthetic_bundle(tmp_path / "t2i.edge"))
    assert not (tmp_path / "x.edge").exists() and not (tmp_path / "y.edge").exists()
