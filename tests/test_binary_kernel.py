"""The ONNX Runtime custom op ai.edgesdk::BinaryConv2d (runtime/cpp/ort, libedgesdk_ort_ops.so) against torch's
conv2d(delegable_sign(x), bits), compared exactly, on every instruction path this CPU runs; and malformed nodes,
which must be ONNX Runtime errors, never a crash.

The library comes from $EDGESDK_ORT_OPS_LIB (ctest sets it) or the checkout's runtime/cpp/build; without either
these tests skip, saying so."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from edgesdk.quant.binary import delegable_sign
from edgesdk.runtime.binary_ops import (
    BINARY_CONV,
    DOMAIN,
    ISA_ENV,
    OPSET_VERSION,
    binary_isa_name,
    ort_ops_library,
    pack_binary_weights,
    packed_weights_shape,
)
from edgesdk.runtime.errors import EdgeSDKError

LIBRARY = ort_ops_library()
pytestmark = pytest.mark.skipif(
    LIBRARY is None, reason="libedgesdk_ort_ops.so is not built: `make cpp` builds it where onnxruntime_c_api.h is "
                            "found (runtime/cpp/CMakeLists.txt); ctest runs these tests with EDGESDK_ORT_OPS_LIB set")
ALL_PATHS = ("scalar", "avx2", "avx512", "neon")
THRESHOLD = 2.0 ** -100  # s(x) = clamp(x * 2^100, -1, 1) is exactly +-1 from here on


def runnable_paths() -> list[str]:
    assert LIBRARY is not None
    paths = []
    saved = os.environ.get(ISA_ENV)
    try:
        for isa in ALL_PATHS:
            os.environ[ISA_ENV] = isa
            try:
                assert binary_isa_name(LIBRARY) == isa
                paths.append(isa)
            except EdgeSDKError:
                pass
    finally:
        if saved is None:
            os.environ.pop(ISA_ENV, None)
        else:
            os.environ[ISA_ENV] = saved
    return paths


@pytest.fixture
def forced_isa() -> Iterator[None]:
    saved = os.environ.get(ISA_ENV)
    yield
    if saved is None:
        os.environ.pop(ISA_ENV, None)
    else:
        os.environ[ISA_ENV] = saved


def binary_conv_model(weights_packed: np.ndarray, in_channels: int, out_channels: int, kernel: tuple[int, int],
                      strides: tuple[int, int], pads: tuple[int, int, int, int], **extra: object) -> bytes:
    """A one-node model: Y = BinaryConv2d(X, W_packed) with W_packed an initializer."""
    attributes: dict[str, object] = {"in_channels": in_channels, "out_channels": out_channels,
                                     "kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads)}
    attributes.update(extra)
    attributes = {k: v for k, v in attributes.items() if v is not None}
    node = helper.make_node(BINARY_CONV, ["X", "W_packed"], ["Y"], domain=DOMAIN, **attributes)
    graph = helper.make_graph(
        [node], "binary_conv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", in_channels, "H", "W"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", out_channels, "OH", "OW"])],
        initializer=[numpy_helper.from_array(weights_packed, "W_packed")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    return model.SerializeToString()


def session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.register_custom_ops_library(str(LIBRARY))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def activations(shape: tuple[int, ...], generator: np.random.Generator) -> np.ndarray:
    """Normal values with exact zeros (both signs), +-2^-100 and +-1e-30 mixed in: every s(x) is -1, 0 or +1."""
    x = generator.standard_normal(shape).astype(np.float32)
    special = np.array([0.0, -0.0, THRESHOLD, -THRESHOLD, 1e-30, -1e-30], dtype=np.float32)
    where = generator.random(shape) < 0.3
    x[where] = generator.choice(special, size=int(where.sum()))
    return x


def reference(x: np.ndarray, weights: np.ndarray, stride: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    bits = torch.where(torch.from_numpy(weights) >= 0, 1.0, -1.0)
    signs = F.pad(delegable_sign(torch.from_numpy(x)), (pads[1], pads[3], pads[0], pads[2]))  # zero padding
    return F.conv2d(signs, bits, None, stride).numpy()


CASES = [  # in_channels, out_channels, kernel, stride, pads, batch, height, width
    (16, 8, 3, 1, (1, 1, 1, 1), 2, 7, 5),
    (24, 13, 3, 2, (1, 1, 1, 1), 1, 9, 11),
    (32, 16, 3, 1, (1, 1, 1, 1), 3, 6, 6),
    (70, 9, 3, 2, (1, 1, 1, 1), 2, 8, 7),
    (64, 64, 3, 1, (1, 1, 1, 1), 1, 8, 8),
    (128, 24, 3, 2, (1, 1, 1, 1), 2, 5, 9),
    (40, 7, 5, 1, (2, 1, 0, 2), 1, 6, 7),
    (3, 5, 1, 1, (0, 0, 0, 0), 2, 3, 4),
]


def test_the_op_equals_conv2d_of_delegable_sign_exactly_on_every_path(forced_isa: None) -> None:
    generator = np.random.default_rng(26)
    paths = runnable_paths()
    assert "scalar" in paths
    print("instruction paths run:", paths)
    for in_channels, out_channels, kernel, stride, pads, batch, height, width in CASES:
        weights = generator.standard_normal((out_channels, in_channels, kernel, kernel)).astype(np.float32)
        weights.flat[0] = 0.0  # sign(0) is +1 for weights
        x = activations((batch, in_channels, height, width), generator)
        expected = reference(x, weights, stride, pads)
        model = binary_conv_model(pack_binary_weights(weights), in_channels, out_channels, (kernel, kernel),
                                  (stride, stride), pads)
        run = session(model)
        for isa in paths:
            os.environ[ISA_ENV] = isa
            (y,) = run.run(None, {"X": x})
            assert y.dtype == np.float32 and y.shape == expected.shape, (isa, y.shape, expected.shape)
            np.testing.assert_array_equal(y, expected, err_msg=f"{isa}, case C={in_channels} stride={stride}")


def test_values_below_two_to_minus_100_count_as_zero() -> None:
    """Where the float graph's s(x) is a fraction (0 < |x| < 2^-100) the kernel counts 0: the one documented
    difference, smaller than 1 per such value."""
    weights = np.ones((1, 4, 1, 1), dtype=np.float32)
    x = np.array([1e-35, 3.0, -5.0, 2.0 ** -100], dtype=np.float32).reshape(1, 4, 1, 1)
    (y,) = session(binary_conv_model(pack_binary_weights(weights), 4, 1, (1, 1), (1, 1), (0, 0, 0, 0))).run(
        None, {"X": x})
    assert float(y.reshape(-1)[0]) == 1.0  # 0 + 1 - 1 + 1
    float_graph = float(reference(x, weights, 1, (0, 0, 0, 0)).reshape(-1)[0])
    assert float_graph != 1.0 and abs(float_graph - 1.0) < 1.0  # 1 + 1e-35 * 2^100


def test_the_packed_weights_are_one_bit_each_and_the_model_is_valid() -> None:
    weights = np.random.default_rng(0).standard_normal((64, 128, 3, 3)).astype(np.float32)
    packed = pack_binary_weights(weights)
    # the kernel's layout: (blocks of 8 outputs, kh, kw, words of 64 inputs, 8 lanes, 8 bytes), no padding here
    assert packed.dtype == np.uint8 and packed.shape == (8, 3, 3, 2, 8, 8) and packed.nbytes * 8 == weights.size
    model = onnx.load_from_string(binary_conv_model(packed, 128, 64, (3, 3), (1, 1), (1, 1, 1, 1)))
    onnx.checker.check_model(model)


def kernel_weight_bytes(counter: str = "copied") -> int:
    """What the library's live kernels hold beside their initializers: "copied" W_packed bytes
    (edgesdk_ort_copied_weight_bytes) or "row_packed" words (edgesdk_ort_row_packed_weight_bytes)."""
    import ctypes

    lib = ctypes.CDLL(str(LIBRARY))
    function = getattr(lib, f"edgesdk_ort_{counter}_weight_bytes")
    function.restype = ctypes.c_int64
    function.argtypes = []
    return int(function())


def test_a_layer_whose_kernel_row_fits_a_word_keeps_its_row_packed_words_once() -> None:
    """16 channels at 3x3 (48 bits a kernel row): the kernel derives one word per kernel row, block and lane, once per
    kernel (not per run), and frees them with the session; 24 channels (72 bits) keep only W_packed."""
    import gc

    generator = np.random.default_rng(8)
    gc.collect()
    before = kernel_weight_bytes("row_packed")
    for in_channels, out_channels, row_packed in ((16, 13, True), (24, 13, False)):
        weights = generator.standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32)
        x = activations((2, in_channels, 6, 5), generator)
        run = session(binary_conv_model(pack_binary_weights(weights), in_channels, out_channels, (3, 3), (1, 1),
                                        (1, 1, 1, 1)))
        for _ in range(3):
            np.testing.assert_array_equal(run.run(None, {"X": x})[0], reference(x, weights, 1, (1, 1, 1, 1)))
        held = kernel_weight_bytes("row_packed") - before
        assert held == (2 * 3 * 8 * 8 if row_packed else 0), (in_channels, held)  # 2 blocks x 3 rows x 8 lanes
        del run
        gc.collect()
        assert kernel_weight_bytes("row_packed") == before


def test_the_op_runs_on_its_initializer_in_place_and_ignores_padding_bits() -> None:
    """No copy of W_packed: the kernel views the initializer's bytes (ONNX Runtime aligns them). Bits past
    in_channels and lanes past out_channels are accepted and change nothing: the activations' nonzero plane is 0
    past in_channels, and lanes past out_channels are never stored."""
    generator = np.random.default_rng(7)
    in_channels, out_channels = 70, 13  # 2 words (58 unused bits in the second), 2 blocks (3 unused lanes)
    weights = generator.standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32)
    x = activations((2, in_channels, 6, 5), generator)
    clean = pack_binary_weights(weights)
    assert clean.shape == packed_weights_shape(out_channels, in_channels, 3, 3) == (2, 3, 3, 2, 8, 8)
    dirty = clean.copy()
    words = dirty.view("<u8")[..., 0]  # (blocks, kh, kw, words, lanes)
    words[:, :, :, 1, :] |= np.uint64(~((1 << (in_channels - 64)) - 1) & (2**64 - 1))
    words[1, :, :, :, out_channels - 8:] = np.uint64(2**64 - 1)
    expected = reference(x, weights, 1, (1, 1, 1, 1))
    runs = [session(binary_conv_model(packed, in_channels, out_channels, (3, 3), (1, 1), (1, 1, 1, 1)))
            for packed in (clean, dirty)]
    for run in runs:
        (y,) = run.run(None, {"X": x})
        np.testing.assert_array_equal(y, expected)
    assert kernel_weight_bytes("copied") == 0


GOOD = (1, 3, 3, 1, 8, 8)  # W_packed of in_channels 16, out_channels 8, 3x3
MALFORMED = [  # what is wrong, W_packed shape, node attributes, X shape
    ("W_packed has the wrong input-channel words", (1, 3, 3, 2, 8, 8), {}, (1, 16, 5, 5)),
    ("W_packed has the wrong kernel size", (1, 2, 3, 1, 8, 8), {}, (1, 16, 5, 5)),
    ("W_packed has too few output blocks", GOOD, {"out_channels": 9}, (1, 16, 5, 5)),
    ("W_packed has half the bytes of a word", (1, 3, 3, 1, 8, 4), {}, (1, 16, 5, 5)),
    ("W_packed is the old packbits format", (8, 3, 3, 2), {}, (1, 16, 5, 5)),
    ("X has other channels than in_channels", GOOD, {}, (1, 24, 5, 5)),
    ("in_channels is missing", GOOD, {"in_channels": None}, (1, 16, 5, 5)),
    ("out_channels is missing", GOOD, {"out_channels": None}, (1, 16, 5, 5)),
    ("out_channels is zero", GOOD, {"out_channels": 0}, (1, 16, 5, 5)),
    ("kernel_shape is missing", GOOD, {"kernel_shape": None}, (1, 16, 5, 5)),
    ("pads are negative", GOOD, {"pads": [-1, 1, 1, 1]}, (1, 16, 5, 5)),
    ("pads are as large as the kernel", GOOD, {"pads": [3, 3, 3, 3]}, (1, 16, 5, 5)),
    ("pads have 2 values", GOOD, {"pads": [1, 1]}, (1, 16, 5, 5)),
    ("strides are zero", GOOD, {"strides": [0, 1]}, (1, 16, 5, 5)),
    ("kernel_shape has 1 value", GOOD, {"kernel_shape": [3]}, (1, 16, 5, 5)),
    ("in_channels is zero", GOOD, {"in_channels": 0}, (1, 0, 5, 5)),
    ("X is smaller than the kernel", GOOD, {"pads": [0, 0, 0, 0]}, (1, 16, 2, 2)),
    ("X has rank 3", GOOD, {}, (16, 5, 5)),
]


@pytest.mark.parametrize(("what", "w_shape", "attributes", "x_shape"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_node_is_an_onnxruntime_error(what: str, w_shape: tuple[int, ...], attributes: dict[str, object],
                                                 x_shape: tuple[int, ...]) -> None:
    packed = np.zeros(w_shape, dtype=np.uint8)
    base: dict[str, object] = {"in_channels": 16, "out_channels": 8, "kernel_shape": [3, 3], "strides": [1, 1],
                               "pads": [1, 1, 1, 1]}
    base.update(attributes)
    node_attributes = {k: v for k, v in base.items() if v is not None}
    node = helper.make_node(BINARY_CONV, ["X", "W_packed"], ["Y"], domain=DOMAIN, **node_attributes)
    graph = helper.make_graph([node], "malformed", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(packed, "W_packed")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    x = np.ones(x_shape, dtype=np.float32)
    with pytest.raises(Exception, match="BinaryConv2d") as raised:  # noqa: PT011 - ORT's own exception classes
        session(model.SerializeToString()).run(None, {"X": x})
    assert raised.type.__module__.startswith("onnxruntime"), raised.type


def test_an_unrunnable_path_is_refused(forced_isa: None) -> None:
    assert LIBRARY is not None
    os.environ[ISA_ENV] = "sse9"
    with pytest.raises(EdgeSDKError, match="EDGESDK_BINARY_ISA"):
        binary_isa_name(LIBRARY)
    x = np.ones((1, 8, 3, 3), dtype=np.float32)
    run = session(binary_conv_model(np.zeros((1, 3, 3, 1, 8, 8), np.uint8), 8, 8, (3, 3), (1, 1), (1, 1, 1, 1)))
    with pytest.raises(Exception, match="EDGESDK_BINARY_ISA"):  # noqa: PT011
        run.run(None, {"X": x})


def epilogue_model(packed: np.ndarray, channels: int, out_channels: int, scale: np.ndarray | None,
                   shift: np.ndarray | None, relu: bool, residual: bool, fused: bool) -> bytes:
    """Y from X (and R, the residual, where asked): the binary convolution followed by ReLU, Mul(scale), Add(shift),
    Add(R), either as those separate ONNX nodes or fused into the BinaryConv2d node (its optional inputs)."""
    attributes = {"in_channels": channels, "out_channels": out_channels, "kernel_shape": [3, 3], "strides": [1, 1],
                  "pads": [1, 1, 1, 1]}
    initializers = [numpy_helper.from_array(packed, "W_packed")]
    for name, value in (("scale", scale), ("shift", shift)):
        if value is not None:
            initializers.append(numpy_helper.from_array(value, name))
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", channels, "H", "W"])]
    if residual:
        inputs.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, ["N", out_channels, "H", "W"]))
    if fused:
        names = ["X", "W_packed", "scale" if scale is not None else "", "shift" if shift is not None else "",
                 "R" if residual else ""]
        while names[-1] == "":
            names.pop()
        nodes = [helper.make_node(BINARY_CONV, names, ["Y"], domain=DOMAIN, **attributes,
                                  **({"activation": "relu"} if relu else {}))]
    else:
        nodes, value = [helper.make_node(BINARY_CONV, ["X", "W_packed"], ["conv"], domain=DOMAIN, **attributes)], "conv"
        for op, operand, wanted in (("Relu", None, relu), ("Mul", "scale", scale is not None),
                                    ("Add", "shift", shift is not None), ("Add", "R", residual)):
            if wanted:
                nodes.append(helper.make_node(op, [value] + ([operand] if operand else []), [f"{value}_{op}"]))
                value = f"{value}_{op}"
        nodes.append(helper.make_node("Identity", [value], ["Y"]))
    output = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", out_channels, "H", "W"])
    graph = helper.make_graph(nodes, "epilogue", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


EPILOGUES = [  # relu, scale, shift, residual
    (True, True, True, True),   # a basic block's second convolution: ReLU, batch norm, residual
    (True, True, True, False),  # its first
    (False, True, False, False),
    (False, False, False, True),
    (True, False, False, False),
]


@pytest.mark.parametrize(("relu", "scaled", "shifted", "residual"), EPILOGUES)
def test_the_fused_epilogue_equals_the_separate_float_nodes_bit_for_bit(forced_isa: None, relu: bool, scaled: bool,
                                                                        shifted: bool, residual: bool) -> None:
    """ReLU, per-channel scale and shift and a residual add fused into the op (export/binary_onnx.py fuses them out of
    a BNN's graph) give what ONNX Runtime's own Relu, Mul and Add nodes give, on every path: each step is rounded on
    its own, in the nodes' order."""
    generator = np.random.default_rng(27)
    channels, out_channels = 24, 13
    weights = generator.standard_normal((out_channels, channels, 3, 3)).astype(np.float32)
    scale = generator.standard_normal((out_channels, 1, 1)).astype(np.float32) if scaled else None
    shift = (generator.standard_normal((1, out_channels, 1, 1)).astype(np.float32) * 3) if shifted else None
    feeds = {"X": activations((2, channels, 7, 9), generator)}
    if residual:
        feeds["R"] = generator.standard_normal((2, out_channels, 7, 9)).astype(np.float32)
    packed = pack_binary_weights(weights)
    fused, separate = (session(epilogue_model(packed, channels, out_channels, scale, shift, relu, residual, f))
                       for f in (True, False))
    for isa in runnable_paths():
        os.environ[ISA_ENV] = isa
        (want,) = separate.run(None, feeds)
        (got,) = fused.run(None, feeds)
        assert got.shape == want.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), isa  # bit for bit, signed zeros too
        if relu and not (scaled or shifted or residual):
            assert (got >= 0).all() and (got == 0).any()


@pytest.mark.parametrize("what", ["activation is not relu or none", "scale has another count than out_channels",
                                  "residual has another shape than Y",
                                  "residual_stride 2 with a residual of Y's size",
                                  "residual_channel_offset at out_channels"])
def test_a_malformed_epilogue_is_an_onnxruntime_error(what: str) -> None:
    generator = np.random.default_rng(28)
    packed = pack_binary_weights(generator.standard_normal((8, 16, 3, 3)).astype(np.float32))
    scale = np.ones((7 if "scale" in what else 8, 1, 1), np.float32)
    model = onnx.load_from_string(epilogue_model(packed, 16, 8, scale, None, True, True, fused=True))
    node = model.graph.node[0]
    if "activation" in what:
        for attribute in node.attribute:
            if attribute.name == "activation":
                attribute.s = b"gelu"
    if what.startswith("residual_stride"):
        node.attribute.append(helper.make_attribute("residual_stride", 2))
    if what.startswith("residual_channel_offset"):
        node.attribute.append(helper.make_attribute("residual_channel_offset", 8))
    feeds = {"X": np.ones((1, 16, 5, 5), np.float32),
             "R": np.ones((1, 8, 5, 4) if what.startswith("residual has") else (1, 8, 5, 5), np.float32)}
    with pytest.raises(Exception, match="BinaryConv2d") as raised:  # noqa: PT011 - ORT's own exception classes
        session(model.SerializeToString()).run(None, feeds)
    assert raised.type.__module__.startswith("onnxruntime"), raised.type
    assert what.split()[0] in str(raised.value), raised.value
