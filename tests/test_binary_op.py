"""The binary convolution as a torch op and an ExecuTorch program (issue 26): edgesdk::binary_conv2d's reference
against FoldedBinaryConv2d, the BNN bundle's binary-kernel program and its manifest entry, and that program run by
the C++ runtime (equal to the float program, 100 % top-1 agreement with eager, hostile programs refused in one line).

The C++ tests need the built runtime: they skip unless EDGESDK_CPP_LIB names libedgesdk_c.so and EDGESDK_RUN names
edgesdk-run, which ctest's `python_binary_program` sets (`make test`, `make cpp-test`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from edgesdk.data.classification import load_classification, normalise
from edgesdk.quant.binary import BinaryConv2d, FoldedBinaryConv2d, delegable_sign
from edgesdk.quant.binary_op import OUT_OVERLOAD, BinaryConvOp, binary_conv2d, unpack_binary_weights
from edgesdk.runtime import EdgeSDKError, ImageClassifier
from edgesdk.runtime.binary_ops import pack_binary_weights, packed_weights_shape
from edgesdk.runtime.binary_ops import unpack_binary_weights as unpack_sign_bits
from edgesdk.runtime.bundle import Bundle
from edgesdk.zoo.bnn import default_bnn_path, load_bnn


def folded_layer(cin: int, cout: int, stride: int, padding: int, seed: int) -> FoldedBinaryConv2d:
    torch.manual_seed(seed)
    layer = BinaryConv2d(cin, cout, 3, stride=stride, padding=padding)
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = 0.0  # sign(0): stored +1, as the folded layer's bits say
    return FoldedBinaryConv2d(layer)


@pytest.mark.parametrize(("cin", "stride", "padding"), [(16, 1, 1), (13, 2, 1), (64, 1, 0), (9, 2, 0)])
def test_op_reference_equals_the_folded_layer(cin: int, stride: int, padding: int):
    layer = folded_layer(cin, 24, stride, padding, seed=cin)
    op = BinaryConvOp(layer)
    x = torch.randn(2, cin, 11, 9)
    x[:, :, 3, :] = 0.0  # exact zeros count 0 in both
    x[0, 1] = -0.0
    with torch.no_grad():
        want = layer(x)
        got = op(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(unpack_binary_weights(op.packed, cin, 24), layer.bits)
    # the out overload writes the same into a given tensor, and the fake kernel gives the shape export sees
    out = torch.empty(0)
    torch.ops.edgesdk.binary_conv2d.out(x, op.packed, cin, 24, [3, 3], [stride] * 2, [padding] * 2, out=out)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = binary_conv2d(mode.from_tensor(x), mode.from_tensor(op.packed), cin, 24, [3, 3], [stride] * 2,
                             [padding] * 2)
    assert tuple(fake.shape) == tuple(want.shape)
    # the packed format is the ONNX op's (pack_binary_weights): the kernel's layout, 24 outputs = 3 blocks of 8
    assert np.array_equal(op.packed.numpy(), pack_binary_weights(layer.bits.numpy()))
    assert op.packed.numel() == 3 * 9 * ((cin + 63) // 64) * 64


@pytest.mark.parametrize(("cout", "cin", "kh", "kw"), [(8, 64, 3, 3), (13, 70, 3, 2), (1, 1, 1, 1), (24, 129, 1, 3)])
def test_the_packed_layout_round_trips_and_is_the_kernels_word_layout(cout: int, cin: int, kh: int, kw: int):
    weights = np.random.default_rng(cout * cin).standard_normal((cout, cin, kh, kw)).astype(np.float32)
    weights.flat[0] = 0.0  # sign(0) is +1: bit 0
    packed = pack_binary_weights(weights)
    blocks, words = -(-cout // 8), -(-cin // 64)
    assert packed.dtype == np.uint8 and packed.shape == packed_weights_shape(cout, cin, kh, kw)
    assert packed.shape == (blocks, kh, kw, words, 8, 8)
    np.testing.assert_array_equal(unpack_sign_bits(packed, cin, cout), weights < 0)
    # word [block][ky][kx][word][lane], little-endian, bit c = input channel word * 64 + c of output block * 8 + lane
    as_words = packed.view("<u8")[..., 0]
    for o, i, y, x in [(0, 0, 0, 0), (cout - 1, cin - 1, kh - 1, kw - 1), (cout // 2, cin // 2, kh // 2, kw // 2)]:
        bit = (int(as_words[o // 8, y, x, i // 64, o % 8]) >> (i % 64)) & 1
        assert bit == int(weights[o, i, y, x] < 0)
    # padding (channels past cin, lanes past cout) is 0
    used = np.zeros((blocks * 8, kh, kw, words * 64), bool)
    used[:cout, :, :, :cin] = True
    bits = np.unpackbits(packed, axis=-1, bitorder="little").transpose(0, 4, 1, 2, 3, 5).reshape(used.shape)
    assert not bits[~used].any()
    with pytest.raises(ValueError, match="must have shape"):
        unpack_sign_bits(packed, cin + 64, cout)
    with pytest.raises(ValueError, match="uint8 with 6 dimensions"):
        unpack_sign_bits(packed.reshape(packed.shape[0], -1), cin, cout)


def test_op_refuses_a_packed_weight_of_the_wrong_shape_in_one_line():
    layer = folded_layer(16, 8, 1, 1, seed=0)
    op = BinaryConvOp(layer)
    x = torch.randn(1, 16, 6, 6)
    with pytest.raises(EdgeSDKError, match=r"packed_weights must be uint8 \(1, 3, 3, 1, 8, 8\)") as caught:
        binary_conv2d(x, op.packed[..., :4], 16, 8, [3, 3], [1, 1], [1, 1])
    assert "\n" not in str(caught.value)
    with pytest.raises(EdgeSDKError, match=r"packed_weights must be uint8 \(2, 3, 3, 1, 8, 8\)"):
        binary_conv2d(x, op.packed, 16, 9, [3, 3], [1, 1], [1, 1])  # 9 outputs need 2 blocks
    with pytest.raises(EdgeSDKError, match="x must be"):
        binary_conv2d(x[:, :8], op.packed, 16, 8, [3, 3], [1, 1], [1, 1])
    assert torch.equal(F.conv2d(delegable_sign(x), layer.bits, None, 1, 1), op(x))


# ------------------------------------------------------------------------------------------ the bundle's program


@pytest.fixture(scope="module")
def digits_bundle(shared: Callable[[str], Path]) -> Path:
    return shared("bnn-digits")


@pytest.fixture(scope="module")
def shapes_bundle(shared: Callable[[str], Path]) -> Path:
    return shared("bnn-shapes")


def test_bundle_records_its_binary_kernel_program(digits_bundle: Path):
    bundle = Bundle.open(digits_bundle)
    entry = bundle.manifest["components"]["classifier"]
    kernel = entry["binary_kernel"]["executorch"]
    model = load_bnn(default_bnn_path("digits"))
    layers = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert kernel["op"] == OUT_OVERLOAD and kernel["binary_layers"] == len(layers)
    assert kernel["packed_weight_bytes"] == sum(-(-m.weight.shape[0] // 8) * 9 * -(-m.weight.shape[1] // 64) * 64
                                                for m in layers)
    assert kernel["file"] == "executorch/classifier.binary.pte" and kernel["file"] in bundle.manifest["files"]
    assert bundle.component("classifier").binary_kernel["executorch"]["file"] == kernel["file"]
    # the float program stays the fallback, 1-bit on disk as before
    assert bundle.component("classifier").files["executorch"].endswith(".pte.1bit")


def test_python_binding_cannot_load_the_kernel_and_keeps_the_float_program(digits_bundle: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """What the note claims, checked: the executorch binding has no edgesdk::binary_conv2d.out."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(digits_bundle / "executorch" / "classifier.binary.pte"))
    with pytest.raises(RuntimeError, match="0x:?14"):  # Error::OperatorMissing
        program.load_method("forward")
    monkeypatch.setenv("EDGESDK_EXECUTORCH_RUNTIME", "python")
    classifier = ImageClassifier(digits_bundle, backend="executorch")
    assert classifier.kernel == "float" and "running the float program" in classifier.kernel_note


def test_a_malformed_binary_kernel_entry_is_refused(digits_bundle: Path, tmp_path: Path):
    copy = tmp_path / "bad.edge"
    shutil.copytree(digits_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["components"]["classifier"]["binary_kernel"]["executorch"]["file"] = "../outside.pte"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSDKError, match="leaves the bundle"):
        Bundle.open(copy)
    manifest["components"]["classifier"]["binary_kernel"]["executorch"] = 5
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSDKError, match="not an object with a string 'file' and 'op'"):
        Bundle.open(copy)


# ------------------------------------------------------------------------------------------ the C++ runtime

CPP = pytest.mark.skipif(not (os.environ.get("EDGESDK_CPP_LIB") and os.environ.get("EDGESDK_RUN")),
                         reason="needs the C++ runtime: EDGESDK_CPP_LIB and EDGESDK_RUN (ctest python_binary_program)")


@CPP
@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_cpp_binary_program_equals_the_float_program_and_eager(dataset: str, digits_bundle: Path,
                                                              shapes_bundle: Path, monkeypatch: pytest.MonkeyPatch):
    bundle = digits_bundle if dataset == "digits" else shapes_bundle
    model = load_bnn(default_bnn_path(dataset))
    split = load_classification(dataset)
    with torch.no_grad():
        eager = model(torch.from_numpy(normalise(split.test_images, model.config.mean, model.config.std))).numpy()
    monkeypatch.setenv("EDGESDK_EXECUTORCH_RUNTIME", "python")
    float_logits = ImageClassifier(bundle, backend="executorch").logits(split.test_images)
    monkeypatch.setenv("EDGESDK_EXECUTORCH_RUNTIME", "cpp")
    classifier = ImageClassifier(bundle, backend="executorch")
    assert classifier.kernel.startswith("binary ") and classifier.kernel_note is None, classifier.kernel
    binary_logits = classifier.logits(split.test_images)
    # binary layers are exact integers in both; the float parts (affines, residual adds, the head) round differently
    # only where XNNPACK splits or fuses them differently around the custom op
    scale = float(np.abs(float_logits).max())
    assert float(np.abs(binary_logits - float_logits).max()) <= 1e-5 * scale
    assert float((binary_logits.argmax(1) == eager.argmax(1)).mean()) == 1.0
    # the kernel runs on the program's constants in place: no repacked copy; the layers whose kernel row fits one word
    # (16 input channels at 3x3) keep row-packed words beside them, one per block of 8 outputs, kernel row and lane
    assert classifier.session.inner.repacked_weight_bytes == 0
    assert classifier.session.inner.row_packed_weight_bytes == row_packed_bytes(model) > 0


def row_packed_bytes(model: torch.nn.Module) -> int:
    """What the kernels derive for a network's binary layers whose kernel row fits one 64-bit word (binary_conv.hpp)."""
    total = 0
    for layer in model.modules():
        if isinstance(layer, BinaryConv2d):
            out_channels, in_channels, kernel_h, kernel_w = layer.weight.shape
            if kernel_w > 1 and kernel_w * in_channels <= 64:
                total += -(-out_channels // 8) * kernel_h * 8 * 8
    return total


def tampered_copy(source: Path, target: Path, program: bytes | None = None, kernel: dict | None = None) -> Path:
    """A copy of a bundle with its binary program and/or manifest entry replaced, checksums made to match (a hostile
    bundle that passes the checksum check)."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    entry = manifest["components"]["classifier"]
    if kernel is not None:
        entry["binary_kernel"]["executorch"] = kernel
    if program is not None:
        rel = entry["binary_kernel"]["executorch"]["file"]
        (target / rel).write_bytes(program)
        manifest["files"][rel] = hashlib.sha256(program).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def wrong_shape_program() -> bytes:
    """One binary convolution whose packed weight has half the bytes a word needs: what only a hostile exporter
    writes (the op's own checks refuse it, so they are bypassed while lowering)."""
    from edgesdk.export.executorch import lower_to_executorch
    from edgesdk.quant import binary_op

    class Bad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("packed", torch.zeros(1, 3, 3, 1, 8, 4, dtype=torch.uint8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return binary_conv2d(x, self.packed, 16, 8, [3, 3], [1, 1], [1, 1])

    original = binary_op._check
    binary_op._check = lambda *args: None
    try:
        exported = torch.export.export(Bad(), (torch.zeros(1, 16, 8, 8),))
        program = lower_to_executorch(exported, "bad")
    finally:
        binary_op._check = original
    return program.buffer


@CPP
def test_cpp_hostile_binary_programs_are_one_line_errors(digits_bundle: Path, tmp_path: Path):
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(load_classification("digits").test_images[1][..., 0], "L").save(image)
    program = (digits_bundle / "executorch" / "classifier.binary.pte").read_bytes()
    name = b"edgesdk::binary_conv2d"
    assert program.count(name) == 1
    kernel = json.loads((digits_bundle / "manifest.json").read_text())["components"]["classifier"]["binary_kernel"]
    cases = {
        "truncated": (tampered_copy(digits_bundle, tmp_path / "t.edge", program[: len(program) // 2]),
                      "re-export the bundle"),
        "unknown op": (tampered_copy(digits_bundle, tmp_path / "o.edge",
                                     program.replace(name, b"edgesdk::binary_conv3d")),
                       "calls an operator this runtime does not have"),
        "wrong packed shape": (tampered_copy(digits_bundle, tmp_path / "w.edge", wrong_shape_program()),
                               "packed_weights has shape (1, 3, 3, 1, 8, 4), not (1, 3, 3, 1, 8, 8)"),
        "manifest op": (tampered_copy(digits_bundle, tmp_path / "m.edge",
                                      kernel={**kernel["executorch"], "op": "edgesdk::binary_conv9d.out"}),
                        "needs the operator 'edgesdk::binary_conv9d.out'"),
    }
    for case, (bundle, reason) in cases.items():
        if case == "wrong packed shape":  # a one-layer program: its manifest I/O is the classifier's, so patch it
            manifest = json.loads((bundle / "manifest.json").read_text())
            entry = manifest["components"]["classifier"]
            entry["inputs"][0]["shape"] = ["batch", 16, 8, 8]
            entry["outputs"][0]["shape"] = ["batch", 8, 8, 8]
            (bundle / "manifest.json").write_text(json.dumps(manifest))
            from edgesdk.runtime.cpp_backend import CppExecuTorchSession

            session = CppExecuTorchSession(Bundle.open(bundle), Bundle.open(bundle).component("classifier"))
            with pytest.raises(EdgeSDKError, match=reason.replace("(", r"\(").replace(")", r"\)")) as caught:
                session.run({"image": np.ones((1, 16, 8, 8), np.float32)})
            assert "\n" not in str(caught.value)
            continue
        done = subprocess.run([os.environ["EDGESDK_RUN"], "classify", str(bundle), str(image)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert reason in done.stderr and len(done.stderr.strip().splitlines()) == 1, (case, done.stderr)
    # without binary_kernel in the manifest the float program runs (a bundle from before, or another exporter)
    plain = tmp_path / "plain.edge"
    shutil.copytree(digits_bundle, plain)
    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["components"]["classifier"]["binary_kernel"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    for bundle, kernel_note in ((plain, "note: kernel: float"), (digits_bundle, "note: kernel: binary ")):
        done = subprocess.run([os.environ["EDGESDK_RUN"], "classify", str(bundle), str(image)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and kernel_note in done.stderr and " 7 " in done.stdout, done
