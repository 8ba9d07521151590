"""Lowering a user's model to ExecuTorch: norms, attention, squeezes and int scalars end up inside XNNPACK
(export/xnnpack_form.py), one delegate, same function. Micro models of the pieces torchvision and timm use."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgesdk.export.executorch import lower_to_executorch
from edgesdk.export.xnnpack_form import xnnpack_form


class TinyViT(nn.Module):
    """The shape of timm's ViT blocks: a class token, LayerNorm, qkv projection split with unbind, fused SDPA,
    GELU MLP, and the class token's row picked with select."""

    def __init__(self, width: int = 16, heads: int = 2, tokens: int = 6) -> None:
        super().__init__()
        self.heads = heads
        self.cls = nn.Parameter(torch.randn(1, 1, width))
        self.embed = nn.Linear(8, width)
        self.norm1, self.norm2, self.norm_out = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.head = nn.Linear(width, 5)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        h = torch.cat([self.cls.expand(batch, -1, -1), self.embed(x)], dim=1)
        width = h.shape[-1]
        qkv = self.qkv(self.norm1(h)).reshape(batch, tokens + 1, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens + 1, width)
        h = h + self.proj(attended)
        h = h + self.mlp(self.norm2(h))
        return self.head(self.norm_out(h)[:, 0])


class SqueezeExcite(nn.Module):
    """mobilenet_v3's pieces: hardsigmoid (x + 3 with an int 3), an int scalar of our own, GroupNorm, squeeze."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Conv2d(8, 8, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.conv(x))
        scale = F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(h, 1)))
        return ((h * scale + 1) / 2).mean(dim=(2, 3), keepdim=True).squeeze(-1).squeeze(-1)


def run_program(buffer: bytes, inputs: tuple[Tensor, ...]) -> Tensor:
    from executorch.runtime import Runtime

    return Runtime.get().load_program(buffer).load_method("forward").execute(list(inputs))[0]


def sqnr_db(reference: Tensor, got: Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (got - reference).pow(2).sum().clamp_min(1e-30)))


@pytest.mark.parametrize("module, example", [(TinyViT(), (torch.randn(1, 5, 8),)),
                                             (SqueezeExcite(), (torch.randn(1, 3, 8, 8),))],
                         ids=["vit-block", "squeeze-excite"])
def test_user_model_pieces_lower_to_one_xnnpack_delegate(module: nn.Module, example: tuple[Tensor, ...]):
    torch.manual_seed(0)
    module.eval()
    with torch.no_grad():
        program = torch.export.export(module, example)
        lowered = lower_to_executorch(program, "model")
        report = lowered.delegation
        assert report.delegated_share == 1.0 and report.segments == 1, report.to_dict()
        fresh = tuple(torch.randn_like(t) for t in example)
        assert sqnr_db(module(*fresh), run_program(lowered.buffer, fresh)) > 90


def test_rewrites_compute_the_same_function_and_leave_the_rest():
    torch.manual_seed(0)
    module = TinyViT().eval()
    example = (torch.randn(2, 5, 8),)  # batch 2: the class token's expand is a real broadcast, kept as it was
    with torch.no_grad():
        program = torch.export.export(module, example)
        rewritten = xnnpack_form(program)
        ops = {str(n.target) for n in rewritten.graph.nodes if n.op == "call_function"}
        assert not any(name in op for op in ops for name in ("layer_norm", "scaled_dot_product", "unbind", "select"))
        assert "aten.expand.default" in ops
        assert sqnr_db(module(*example), rewritten.module()(*example)) > 100


def test_masked_attention_keeps_its_meaning():
    """A boolean mask can empty a row, which only the default ("safe") softmax zeroes: that attention keeps the
    default decomposition; a float mask is added to the scores."""

    class Masked(nn.Module):
        def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
            boolean = F.scaled_dot_product_attention(q, k, v, attn_mask=mask > 0)
            additive = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return boolean + additive + causal

    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    mask = torch.randn(4, 4)
    mask[0] = -1.0  # row 0 entirely masked in the boolean form
    with torch.no_grad():
        program = xnnpack_form(torch.export.export(Masked(), (q, k, v, mask)))
        remaining = [n for n in program.graph.nodes if "scaled_dot_product" in str(n.target)]
        assert len(remaining) == 2  # boolean and causal: left to the default decomposition
        expected, got = Masked()(q, k, v, mask), program.module()(q, k, v, mask)
    assert torch.allclose(expected, got, atol=1e-5, equal_nan=True)


def test_int_scalar_arithmetic_is_folded_into_the_delegate():
    class IntScalars(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (x + 1) / 2 - 3 * x

    example = (torch.randn(1, 8),)
    with torch.no_grad():
        lowered = lower_to_executorch(torch.export.export(IntScalars(), example), "model")
    assert lowered.delegation.not_delegated == {}, lowered.delegation.to_dict()
    assert torch.allclose(run_program(lowered.buffer, example), IntScalars()(*example), atol=1e-6)


def test_quantized_attention_is_one_delegate():
    """w8a8 quantizes the linear layers; the norm and the attention between them stay float, inside the delegate."""
    from edgesdk.quant.configs import W8A8Config

    class NormAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.qkv = nn.LayerNorm(8), nn.Linear(8, 24)

        def forward(self, x: Tensor) -> Tensor:
            q, k, v = self.qkv(self.norm(x)).reshape(1, 5, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
            return F.scaled_dot_product_attention(q, k, v)

    torch.manual_seed(0)
    module = NormAttention().eval()
    example = (torch.randn(1, 5, 8),)
    calibration = [(torch.randn(1, 5, 8),) for _ in range(4)]
    program = torch.export.export(module, example)
    quantized = W8A8Config().quantize_program(program, calibration, example)
    report = lower_to_executorch(quantized, "model").delegation
    assert report.delegated_share == 1.0 and report.segments == 1, report.to_dict()


class MobileBlock(nn.Module):
    """The int8-hostile pieces of mobilenet_v3 / efficientnet: ReLU6, hardswish and SiLU after convolutions, a
    depthwise convolution, squeeze-excitation (mean, sigmoid gate, product with the feature map), a residual add."""

    def __init__(self, width: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU6())
        self.expand = nn.Conv2d(width, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.squeeze, self.excite = nn.Conv2d(hidden, 4, 1), nn.Conv2d(4, hidden, 1)
        self.project = nn.Conv2d(hidden, width, 1)
        self.head = nn.Conv2d(width, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stem(x)
        h = F.silu(self.depthwise(F.hardswish(self.expand(y))))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(h.mean((2, 3), keepdim=True)))))
        return self.head(self.project(h * gate) + y)


def _xnnpack_nodes(monkeypatch: pytest.MonkeyPatch, program: torch.export.ExportedProgram) -> tuple[list[str], bytes]:
    """The XNNPACK graph the delegate was serialized from: one "Kind datatype" per node ("Convert from->to")."""
    import executorch.backends.xnnpack.xnnpack_preprocess as preprocess
    from executorch.backends.xnnpack.serialization import xnnpack_graph_schema as schema

    graphs = []
    serialize = preprocess.serialize_xnnpack_binary
    monkeypatch.setattr(preprocess, "serialize_xnnpack_binary", lambda g, *a: graphs.append(g) or serialize(g, *a))
    buffer = lower_to_executorch(program, "model").buffer

    def dtype(graph: schema.XNNGraph, value_id: int) -> str:
        value = graph.xvalues[value_id].xvalue_union
        value = getattr(value, "tensor_value", value)
        return schema.XNNDatatype(value.datatype).name.removeprefix("xnn_datatype_")

    nodes = []
    for graph in graphs:
        for node in graph.xnodes:
            op = node.xnode_union
            kind = type(op).__name__.removeprefix("XNN")
            source = getattr(op, "input_id", getattr(op, "input1_id", None))
            nodes.append(f"Convert {dtype(graph, source)}->{dtype(graph, op.output_id)}" if kind == "Convert"
                         else f"{kind} {dtype(graph, op.output_id)}")
    return nodes, buffer


def test_int8_elementwise_keeps_activations_and_squeeze_excitation_int8_inside_xnnpack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantizing only the convolutions left every activation, product and add in fp32 between converts (issue 24:
    efficientnet_b0 int8 no faster than fp32); with int8_elementwise the whole block is int8, no convert inside,
    and the runtime computes the same function."""
    from executorch.extension.pybindings import portable_lib

    from edgesdk.quant.configs import W8A8Config

    torch.manual_seed(0)
    module = MobileBlock().eval()
    example = (torch.randn(2, 3, 16, 16),)
    calibration = [(torch.randn(2, 3, 16, 16),) for _ in range(4)]
    program = torch.export.export(module, example)

    # (with W8A8Config() as the families use it: 3 + 3 converts, SiLU, pooling, gate and product in fp32)
    recipe = W8A8Config(int8_elementwise=True)
    nodes, buffer = _xnnpack_nodes(monkeypatch, recipe.quantize_program(program, calibration, example))
    # the only converts: the fp32 input quantized and the output dequantized
    assert sorted(n for n in nodes if n.startswith("Convert")) == ["Convert fp32->qint8", "Convert qint8->fp32"], nodes
    for kind in ("Hardswish", "Sigmoid", "Multiply", "Add", "GlobalAvgPooling2d", "DepthwiseConv2d"):
        assert f"{kind} qint8" in nodes, (kind, nodes)
    assert "Clamp qint8" not in nodes, nodes  # ReLU6 fused into the stem convolution's output range
    assert not [n for n in nodes if n.endswith("fp32") and not n.startswith("Convert")], nodes

    inputs = (torch.randn(2, 3, 16, 16),)
    expected = module(*inputs)
    actual = portable_lib._load_for_executorch_from_buffer(buffer).forward(inputs)[0]
    sqnr = 10 * torch.log10(expected.pow(2).mean() / (actual - expected).pow(2).mean())
    assert sqnr > 20.0, float(sqnr)
