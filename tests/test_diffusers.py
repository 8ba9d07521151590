"""Stable Diffusion from a local diffusers folder: a tiny random SD pipeline (built from configs, no download) is
exported to ExecuTorch and ONNX, sampled, and personalized with 20 zeroth-order steps, through the same runtime as
tiny-sd. The ONNX files go through the external-data path (forced by a low threshold) that >2 GB models take."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusers extra is not installed (pip install 'edgesdk[diffusers]')")

from edgesdk.data.concepts import write_concept  # noqa: E402
from edgesdk.exporting import export_diffusers  # noqa: E402
from edgesdk.runtime import EdgeSDKError  # noqa: E402
from edgesdk.runtime.bundle import Bundle  # noqa: E402
from edgesdk.runtime.personalize import load_tokens, personalize  # noqa: E402
from edgesdk.runtime.pipeline import TextToImage  # noqa: E402
from edgesdk.runtime.zo import ZOConfig  # noqa: E402
from edgesdk.zoo.diffusers_sd import load_diffusers_sd, schedule_from_config, write_random_pipeline  # noqa: E402
from tests.conftest import run_cli, run_cli_in_process  # noqa: E402


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_pipeline(tmp_path_factory.mktemp("diffusers") / "tiny-sd15", "tiny", seed=0)


@pytest.fixture(scope="module")
def sd_bundle(shared: Callable[[str], Path]) -> Path:
    # the same pipeline as sd_folder (write_random_pipeline "tiny", seed 0) imported by export_diffusers on both
    # backends, every ONNX file through the >2 GB route (graph + NAME.onnx.data); shared with ctest
    return shared("stable-diffusion")


# first in the file: the longest test (xdist hands a worker its next file when two tests of this one are left)
def test_w8_through_external_data_runs_zo_steps(sd_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The whole pipeline at w8 on ONNX Runtime, every file through external data, personalized. ExecuTorch's w8
    lowering is checked on the UNet's attention blocks (next test): lowering the whole UNet a second time (the shared
    bundle lowers it in fp32) would cost minutes of suite time and cover no other code."""
    import edgesdk.quant.onnx_files as onnx_stage

    monkeypatch.setattr(onnx_stage, "EXTERNAL_DATA_BYTES", 0)
    bundle = export_diffusers(sd_folder, tmp_path / "w8.edge", "onnx", quant="w8", log=lambda _m: None)
    info = Bundle.open(bundle).manifest
    assert info["quantization"]["recipe"] == "w8" and info["quantization"]["convolutions_as_linear"]
    assert info["components"]["unet"]["delegation"]["onnx"]["onnx_ops"].get("DynamicQuantizeLinear", 0) > 0
    assert (bundle / (info["components"]["unet"]["files"]["onnx"] + ".data")).exists()
    concept = tmp_path / "concept"
    write_concept("pink-star", concept, count=2)
    result = personalize(bundle, concept, "<w8thing>", "star", tmp_path / "token.safetensors", steps=2,
                         backend="onnx")
    assert np.isfinite(result.final_loss)


def test_w8_attention_blocks_lower_to_executorch(sd_folder: Path, tmp_path: Path):
    """Two of the UNet's transformer blocks reading the same text, at w8 on ExecuTorch: quantized dynamically, the
    key/value projections of the text (a graph input every cross-attention reads) made XNNPACK's partitioner find a
    dependency cycle; they stay fp32 (quant/pt2e.py) and the rest (convolutions as im2col + linear) is int8."""
    from edgesdk.export.capture import ComponentSpec
    from edgesdk.export.pipeline import export_bundle
    from edgesdk.quant.configs import W8Config

    unet = load_diffusers_sd(sd_folder).unet.unet

    class TwoBlocks(torch.nn.Module):  # the first down block's and the last up block's attention: 32 channels
        def __init__(self) -> None:
            super().__init__()
            self.first, self.last = unet.down_blocks[0].attentions[0], unet.up_blocks[1].attentions[-1]

        def forward(self, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            hidden = self.first(hidden, encoder_hidden_states=text, return_dict=False)[0]
            return self.last(hidden, encoder_hidden_states=text, return_dict=False)[0]

    spec = ComponentSpec("blocks", TwoBlocks().eval(), (torch.randn(1, 32, 8, 8), torch.randn(1, 77, 32)),
                         ["hidden", "text"], ["out"])
    path = export_bundle([spec], family="test", model_meta={}, assets={}, targets=["executorch"],
                         output=tmp_path / "blocks.edge", recipe=W8Config(convolutions_as_linear=True),
                         log=lambda _m: None)
    entry = Bundle.open(path).manifest["components"]["blocks"]
    # everything inside XNNPACK but the feed-forward's GEGLU split (a copy; outside in fp32 too)
    outside = entry["delegation"]["executorch"]["not_delegated"]
    assert set(outside) <= {"aten.split_with_sizes_copy.default"}, outside
    # int8 weights but for the text's key/value projections (a fifth of the blocks' weights) and the norms
    assert (path / entry["files"]["executorch"]).stat().st_size < 0.7 * entry["fp32_weight_bytes"]


def test_text_encoder_over_embeddings_equals_clip_on_ids(sd_folder: Path):
    from transformers import CLIPTextModel

    from edgesdk.runtime.clip_tokenizer import ClipTokenizer

    model = load_diffusers_sd(sd_folder)
    tokenizer = ClipTokenizer(model.tokenizer)
    ids = tokenizer.ids("a photo of a blue circle, in the style of a painting")
    reference = CLIPTextModel.from_pretrained(sd_folder / "text_encoder").eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids)[None]).last_hidden_state
        got = model.text_encoder(torch.from_numpy(model.token_embedding[ids])[None])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_v_prediction_becomes_noise_prediction(tmp_path: Path):
    folder = write_random_pipeline(tmp_path / "v", "tiny", seed=1, prediction="v_prediction")
    model = load_diffusers_sd(folder)
    latent, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    timestep = torch.tensor([100.0, 900.0])
    with torch.no_grad():
        v = model.unet.unet(latent, timestep, encoder_hidden_states=text).sample
        eps = model.unet(latent, timestep, text)
    alpha = torch.tensor(model.alphas_cumprod[[100, 900]], dtype=torch.float32).reshape(2, 1, 1, 1)
    torch.testing.assert_close(eps, alpha.sqrt() * v + (1 - alpha).sqrt() * latent)
    assert model.metadata()["prediction"] == "epsilon" and model.schedule["source_prediction"] == "v_prediction"


@pytest.mark.parametrize("piece_bytes", [None, 0, 4 * 64 * 4])
def test_export_attention_computes_what_diffusers_computes(sd_folder: Path, piece_bytes: int | None):
    """Whole (None: the default budget), one head at a time (0: every query row its own piece), and one head in
    query chunks of 4 rows (the tiny UNet's 64-token self-attention): UNet and VAE alike equal AttnProcessor2_0."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    import edgesdk.zoo.diffusers_sd as module

    model = load_diffusers_sd(sd_folder)
    processor = module.ExportAttention() if piece_bytes is None else module.ExportAttention(piece_bytes)
    unet, vae = model.unet.unet, model.vae_encoder.vae
    latent, timestep, text = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 900.0]), torch.randn(2, 77, 32)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    products: list[tuple[int, ...]] = []  # the score shapes of every q k^T
    plain = torch.bmm
    with torch.no_grad():
        unet.set_attn_processor(processor)
        vae.set_attn_processor(processor)
        try:
            torch.bmm = lambda a, b: (products.append(tuple(a.shape[:2]) + (b.shape[-1],)), plain(a, b))[1]
            got_noise, got_latent = model.unet(latent, timestep, text), model.vae_encoder(image)
        finally:
            torch.bmm = plain
        unet.set_attn_processor(AttnProcessor2_0())
        vae.set_attn_processor(AttnProcessor2_0())
        want_noise, want_latent = model.unet(latent, timestep, text), model.vae_encoder(image)
    torch.testing.assert_close(got_noise, want_noise, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_latent, want_latent, rtol=1e-5, atol=1e-5)
    scores = [shape for shape in products if shape[-1] != 8]  # (scores @ v has the head width 8 as last dim)
    if piece_bytes is None:
        assert any(batch_heads > 2 for batch_heads, _, _ in scores)  # heads batched together
    else:
        assert all(batch_heads <= 2 for batch_heads, _, _ in scores)  # one head (of batch 2) at a time
        over = [shape for shape in scores if shape[1] * shape[2] * 4 > max(piece_bytes, shape[2] * 4)]
        assert not over, f"pieces over the {piece_bytes} B budget (one query row is the least): {over}"


def test_attention_pieces_wait_for_one_another():
    """In the exported graph every piece's score product depends on the previous piece's output, so no node order
    (the XNNPACK partitioner's fusion orders a delegate op by op) can hold two pieces' scores at once; the pieces
    still compute plain softmax attention."""
    from edgesdk.zoo.diffusers_sd import attention_in_pieces

    class Attention(torch.nn.Module):
        def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            # 2 heads of width 4, 8 keys: 4 query rows per 128-B piece, 16 queries -> 8 pieces
            return attention_in_pieces(query, key, value, heads=2, scale=0.5, piece_bytes=4 * 8 * 4)

    query, key, value = torch.randn(1, 16, 8), torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    graph = torch.export.export(Attention(), (query, key, value)).graph
    products = [node for node in graph.nodes if node.target == torch.ops.aten.bmm.default]
    scores, outputs = products[0::2], products[1::2]  # each piece: q k^T, then softmax(..) v
    assert len(scores) == 8 and all("softmax" in str(node.args[0].target) for node in outputs)

    def ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
        seen, stack = set(), list(node.all_input_nodes)
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(parent.all_input_nodes)
        return seen

    unordered = [i for i in range(1, 8) if outputs[i - 1] not in ancestors(scores[i])]
    assert not unordered, f"pieces {unordered} do not wait for the piece before them"
    heads = [h.reshape(1, -1, 2, 4).transpose(1, 2) for h in (query, key, value)]
    want = (torch.softmax(heads[0] @ heads[1].transpose(-1, -2) * 0.5, dim=-1) @ heads[2]).transpose(1, 2)
    torch.testing.assert_close(Attention()(query, key, value), want.reshape(1, 16, 8))


ATTENTION_WORDS = ("any", "where", "eq.", "logical_not", "bmm", "softmax", "mul")


def assert_attention_delegated(not_delegated: dict[str, int]) -> None:
    leftovers = {op for op in not_delegated if any(word in op for word in ATTENTION_WORDS)}
    assert not leftovers, f"attention ops left outside XNNPACK: {not_delegated}"
    assert not_delegated.get("aten.expand_copy.default", 0) <= 1, not_delegated  # the timestep's broadcast only


def test_attention_lowers_whole_to_xnnpack(sd_bundle: Path):
    """The exported attention is plain bmm/softmax that XNNPACK takes (SDPA's safe softmax would leave any/where
    ops, and their score tensors, between delegates). Whole heads: the tiny UNet as the import exports it (the
    shared bundle's lowering report, which is what the UNet lowered to)."""
    assert_attention_delegated(Bundle.open(sd_bundle).component("unet").delegation["executorch"]["not_delegated"])


def test_attention_in_pieces_and_convolutions_lower_to_xnnpack(sd_folder: Path):
    """In pieces too (16 KB: the tiny UNet's heads one at a time, its cross-attention heads in query chunks), and a
    convolution whose im2col patches pass the budget stays a convolution. The pieces are lowered in one of the
    UNet's transformer blocks (self- and cross-attention): the whole UNet's lowering, whole heads, is the shared
    bundle's (test_attention_lowers_whole_to_xnnpack)."""
    from edgesdk.export.executorch import lower_to_executorch
    from edgesdk.quant.matmul_form import as_linear_layers
    from edgesdk.zoo.diffusers_sd import ExportAttention

    model = load_diffusers_sd(sd_folder)
    model.unet.unet.set_attn_processor(ExportAttention(16384))

    class TransformerBlock(torch.nn.Module):  # the first down block's attention: 32 channels over the 8x8 latent
        def __init__(self) -> None:
            super().__init__()
            self.block = model.unet.unet.down_blocks[0].attentions[0]

        def forward(self, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            return self.block(hidden, encoder_hidden_states=text, return_dict=False)[0]

    hidden, text = torch.randn(1, 32, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        program = torch.export.export(TransformerBlock(), (hidden, text))
    assert sum("bmm" in str(node.target) for node in program.graph.nodes) > 4  # pieces: more than 2 q k^T + 2 (..) v
    assert_attention_delegated(lower_to_executorch(program, "block").delegation.not_delegated)
    image = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        graph = torch.export.export(model.vae_encoder, (image,)).module()
    # the tiny VAE's 3x3 convolutions at 16x16 (16 channels: 147 KB of patches) and 8x8 (32 ch: 74 KB; stride 2)
    _, counts = as_linear_layers(graph, max_patch_bytes=100_000)
    assert counts["conv"] > 0 and counts["conv_kept"] > 0, counts
    _, everything = as_linear_layers(torch.export.export(model.vae_encoder, (image,)).module())
    assert everything["conv_kept"] == 0 and everything["conv"] == counts["conv"] + counts["conv_kept"]


def test_schedules():
    alphas, meta = schedule_from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    assert len(alphas) == 1000 and meta["schedule"] == "scaled-linear"
    assert abs(alphas[-1] - 0.0047) < 1e-3  # SD-1.5's last alpha-bar
    with pytest.raises(EdgeSDKError, match="prediction_type 'sample'"):
        schedule_from_config({"prediction_type": "sample"})


def test_bundle_has_every_component_on_both_backends_with_external_data(sd_bundle: Path):
    bundle = Bundle.open(sd_bundle)
    assert bundle.family == "stable-diffusion" and bundle.model["image_size"] == 16
    for name in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        files = bundle.component(name).files
        assert set(files) == {"executorch", "onnx"}, files
        assert (sd_bundle / (files["onnx"] + ".data")).exists(), f"{name}: no external data beside the graph"
        parity = bundle.manifest["components"][name]["parity"]
        for target in ("executorch", "onnx"):
            assert min(v["sqnr_db"] for v in parity[target].values()) > 40, (name, target, parity)
    assert "clip_tokenizer" in bundle.manifest["assets"]


@pytest.mark.parametrize("backend", ["onnx", "executorch"])
def test_sample_and_twenty_zo_steps(sd_bundle: Path, backend: str, tmp_path: Path):
    pipe = TextToImage(sd_bundle, backend=backend)
    images = pipe.generate(["a photo of a red star", "a blue circle"], steps=4, seed=0)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    again = TextToImage(sd_bundle, backend=backend).generate(["a photo of a red star"], steps=4, seed=0)
    np.testing.assert_array_equal(again[0], images[0])
    concept = tmp_path / "concept"
    write_concept("pink-star", concept, count=3)
    out = tmp_path / "token.safetensors"
    result = personalize(sd_bundle, concept, "<mything>", "star", out, steps=20, backend=backend,
                         config=ZOConfig(seed=0, checkpoint_every=10), query_batch=1)  # the SD-1.5 memory mode
    assert result.steps == 20 and np.isfinite(result.final_loss)
    token = load_tokens(out)["<mything>"]
    assert token.shape == (1, 32)
    start = pipe.token_table[pipe.tokenizer.index["star"]]
    assert np.abs(token[0] - start).max() > 0, "20 ZO steps left the token where it started"
    learned = pipe.generate(["a photo of <mything>"], steps=4, seed=0, learned={"<mything>": token})
    assert learned.shape == (1, 16, 16, 3)


def test_cli_export_sample_and_bad_folders(sd_folder: Path, sd_bundle: Path, tmp_path: Path):
    done = run_cli("sample", str(sd_bundle), "-p", "a red star", "--steps", "3", "-o", str(tmp_path / "s.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.png").exists()
    for folder, message in [(tmp_path / "nowhere", "is not a folder"), (tmp_path, "missing unet/")]:
        done = run_cli_in_process("export", "--from-diffusers", str(folder), "-o", str(tmp_path / "x.edge"))
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = run_cli_in_process("export", "--from-diffusers", str(sd_folder), "-o", str(tmp_path / "x.edge"),
                              "--quant", "w4")
    assert done.returncode != 0 and "takes --quant fp32 | w8" in done.stderr
    assert not (tmp_path / "x.edge").exists()
