"""Stable Diffusion from a local diffusers folder, as the components an edgesdk text-to-image bundle has.

A SD-1.x / 2.x folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``) becomes the four components tiny-sd exports, with the same inputs and outputs, so the runtime's
sampler and zeroth-order personalizer run it unchanged:

- ``text_encoder``: CLIP's transformer over *input embeddings* (token rows already looked up, position rows added
  inside), so a learned token is a row the runtime writes, never a new vocabulary entry;
- ``unet``: (latent, timestep, text) -> predicted noise. A v-prediction model (SD-2 768) is turned into a noise
  predictor inside the graph (eps = sqrt(a) v + sqrt(1 - a) x), so the runtime knows one convention;
- ``vae_decoder`` / ``vae_encoder``: the latent scaling factor folded in, as tiny-sd's.

diffusers and transformers are needed here (export side: ``pip install edgesdk[diffusers]``), never in the runtime.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesdk.runtime.errors import EdgeSDKError

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def require_diffusers() -> None:
    from edgesdk.zoo.torchvision_ops import make_torchvision_importable

    make_torchvision_importable()  # transformers imports it when installed
    try:
        import diffusers
        import transformers
    except ImportError as exc:
        raise EdgeSDKError(f"--from-diffusers needs the optional extra: pip install 'edgesdk[diffusers]' "
                           f"({exc.name} is missing)") from None
    # their per-file progress bars and notes would drown the export's own log
    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def check_folder(path: Path) -> None:
    """A clear refusal for anything that is not a SD-1.x/2.x diffusers folder."""
    if not path.is_dir():
        raise EdgeSDKError(f"{path} is not a folder (give the diffusers pipeline folder, the one with "
                           "model_index.json)")
    missing = [p for p in PARTS if not (path / p).is_dir()]
    if missing:
        raise EdgeSDKError(f"{path} is not a Stable Diffusion diffusers folder: missing "
                           f"{', '.join(m + '/' for m in missing)}")
    index = path / "model_index.json"
    if index.exists():
        try:
            kind = json.loads(index.read_text()).get("_class_name", "")
        except (json.JSONDecodeError, AttributeError):
            raise EdgeSDKError(f"{index} is not valid JSON") from None
        if kind and kind not in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"):
            raise EdgeSDKError(f"{path} holds a {kind}; edgesdk imports SD-1.x/2.x StableDiffusionPipeline folders")


# ------------------------------------------------------------------------------------------ the components


class ClipTextOverEmbeddings(nn.Module):
    """CLIP's text transformer from input embeddings (B, L, D): + position rows, causal pre-LN blocks, final LN.

    Written over the transformers module's own weights (plain ops, one fixed causal mask), so the export does not
    depend on which attention implementation a transformers release dispatches to."""

    def __init__(self, text_model: nn.Module, length: int) -> None:
        super().__init__()
        cfg = text_model.config
        self.heads = int(cfg.num_attention_heads)
        self.activation = str(cfg.hidden_act)
        core = getattr(text_model, "text_model", text_model)  # transformers < 5 nests the transformer one deeper
        self.position = nn.Parameter(core.embeddings.position_embedding.weight[:length].detach().clone())
        self.layers = core.encoder.layers
        self.final_layer_norm = core.final_layer_norm
        self.register_buffer("causal", torch.full((length, length), -torch.inf).triu(1), persistent=False)

    def _act(self, x: Tensor) -> Tensor:
        if self.activation == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        if self.activation in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            return F.gelu(x, approximate="none" if self.activation == "gelu" else "tanh")
        raise EdgeSDKError(f"CLIP text encoder activation {self.activation!r} is not supported")

    def forward(self, input_embeddings: Tensor) -> Tensor:
        h = input_embeddings + self.position
        batch, length, width = h.shape
        for layer in self.layers:
            attn = layer.self_attn
            x = layer.layer_norm1(h)
            q, k, v = (proj(x).reshape(batch, length, self.heads, -1).transpose(1, 2)
                       for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.causal)
            h = h + attn.out_proj(x.transpose(1, 2).reshape(batch, length, width))
            x = layer.layer_norm2(h)
            h = h + layer.mlp.fc2(self._act(layer.mlp.fc1(x)))
        return self.final_layer_norm(h)


class NoisePredictor(nn.Module):
    """(latent, timestep, text) -> predicted noise; v-prediction converted in the graph."""

    def __init__(self, unet: nn.Module, alphas_cumprod: np.ndarray, prediction: str) -> None:
        super().__init__()
        self.unet, self.v_prediction = unet, prediction == "v_prediction"
        self.register_buffer("alphas_cumprod", torch.tensor(alphas_cumprod, dtype=torch.float32), persistent=False)

    def forward(self, latent: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
        out = self.unet(latent, timestep, encoder_hidden_states=text, return_dict=False)[0]
        if not self.v_prediction:
            return out
        alpha = self.alphas_cumprod[timestep.round().long()].reshape(-1, 1, 1, 1)
        return alpha.sqrt() * out + (1 - alpha).sqrt() * latent


# No temporary of one attention or one im2col convolution may pass this many bytes per batch row. SD-1.5 at 512 px:
# the first level's self-attention scores are 8 heads x 4096 x 4096 x 4 B = 512 MB, twice that with the softmax,
# more than the int8 UNet's weights; one head is 64 MB. At 256 px (32 MB) attention runs whole.
PIECE_BYTES = 64 * 2**20


def attention_in_pieces(query: Tensor, key: Tensor, value: Tensor, heads: int, scale: float,
                        piece_bytes: int = PIECE_BYTES) -> Tensor:
    """softmax(q k^T scale) v over (B, T, heads*width) projections, as 3-D batched matrix products.

    The form is chosen for ExecuTorch. ``F.scaled_dot_product_attention`` decomposes into a "safe" softmax (masking
    rows that are all -inf) whose any/where/eq ops XNNPACK does not take, and 4-D matmuls become expand copies it
    does not take either: the graph splits there, every head's scores become tensors between delegates, and the
    partitioner merges the heads' independent products into one delegate whose outputs are all heads' scores at
    once (1.2 GB planned for one 512-px attention). As bmm + softmax, the whole attention is one delegate and
    XNNPACK reuses each piece's memory for the next (measured: 1.76 GB -> 0.12 GB for that attention).

    Scores larger than ``piece_bytes`` per batch row are computed one head at a time (and a head in query chunks
    if it alone is larger); the graph unrolls the loop, the shapes being static. Each piece's query scale reads the
    previous piece's output (times 0): without that data dependency, the partitioner's fusion orders a delegate's
    nodes op by op, all pieces' score products first, so all their scores live at once (measured in SD-1.5's 512-px
    transformer block: 512 MB of XNNPACK workspace whatever the piece size). With it, any order runs the pieces one
    after another and each reuses the last one's memory. (A NaN or inf in a piece's output would spread through the
    0; it is in the attention's output anyway.)"""
    batch, queries, inner = query.shape
    keys, width = key.shape[1], inner // heads
    if heads * queries * keys * 4 <= piece_bytes:
        q, k, v = (x.reshape(batch, -1, heads, width).transpose(1, 2).reshape(-1, x.shape[1], width)
                   for x in (query, key, value))
        out = torch.bmm(torch.softmax(torch.bmm(q * scale, k.transpose(1, 2)), dim=-1), v)
        return out.reshape(batch, heads, queries, width).transpose(1, 2).reshape(batch, queries, inner)
    rows = max(1, piece_bytes // (keys * 4))  # query rows per piece of one head
    pieces: list[Tensor] = []
    last: Tensor | None = None  # the previous piece's output, which the next piece waits for
    for h in range(heads):
        columns = slice(h * width, (h + 1) * width)
        k_t, v = key[:, :, columns].transpose(1, 2), value[:, :, columns]
        chunks = []
        for r in range(0, queries, rows):
            piece_scale = scale if last is None else last[:, :1, :1] * 0 + scale
            last = torch.bmm(torch.softmax(torch.bmm(query[:, r:r + rows, columns] * piece_scale, k_t), dim=-1), v)
            chunks.append(last)
        pieces.append(torch.cat(chunks, dim=1) if len(chunks) > 1 else chunks[0])
    return torch.cat(pieces, dim=-1)  # head h's columns are h*width.., as the (B, T, heads*width) layout has them


class ExportAttention:
    """A diffusers attention processor computing what ``AttnProcessor2_0`` computes (the UNet's self- and
    cross-attention, the VAE's mid-block attention) through ``attention_in_pieces``. Attention with a mask or
    extra normalisations (not in SD-1.x/2.x) goes to ``AttnProcessor2_0``."""

    def __init__(self, piece_bytes: int = PIECE_BYTES) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.piece_bytes = piece_bytes
        self.default = AttnProcessor2_0()

    def __call__(self, attn: nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs: Any) -> Tensor:
        if (attention_mask is not None or attn.spatial_norm is not None or attn.norm_q is not None
                or attn.norm_k is not None or attn.norm_cross or hidden_states.ndim not in (3, 4)):
            return self.default(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        residual, image_shape = hidden_states, None
        if hidden_states.ndim == 4:  # (B, C, H, W) -> (B, H*W, C) tokens
            image_shape = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        out = attention_in_pieces(attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), attn.heads,
                                  attn.scale, self.piece_bytes)
        out = attn.to_out[1](attn.to_out[0](out))
        if image_shape is not None:
            out = out.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            out = out + residual
        if attn.rescale_output_factor != 1.0:  # a division by 1 would still be a graph op
            out = out / attn.rescale_output_factor
        return out


class VaeDecoder(nn.Module):
    """Scaled latent -> image in [-1, 1]."""

    def __init__(self, vae: nn.Module, scaling: float) -> None:
        super().__init__()
        self.vae, self.scaling = vae, scaling

    def forward(self, latent: Tensor) -> Tensor:
        return self.vae.decode(latent / self.scaling, return_dict=False)[0]


class VaeEncoderMean(nn.Module):
    """Image in [-1, 1] -> scaled latent mean (what personalization caches per image)."""

    def __init__(self, vae: nn.Module, scaling: float) -> None:
        super().__init__()
        self.vae, self.scaling = vae, scaling
        self.channels = int(vae.config.latent_channels)

    def forward(self, image: Tensor) -> Tensor:
        moments = self.vae.quant_conv(self.vae.encoder(image)) if self.vae.quant_conv is not None \
            else self.vae.encoder(image)
        return moments[:, : self.channels] * self.scaling


# ------------------------------------------------------------------------------------------ the pipeline


def schedule_from_config(config: dict) -> tuple[np.ndarray, dict]:
    """alphas_cumprod (float64) of the folder's training schedule, and what the bundle's metadata says of it."""
    kind = config.get("beta_schedule", "linear")
    count = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if config.get("trained_betas"):
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, count, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, count, dtype=np.float64)
    elif kind == "squaredcos_cap_v2":
        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.array([min(1 - f((i + 1) / count) / f(i / count), 0.999) for i in range(count)])
    else:
        raise EdgeSDKError(f"scheduler beta_schedule {kind!r} is not supported (linear, scaled_linear, "
                           "squaredcos_cap_v2)")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise EdgeSDKError(f"scheduler prediction_type {prediction!r} is not supported (epsilon, v_prediction)")
    meta = {"schedule": kind.replace("_", "-"), "beta_start": start, "beta_end": end, "train_timesteps": count,
            "source_prediction": prediction}
    return np.cumprod(1.0 - betas), meta


@dataclass
class DiffusersSD:
    """A loaded folder: the exportable components, the assets and the sizes."""

    folder: Path
    text_encoder: ClipTextOverEmbeddings
    unet: NoisePredictor
    vae_decoder: VaeDecoder
    vae_encoder: VaeEncoderMean
    token_embedding: np.ndarray  # (vocab, width) float32
    tokenizer: dict  # edgesdk.runtime.clip_tokenizer asset
    alphas_cumprod: np.ndarray
    schedule: dict
    image_size: int
    latent_size: int
    latent_channels: int
    max_tokens: int
    text_width: int

    def metadata(self, guidance: float = 7.5) -> dict:
        return {"image_size": self.image_size, "image_channels": 3, "latent_channels": self.latent_channels,
                "latent_size": self.latent_size, "max_tokens": self.max_tokens, "text_width": self.text_width,
                "prediction": "epsilon", "guidance_scale": guidance, "source": "diffusers",
                "source_folder": self.folder.name, **self.schedule}


def load_diffusers_sd(folder: Path, image_size: int | None = None) -> DiffusersSD:
    """Load a SD-1.x/2.x folder (fp32, eval). ``image_size`` overrides the UNet's native size (a multiple of 8x the
    latent downsampling; exported graphs have static spatial shapes)."""
    require_diffusers()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from edgesdk.runtime.clip_tokenizer import clip_tokenizer_asset

    folder = Path(folder)
    check_folder(folder)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32).eval()
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32).eval()
        text = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32).eval()
        scheduler_config: dict[str, Any] = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgeSDKError(f"could not load the diffusers folder {folder}: {first}") from None
    if getattr(unet.config, "addition_embed_type", None) or getattr(unet.config, "class_embed_type", None):
        raise EdgeSDKError(f"{folder}: UNet with extra conditioning (SDXL / upscaler style) is not supported")
    tokenizer = clip_tokenizer_asset(folder / "tokenizer")
    length = int(tokenizer["max_tokens"])
    if length > int(text.config.max_position_embeddings):
        raise EdgeSDKError(f"tokenizer length {length} exceeds the text encoder's "
                           f"{text.config.max_position_embeddings} positions")
    alphas, schedule = schedule_from_config(scheduler_config)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_size = int(unet.config.sample_size) if image_size is None else image_size // factor
    if image_size is not None and (image_size % (factor * 8) or image_size <= 0):
        raise EdgeSDKError(f"--image-size must be a positive multiple of {factor * 8}, got {image_size}")
    scaling = float(getattr(vae.config, "scaling_factor", 0.18215))
    unet.set_attn_processor(ExportAttention())
    vae.set_attn_processor(ExportAttention())
    with torch.no_grad():
        table = text.get_input_embeddings().weight.detach().numpy().astype(np.float32)
    return DiffusersSD(
        folder=folder, text_encoder=ClipTextOverEmbeddings(text, length).eval(),
        unet=NoisePredictor(unet, alphas, schedule["source_prediction"]).eval(),
        vae_decoder=VaeDecoder(vae, scaling).eval(), vae_encoder=VaeEncoderMean(vae, scaling).eval(),
        token_embedding=table, tokenizer=tokenizer, alphas_cumprod=alphas, schedule=schedule,
        image_size=latent_size * factor, latent_size=latent_size, latent_channels=int(unet.config.in_channels),
        max_tokens=length, text_width=int(text.config.hidden_size))


# ------------------------------------------------------------------------------------------ random pipelines


# Architectures (no weights: weights do not change memory or graph shape). "sd-1.5" is SD-1.5's; "tiny" keeps every
# kind of block at a fraction of the size, for tests.
ARCHITECTURES: dict[str, dict[str, dict]] = {
    "sd-1.5": {
        "unet": {"sample_size": 64, "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280),
                 "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
                 "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3},
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
                "sample_size": 512, "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215},
        "text_encoder": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                         "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                         "projection_dim": 768},
    },
    "tiny": {
        "unet": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": (32, 64),
                 "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 4, "norm_num_groups": 8,
                 "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                 "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
        "vae": {"block_out_channels": (16, 32), "layers_per_block": 1, "latent_channels": 4, "sample_size": 16,
                "norm_num_groups": 8, "down_block_types": ("DownEncoderBlock2D",) * 2,
                "up_block_types": ("UpDecoderBlock2D",) * 2, "scaling_factor": 0.18215},
        "text_encoder": {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                         "projection_dim": 32},
    },
}
SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
             "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False}
# words the random pipelines' tokenizer builds whole (everything else falls back to pieces)
WORDS = ("a photo of the in on with red blue green star circle square triangle dog cat my object style painting "
         "rendering picture large small").split()


def write_random_pipeline(folder: Path, architecture: str = "tiny", seed: int = 0,
                          prediction: str = "epsilon") -> Path:
    """Write a diffusers SD folder with random weights (no download): what tests and the memory benchmark import."""
    require_diffusers()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from edgesdk.data.clip_vocab import write_clip_tokenizer_files

    if architecture not in ARCHITECTURES:
        raise EdgeSDKError(f"unknown architecture {architecture!r}; choose {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[architecture]
    folder = Path(folder)
    torch.manual_seed(seed)
    write_clip_tokenizer_files(folder / "tokenizer", list(WORDS))
    vocabulary = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    special = {"bos_token_id": vocabulary["<|startoftext|>"], "eos_token_id": vocabulary["<|endoftext|>"],
               "pad_token_id": vocabulary["<|endoftext|>"]}
    text_config = {**arch["text_encoder"], **special}
    text_config["vocab_size"] = max(text_config["vocab_size"], len(vocabulary))
    UNet2DConditionModel(**arch["unet"]).save_pretrained(folder / "unet")
    AutoencoderKL(**arch["vae"]).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(**text_config)).save_pretrained(folder / "text_encoder")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULER, "prediction_type": prediction}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}, indent=2))
    return folder
