"""BNN bundles on ONNX Runtime's binary convolution (issue 26): the exported binary-kernel graph
(export/binary_onnx.py), the runtime's choice between it and the float graph (edgesdk.runtime.binary_ops), the note
when it falls back, exactness against the float graph and eager, and hostile binary graphs and manifest entries.

The tests that run the op need libedgesdk_ort_ops.so ($EDGESDK_ORT_OPS_LIB or runtime/cpp/build) and skip, saying
why, without it; the structure, fallback and manifest tests always run."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgesdk.data.classification import load_classification, normalise
from edgesdk.export.binary_onnx import rewrite_binary_convolutions
from edgesdk.quant.binary import SIGN_GAIN, binary_layers
from edgesdk.runtime import binary_ops
from edgesdk.runtime.backends import OnnxSession, session_kernel
from edgesdk.runtime.binary_ops import (
    BINARY_CONV,
    DOMAIN,
    KERNEL_ENV,
    OP_NAME,
    ort_ops_library,
    packed_weights_shape,
    unpack_binary_weights,
)
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.classify import ImageClassifier
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.onebit import model_source
from edgesdk.zoo.bnn import ShortcutA, default_bnn_path, load_bnn
from tests.conftest import run_cli, run_cli_without_torch
from tests.test_binary_op import row_packed_bytes

LIBRARY = ort_ops_library()
needs_library = pytest.mark.skipif(
    LIBRARY is None, reason="libedgesdk_ort_ops.so is not built: `make cpp` builds it where onnxruntime_c_api.h is "
                            "found (runtime/cpp/CMakeLists.txt; EDGESDK_ORT_OPS_LIB names a build)")
DATASETS = ("digits", "shapes")


@pytest.fixture(scope="module")
def bundles(shared: Callable[[str], Path]) -> dict[str, Path]:
    return {dataset: shared(f"bnn-{dataset}") for dataset in DATASETS}  # the shipped networks, as test_bnn's


@pytest.fixture
def no_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process as a fresh clone sees it: no op library anywhere."""
    monkeypatch.delenv(binary_ops.LIBRARY_ENV, raising=False)
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    monkeypatch.setattr(binary_ops, "DEFAULT_LIBRARY", tmp_path / "not-built" / binary_ops.DEFAULT_LIBRARY.name)


def graphs(bundle_path: Path) -> tuple[onnx.ModelProto, onnx.ModelProto, dict]:
    """(float graph, binary graph, the manifest's binary_kernel.onnx) of a bundle's classifier."""
    bundle = Bundle.open(bundle_path, verify_checksums=False)
    info = bundle.component("classifier")
    offered = info.binary_kernel["onnx"]
    float_source = model_source(bundle.path_of(info.files["onnx"]))
    float_graph = onnx.load_from_string(float_source) if isinstance(float_source, bytes) else onnx.load(float_source)
    return float_graph, onnx.load(bundle.path_of(offered["file"])), offered


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_binary_graph_has_one_op_per_binary_layer_on_one_bit_weights(bundles: dict[str, Path], dataset: str):
    model = load_bnn(default_bnn_path(dataset))
    layers = binary_layers(model)
    float_graph, binary_graph, offered = graphs(bundles[dataset])
    assert offered["op"] == OP_NAME == "ai.edgesdk::BinaryConv2d" and offered["binary_layers"] == len(layers)
    ops = [node.op_type for node in binary_graph.graph.node]
    float_ops = [node.op_type for node in float_graph.graph.node]
    assert ops.count(BINARY_CONV) == len(layers)
    # each binary layer was Mul(2^100) -> Clip -> Conv -> Relu -> Mul(scale) -> Add(shift) in float, and the second of
    # each basic block also -> Add(residual), the residual of a downsampling block made by 5 nodes (option A: Reshape,
    # Slice, Slice, Reshape, Pad): all one node now (the epilogue fused, export/binary_onnx.py)
    assert float_ops.count("Clip") == len(layers) and "Clip" not in ops
    blocks = list(model.blocks)
    downsampling = [isinstance(block.shortcut, ShortcutA) for block in blocks]
    assert len(blocks) * 2 == len(layers) and sum(downsampling) == 2
    assert len(ops) == len(float_ops) - 5 * len(layers) - len(blocks) - 5 * sum(downsampling)
    assert "Slice" not in ops and "Pad" not in ops
    assert ops.count("Conv") == float_ops.count("Conv") - len(layers) == 1  # the float stem stays float
    assert ops.count("Relu") == 1 and float_ops.count("Relu") == len(layers) + 1  # the stem's
    assert {(o.domain, o.version) for o in binary_graph.opset_import} >= {(DOMAIN, 1)}
    initializers = {t.name: t for t in binary_graph.graph.initializer}
    nodes = [node for node in binary_graph.graph.node if node.op_type == BINARY_CONV]
    packed_total = 0
    for index, (node, layer) in enumerate(zip(nodes, layers, strict=True)):  # graph order is the network's order
        out_channels, in_channels, kh, kw = layer.weight.shape
        packed = initializers[node.input[1]]
        assert node.domain == DOMAIN and packed.data_type == TensorProto.UINT8
        assert tuple(packed.dims) == packed_weights_shape(out_channels, in_channels, kh, kw)
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shortcut = blocks[index // 2].shortcut if index % 2 else None
        read_in_place = {"residual_stride": 2, "residual_channel_offset": shortcut.extra // 2} if isinstance(
            shortcut, ShortcutA) else {}
        assert attributes == {"in_channels": in_channels, "out_channels": out_channels, "kernel_shape": [kh, kw],
                              "strides": list(layer.stride), "pads": [layer.padding[0], layer.padding[1]] * 2,
                              "activation": b"relu", **read_in_place}
        # batch norm's scale and shift (per-channel initializers), and the residual on each block's second conv: the
        # block's input, which the first conv of the block reads too
        assert len(node.input) == (5 if index % 2 else 4)
        if index % 2:
            assert node.input[4] == nodes[index - 1].input[0]
        assert all(tuple(initializers[name].dims)[-3:] == (out_channels, 1, 1) for name in node.input[2:4])
        # the bits are the trained signs: bit set where W < 0 (the kernel's layout, pack_binary_weights)
        bits = unpack_binary_weights(numpy_helper.to_array(packed), in_channels, out_channels)
        np.testing.assert_array_equal(bits, layer.weight.detach().numpy() < 0)
        packed_total += int(np.prod(packed.dims))
    assert offered["packed_weight_bytes"] == packed_total
    # no float copy of a binary weight is left: only 1-byte packed tensors and the float layers' weights
    float_values = sum(int(np.prod(t.dims)) for t in binary_graph.graph.initializer if t.data_type == TensorProto.FLOAT)
    assert float_values < sum(p.numel() for p in model.parameters()) - sum(layer.weight.numel() for layer in layers)


def _conv_graph(extra_reader: bool = False, weights: np.ndarray | None = None) -> bytes:
    """x -> Mul(2^100) -> Clip(-1, 1) -> Conv(W) -> y, optionally with the Clip's output also a graph output."""
    w = np.where(np.random.default_rng(0).standard_normal((4, 3, 3, 3)) < 0, -1.0, 1.0).astype(np.float32)
    w = w if weights is None else weights
    nodes = [helper.make_node("Mul", ["x", "gain"], ["m"]), helper.make_node("Clip", ["m", "lo", "hi"], ["s"]),
             helper.make_node("Conv", ["s", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 3, 6, 6]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              outputs, initializer=[
                                  numpy_helper.from_array(np.array(SIGN_GAIN, np.float32), "gain"),
                                  numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
                                  numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
                                  numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_the_rewrite_keeps_what_else_reads_the_sign_and_leaves_float_convolutions_alone():
    plain = onnx.load_from_string(rewrite_binary_convolutions(_conv_graph()).data)
    assert [n.op_type for n in plain.graph.node] == [BINARY_CONV]
    assert [n.input[0] for n in plain.graph.node] == ["x"]  # the op takes x itself and signs it
    shared_sign = onnx.load_from_string(rewrite_binary_convolutions(_conv_graph(extra_reader=True)).data)
    assert [n.op_type for n in shared_sign.graph.node] == ["Mul", "Clip", BINARY_CONV]
    with pytest.raises(EdgeSDKError, match="found no binary convolution"):  # weights that are not all +-1
        rewrite_binary_convolutions(_conv_graph(weights=np.full((4, 3, 3, 3), 0.5, np.float32)))


def _copy(bundle_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_path, tmp_path / bundle_path.name))


def _rewrite(bundle_path: Path, relpath: str, data: bytes | None = None,
             manifest_edit: Callable[[dict], None] | None = None) -> None:
    """Replace a bundle file (and its checksum) and/or edit its manifest, as a tampering writer would."""
    manifest_path = bundle_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if data is not None:
        (bundle_path / relpath).write_bytes(data)
        manifest["files"][relpath] = hashlib.sha256(data).hexdigest()
    if manifest_edit is not None:
        manifest_edit(manifest)
    manifest_path.write_text(json.dumps(manifest))


def test_without_the_library_the_float_graph_runs_with_a_one_line_note(bundles: dict[str, Path], no_library: None,
                                                                      tmp_path: Path):
    classifier = ImageClassifier(bundles["digits"])
    assert classifier.kernel == "float"
    assert classifier.kernel_note is not None and "\n" not in classifier.kernel_note
    assert "runs its float ONNX graph" in classifier.kernel_note and "is not built" in classifier.kernel_note
    images = load_classification("digits").test_images[:16]
    float_path = classifier.bundle.path_of(classifier.bundle.component("classifier").files["onnx"])
    reference = OnnxSession(float_path, classifier.bundle.component("classifier")).run(
        {"image": normalise(images, classifier.mean, classifier.std)})["logits"]
    np.testing.assert_array_equal(classifier.logits(images), reference)
    # the CLI says it on stderr, torch-free, and still classifies
    split = load_classification("digits")
    from PIL import Image

    Image.fromarray(split.test_images[0][..., 0], "L").save(tmp_path / "digit.png")
    done = run_cli_without_torch("classify", str(bundles["digits"]), str(tmp_path / "digit.png"), "--json",
                                 tmp_path=tmp_path, env={KERNEL_ENV: "float"})
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "float ONNX graph" in line]
    assert notes == [f"note: component 'classifier' runs its float ONNX graph, not the binary one: {KERNEL_ENV}=float"]
    assert json.loads(done.stdout)[0]["kernel"] == "float"


def test_an_unknown_op_or_a_missing_library_file_falls_back(bundles: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    copy = _copy(bundles["digits"], tmp_path)
    _rewrite(copy, "", manifest_edit=lambda m: m["components"]["classifier"]["binary_kernel"]["onnx"].update(
        op="ai.edgesdk::BinaryConv9d"))
    kernel, note = session_kernel(ImageClassifier(copy).session)
    assert kernel == "float" and "needs op ai.edgesdk::BinaryConv9d" in note
    monkeypatch.setenv(binary_ops.LIBRARY_ENV, str(tmp_path / "nowhere.so"))
    kernel, note = session_kernel(ImageClassifier(bundles["digits"]).session)
    assert kernel == "float" and "nowhere.so" in note and "is not a file" in note


MANIFEST_ERRORS = [  # what is wrong, edit of binary_kernel.onnx, the refusal
    ("the file is not listed", lambda e: e.update(file="onnx/other.onnx"), "is not listed in"),
    ("the file leaves the bundle", lambda e: e.update(file="../x.onnx"), "leaves the bundle"),
    ("binary_layers is missing", lambda e: e.pop("binary_layers"), "binary_layers: required"),
    ("the file is the float graph", None, "names the float ONNX graph itself"),
]


@pytest.mark.parametrize(("what", "edit", "message"), MANIFEST_ERRORS, ids=[m[0] for m in MANIFEST_ERRORS])
def test_a_bad_binary_kernel_entry_is_refused_at_open(bundles: dict[str, Path], tmp_path: Path, what: str,
                                                     edit: Callable[[dict], None] | None, message: str):
    copy = _copy(bundles["digits"], tmp_path)

    def change(manifest: dict) -> None:
        entry = manifest["components"]["classifier"]
        if edit is None:
            entry["binary_kernel"]["onnx"]["file"] = entry["files"]["onnx"]
        else:
            edit(entry["binary_kernel"]["onnx"])

    _rewrite(copy, "", manifest_edit=change)
    with pytest.raises(EdgeSDKError, match=message) as refused:
        Bundle.open(copy)
    assert "\n" not in str(refused.value)


@needs_library
def _epilogue_graph(relu_is_output: bool = False, scale_shape: tuple[int, ...] = (4, 1, 1),
                    residual_shape: tuple[int, ...] = (1, 4, 3, 3), shortcut_phase: int | None = None) -> bytes:
    """_conv_graph's binary convolution, then Relu -> Mul(scale) -> Add(shift) -> Add(r), r a graph input; or, with
    ``shortcut_phase``, r an option-A shortcut of the convolution's input x (1, 3, 6, 6) as torch.onnx writes the BNN's
    (Reshape, Slice, Slice, Reshape, Pad one zero channel before), keeping pixel ``shortcut_phase`` of each 2x2."""
    model = onnx.load_from_string(_conv_graph())
    graph = model.graph
    graph.node.extend([helper.make_node("Relu", ["y"], ["relu"]), helper.make_node("Mul", ["scale", "relu"], ["bn"]),
                       helper.make_node("Add", ["bn", "shift"], ["shifted"])])
    generator = np.random.default_rng(1)
    graph.initializer.extend([
        numpy_helper.from_array(generator.standard_normal(scale_shape).astype(np.float32), "scale"),
        numpy_helper.from_array(generator.standard_normal((1, 4, 1, 1)).astype(np.float32), "shift")])
    if shortcut_phase is None:
        graph.input.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(residual_shape)))
    else:
        constants = {"split": [-1, 3, 3, 2, 3, 2], "merge": [-1, 3, 3, 3], "phase": [shortcut_phase],
                     "phase_end": [shortcut_phase + 1], "axis_h": [3], "axis_w": [5], "one": [1],
                     "pads": [0, 1, 0, 0, 0, 0, 0, 0]}
        graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items())
        graph.node.extend([helper.make_node("Reshape", ["x", "split"], ["phases"]),
                           helper.make_node("Slice", ["phases", "phase", "phase_end", "axis_h", "one"], ["rows"]),
                           helper.make_node("Slice", ["rows", "phase", "phase_end", "axis_w", "one"], ["kept"]),
                           helper.make_node("Reshape", ["kept", "merge"], ["subsampled"]),
                           helper.make_node("Pad", ["subsampled", "pads"], ["r"])])
    graph.node.append(helper.make_node("Add", ["shifted", "r"], ["out"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 3, 3]))
    if relu_is_output:
        graph.output.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, [1, 4, 3, 3]))
    return model.SerializeToString()


SHORTCUT_OPS = ["Reshape", "Slice", "Slice", "Reshape", "Pad"]
EPILOGUE_CASES = [  # what, graph, the ops left, the fused node's inputs past W_packed
    ("the whole chain", {}, [BINARY_CONV], ["scale", "shift", "r"]),
    ("an option-A shortcut, read in place", {"shortcut_phase": 0}, [BINARY_CONV], ["scale", "shift", "x"]),
    ("a shortcut of the odd pixels, added as made", {"shortcut_phase": 1}, [*SHORTCUT_OPS, BINARY_CONV],
     ["scale", "shift", "r"]),
    ("a Relu output that is also a graph output", {"relu_is_output": True}, [BINARY_CONV, "Mul", "Add", "Add"], []),
    ("a scale that is not per channel", {"scale_shape": (1, 1, 3)}, [BINARY_CONV, "Mul", "Add", "Add"], []),
    ("a residual that broadcasts", {"residual_shape": (1, 4, 1, 1)}, [BINARY_CONV, "Add"], ["scale", "shift"]),
]


@pytest.mark.parametrize(("what", "options", "ops", "inputs"), EPILOGUE_CASES, ids=[c[0] for c in EPILOGUE_CASES])
def test_the_epilogue_is_fused_only_where_the_kernel_computes_the_same(what: str, options: dict, ops: list[str],
                                                                       inputs: list[str]):
    source = _epilogue_graph(**options)
    rewritten = onnx.load_from_string(rewrite_binary_convolutions(source).data)
    assert [n.op_type for n in rewritten.graph.node] == ops, what
    fused = next(node for node in rewritten.graph.node if node.op_type == BINARY_CONV)
    assert list(fused.input[2:]) == inputs
    attributes = {a.name: helper.get_attribute_value(a) for a in fused.attribute}
    assert attributes["activation"] == b"relu"  # the Relu is fused in every case
    in_place = inputs[-1:] == ["x"]
    assert (attributes.get("residual_stride"), attributes.get("residual_channel_offset")) == (
        (2, 1) if in_place else (None, None))
    if LIBRARY is None:
        return
    options_ = ort.SessionOptions()
    options_.register_custom_ops_library(str(LIBRARY))
    generator = np.random.default_rng(2)
    feeds = {"x": generator.standard_normal((1, 3, 6, 6)).astype(np.float32)}
    if "shortcut_phase" not in options:
        feeds["r"] = generator.standard_normal(options.get("residual_shape", (1, 4, 3, 3))).astype(np.float32)
    want = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(["out"], feeds)[0]
    got = ort.InferenceSession(rewritten.SerializeToString(), options_, providers=["CPUExecutionProvider"]).run(
        ["out"], feeds)[0]
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), what  # bit for bit


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_binary_graph_equals_the_float_graph_and_agrees_with_eager(bundles: dict[str, Path], dataset: str,
                                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    model = load_bnn(default_bnn_path(dataset))
    split = load_classification(dataset)
    with torch.no_grad():
        eager = model(torch.from_numpy(normalise(split.test_images, model.config.mean, model.config.std)))
    binary = ImageClassifier(bundles[dataset])
    assert binary.kernel is not None and binary.kernel.startswith("binary ") and binary.kernel_note is None
    monkeypatch.setenv(KERNEL_ENV, "float")
    floating = ImageClassifier(bundles[dataset])
    assert floating.kernel == "float"
    got, reference = binary.logits(split.test_images), floating.logits(split.test_images)
    # the binary layers are exact integers either way; the float layers around them run the same ONNX Runtime ops
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5 * scale)
    assert float((got.argmax(1) == eager.argmax(1).numpy()).mean()) == 1.0
    # every BinaryConv2d ran on its W_packed initializer in place: the library's kernels hold no weight copy
    import ctypes

    lib = ctypes.CDLL(str(LIBRARY))
    lib.edgesdk_ort_copied_weight_bytes.restype = ctypes.c_int64
    assert lib.edgesdk_ort_copied_weight_bytes() == 0
    # the 16-channel layers keep row-packed words (test_binary_op.row_packed_bytes), made once per session
    lib.edgesdk_ort_row_packed_weight_bytes.restype = ctypes.c_int64
    assert lib.edgesdk_ort_row_packed_weight_bytes() >= row_packed_bytes(model) > 0
    print(f"{dataset}: kernel {binary.kernel}, max |binary - float| {float(np.abs(got - reference).max()):.3g} "
          f"of logits up to {scale:.3g}")


def _tampered_binary_graph(path: Path, change: str) -> bytes:
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.op_type == BINARY_CONV)
    if change == "packed shape":
        packed = next(t for t in model.graph.initializer if t.name == node.input[1])
        array = numpy_helper.to_array(packed)
        packed.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array[:, :, :2]), packed.name))  # kh x 2 taps
    elif change == "scale count":  # the fused batch norm's scale of 3 values for 16 channels
        scale = next(t for t in model.graph.initializer if t.name == node.input[2])
        scale.CopyFrom(numpy_helper.from_array(np.ones((3, 1, 1), np.float32), scale.name))
    elif change == "scale rank":  # the right count of values in 9 dimensions: the op reads at most 8
        scale = next(t for t in model.graph.initializer if t.name == node.input[2])
        count = int(np.prod(numpy_helper.to_array(scale).shape))
        scale.CopyFrom(numpy_helper.from_array(np.ones((count,) + (1,) * 8, np.float32), scale.name))
    elif change == "residual_stride":  # the block's second conv told to read every other pixel of a Y-sized residual
        second = [n for n in model.graph.node if n.op_type == BINARY_CONV][1]
        second.attribute.append(helper.make_attribute("residual_stride", 2))
    else:
        attributes = {a.name: a for a in node.attribute}
        target = {"in_channels": ("in_channels", 3), "pads": ("pads", [-1, 1, 1, 1]),
                  "kernel_shape": ("kernel_shape", [5]), "activation": ("activation", "gelu")}[change]
        attributes[target[0]].CopyFrom(helper.make_attribute(*target))
    return model.SerializeToString()


@needs_library
@pytest.mark.parametrize("change", ["packed shape", "in_channels", "pads", "kernel_shape", "truncated", "activation",
                                    "scale count", "scale rank", "residual_stride"])
def test_a_hostile_binary_graph_is_a_one_line_error(bundles: dict[str, Path], tmp_path: Path, change: str,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    copy = _copy(bundles["digits"], tmp_path)
    relpath = Bundle.open(copy).component("classifier").binary_kernel["onnx"]["file"]
    if change == "truncated":
        data = (copy / relpath).read_bytes()[:-100]
    else:
        data = _tampered_binary_graph(copy / relpath, change)
    _rewrite(copy, relpath, data)
    with pytest.raises(EdgeSDKError) as refused:
        ImageClassifier(copy)
    message = str(refused.value)
    assert "\n" not in message and relpath in message, message
    assert ("BinaryConv2d" in message) != (change == "truncated"), message
    if change == "pads":  # the CLI: exit 2 and that one line, without ONNX Runtime's own log of the failure
        done = run_cli("classify", str(copy), str(tmp_path / "any.png"))
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"error: {message}"], done.stderr


@needs_library
def test_inspect_and_bench_name_the_kernel(bundles: dict[str, Path]):
    from edgesdk.reporting import bundle_summary
    from edgesdk.runtime.bench import bench_backend

    offered = bundle_summary(bundles["digits"])["components"]["classifier"]["binary_kernel"]["onnx"]
    assert offered["here"]["kernel"].startswith("binary ") and offered["here"]["note"] is None
    result = bench_backend(bundles["digits"], "onnx", component_runs=2, threads=1)
    assert result["components"]["classifier"]["kernel"] == offered["here"]["kernel"]
