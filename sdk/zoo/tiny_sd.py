"""tiny-sd: a small latent text-to-image diffusion model, whole, in one file.

Parts, as in Stable Diffusion but sized for 32x32 images and a 2-core CPU:
- ``VAE``: 3x32x32 image <-> 4x8x8 latent (KL-regularised autoencoder, factor-4 downsampling).
- ``TextEncoder``: a bidirectional transformer over *input embeddings*. The token table is a separate
  tensor (``TinySD.token_embedding``) that the runtime looks words up in, so a learned word can be
  spliced in without a special graph.
- ``UNet``: two resolutions (8x8, 4x4), residual blocks with timestep embedding, spatial transformers
  with self- and cross-attention, epsilon prediction.
- ``ddpm_schedule``: the DDPM scaled-linear 1000-step schedule (beta 0.00085 .. 0.012).

Export notes (why the layers look the way they do): XNNPACK delegates neither GroupNorm nor LayerNorm nor
nearest upsampling, so both norms are written from ops it does take (4-D mean over the two innermost
dims, rsqrt, mul, add), upsampling is bilinear, attention is bmm + softmax, and SiLU is x * sigmoid(x).
Every reshape keeps the batch dimension free so the graphs export with a dynamic batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class TinySDConfig:
    image_size: int = 32
    image_channels: int = 3
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64, 64)
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    vocab_size: int = 32
    unet_channels: tuple[int, ...] = (64, 128)
    unet_heads: int = 4
    time_dim: int = 256
    groups: int = 8
    train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    latent_scale: float = 1.0  # set after VAE training so scaled latents have unit variance

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TinySDConfig:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


def ddpm_schedule(config: TinySDConfig) -> np.ndarray:
    """alphas_cumprod of the scaled-linear schedule (float64, length train_timesteps)."""
    betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, config.train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


# ----------------------------------------------------------------------------------------------- layers


def silu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class GroupNorm(nn.Module):
    """GroupNorm from ops XNNPACK delegates: mean over the two innermost dims of a 4-D view."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        g = x.reshape(-1, self.groups, c // self.groups, h * w)
        centred = g - g.mean(dim=(2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(2, 3), keepdim=True)
        normed = (centred * torch.rsqrt(var + self.eps)).reshape(-1, c, h, w)
        return normed * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)


class LayerNorm(nn.Module):
    """LayerNorm over the last dim of (B, L, D), written as a 4-D mean so XNNPACK takes it."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        _, length, width = x.shape
        g = x.reshape(-1, length, 1, width)
        centred = g - g.mean(dim=(2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(2, 3), keepdim=True)
        normed = (centred * torch.rsqrt(var + self.eps)).reshape(-1, length, width)
        return normed * self.weight + self.bias


class Attention(nn.Module):
    """Multi-head attention as explicit bmm + softmax (no fused SDPA, which lowers unevenly)."""

    def __init__(self, width: int, heads: int, context_width: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        context_width = context_width or width
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(context_width, width, bias=False)
        self.v = nn.Linear(context_width, width, bias=False)
        self.out = nn.Linear(width, width)

    def _split(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        x = x.reshape(-1, length, self.heads, self.head_dim).permute(0, 2, 1, 3)
        return x.reshape(-1, length, self.head_dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        length = x.shape[1]
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * (self.head_dim**-0.5), dim=-1)
        y = torch.bmm(weights, v).reshape(-1, self.heads, length, self.head_dim).permute(0, 2, 1, 3)
        return self.out(y.reshape(-1, length, self.heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, width: int, mult: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width * mult)
        self.fc2 = nn.Linear(width * mult, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, time_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, cout) if time_dim else None
        self.norm2 = GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(silu(self.norm1(x)))
        if self.time is not None and temb is not None:
            h = h + self.time(silu(temb)).reshape(-1, h.shape[1], 1, 1)
        h = self.conv2(silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Self-attention, cross-attention to the text, feed-forward, over the HxW positions of a feature map."""

    def __init__(self, channels: int, heads: int, context_width: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm(groups, channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1, self.attn1 = LayerNorm(channels), Attention(channels, heads)
        self.norm2, self.attn2 = LayerNorm(channels), Attention(channels, heads, context_width)
        self.norm3, self.ff = LayerNorm(channels), FeedForward(channels)
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        _, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).reshape(-1, c, h * w).permute(0, 2, 1))
        tokens = tokens + self.attn1(self.norm1(tokens))
        tokens = tokens + self.attn2(self.norm2(tokens), context)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + self.proj_out(tokens).permute(0, 2, 1).reshape(-1, c, h, w)


class Upsample(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # Bilinear, not nearest: XNNPACK delegates only the bilinear kernel.
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


# ------------------------------------------------------------------------------------------------- VAE


class VAEEncoder(nn.Module):
    """image (B,3,H,W) in [-1,1] -> latent mean and log-variance (B,4,H/4,W/4) each, concatenated."""

    def __init__(self, config: TinySDConfig) -> None:
        super().__init__()
        chs, g = config.vae_channels, config.groups
        self.conv_in = nn.Conv2d(config.image_channels, chs[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, ch in enumerate(chs):
            prev = chs[max(i - 1, 0)]
            blocks.append(ResBlock(prev, ch, g))
            if i < len(chs) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = GroupNorm(g, chs[-1])
        self.conv_out = nn.Conv2d(chs[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, image: Tensor) -> Tensor:
        return self.conv_out(silu(self.norm_out(self.blocks(self.conv_in(image)))))


class VAEDecoder(nn.Module):
    """scaled latent (B,4,h,w) -> image (B,3,4h,4w) in [-1,1]; undoes ``latent_scale`` itself."""

    def __init__(self, config: TinySDConfig) -> None:
        super().__init__()
        chs, g = tuple(reversed(config.vae_channels)), config.groups
        self.config = config
        self.conv_in = nn.Conv2d(config.latent_channels, chs[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, ch in enumerate(chs):
            prev = chs[max(i - 1, 0)]
            blocks.append(ResBlock(prev, ch, g))
            if i < len(chs) - 1:
                blocks.append(Upsample(ch, ch))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = GroupNorm(g, chs[-1])
        self.conv_out = nn.Conv2d(chs[-1], config.image_channels, 3, padding=1)

    def forward(self, latent: Tensor) -> Tensor:
        h = self.conv_in(latent / self.config.latent_scale)
        return torch.tanh(self.conv_out(silu(self.norm_out(self.blocks(h)))))


class VAE(nn.Module):
    def __init__(self, config: TinySDConfig) -> None:
        super().__init__()
        self.encoder = VAEEncoder(config)
        self.decoder = VAEDecoder(config)


class LatentMean(nn.Module):
    """The exported encoder: image -> scaled latent mean (what personalization caches per image)."""

    def __init__(self, encoder: VAEEncoder, config: TinySDConfig) -> None:
        super().__init__()
        self.encoder, self.config = encoder, config

    def forward(self, image: Tensor) -> Tensor:
        moments = self.encoder(image)
        return moments[:, : self.config.latent_channels] * self.config.latent_scale


# ------------------------------------------------------------------------------------------ text encoder


class TextEncoder(nn.Module):
    """(B, L, D) input embeddings -> (B, L, D) contextual embeddings. Positions are learned."""

    def __init__(self, config: TinySDConfig) -> None:
        super().__init__()
        width = config.text_width
        self.position = nn.Parameter(torch.randn(1, config.max_tokens, width) * 0.02)
        self.layers = nn.ModuleList()
        for _ in range(config.text_layers):
            self.layers.append(
                nn.ModuleDict(
                    {
                        "norm1": LayerNorm(width),
                        "attn": Attention(width, config.text_heads),
                        "norm2": LayerNorm(width),
                        "ff": FeedForward(width),
                    }
                )
            )
        self.norm_out = LayerNorm(width)

    def forward(self, input_embeddings: Tensor) -> Tensor:
        x = input_embeddings + self.position
        for layer in self.layers:
            x = x + layer["attn"](layer["norm1"](x))
            x = x + layer["ff"](layer["norm2"](x))
        return self.norm_out(x)


# ------------------------------------------------------------------------------------------------- UNet


class TimestepEmbedding(nn.Module):
    def __init__(self, base: int, time_dim: int) -> None:
        super().__init__()
        half = base // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)
        self.fc1 = nn.Linear(base, time_dim)
        self.fc2 = nn.Linear(time_dim, time_dim)

    def forward(self, timestep: Tensor) -> Tensor:
        args = timestep.reshape(-1, 1) * self.freqs.reshape(1, -1)
        return self.fc2(silu(self.fc1(torch.cat([torch.cos(args), torch.sin(args)], dim=1))))


class UNet(nn.Module):
    """(latent (B,4,8,8), timestep (B,) float, text (B,L,D)) -> predicted noise (B,4,8,8)."""

    def __init__(self, config: TinySDConfig) -> None:
        super().__init__()
        c0, c1 = config.unet_channels
        g, td, heads, tw = config.groups, config.time_dim, config.unet_heads, config.text_width
        self.time = TimestepEmbedding(c0, td)
        self.conv_in = nn.Conv2d(config.latent_channels, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, g, td)
        self.attn_down0 = SpatialTransformer(c0, heads, tw, g)
        self.downsample = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = ResBlock(c0, c1, g, td)
        self.attn_down1 = SpatialTransformer(c1, heads, tw, g)
        self.mid1 = ResBlock(c1, c1, g, td)
        self.attn_mid = SpatialTransformer(c1, heads, tw, g)
        self.mid2 = ResBlock(c1, c1, g, td)
        self.up1 = ResBlock(c1 + c1, c1, g, td)
        self.attn_up1 = SpatialTransformer(c1, heads, tw, g)
        self.upsample = Upsample(c1, c1)
        self.up0 = ResBlock(c1 + c0, c0, g, td)
        self.attn_up0 = SpatialTransformer(c0, heads, tw, g)
        self.norm_out = GroupNorm(g, c0)
        self.conv_out = nn.Conv2d(c0, config.latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, latent: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
        temb = self.time(timestep)
        h0 = self.attn_down0(self.down0(self.conv_in(latent), temb), text)
        h1 = self.attn_down1(self.down1(self.downsample(h0), temb), text)
        m = self.mid2(self.attn_mid(self.mid1(h1, temb), text), temb)
        u1 = self.attn_up1(self.up1(torch.cat([m, h1], dim=1), temb), text)
        u0 = self.attn_up0(self.up0(torch.cat([self.upsample(u1), h0], dim=1), temb), text)
        return self.conv_out(silu(self.norm_out(u0)))


# ------------------------------------------------------------------------------------------- the model


@dataclass
class Vocabulary:
    """Word-level vocabulary: special tokens first, then the caption words."""

    words: list[str]
    specials: tuple[str, ...] = field(default=("<pad>", "<bos>", "<eos>"))

    @property
    def tokens(self) -> list[str]:
        return list(self.specials) + self.words


class TinySD(nn.Module):
    """The whole model: token table, text encoder, UNet, VAE, schedule."""

    def __init__(self, config: TinySDConfig, vocabulary: list[str]) -> None:
        super().__init__()
        self.config = config
        self.vocabulary = Vocabulary(list(vocabulary))
        if len(self.vocabulary.tokens) > config.vocab_size:
            raise ValueError(f"vocabulary has {len(self.vocabulary.tokens)} tokens; config allows {config.vocab_size}")
        self.token_embedding = nn.Parameter(torch.randn(config.vocab_size, config.text_width) * 0.1)
        self.text_encoder = TextEncoder(config)
        self.unet = UNet(config)
        self.vae = VAE(config)
        self.register_buffer("alphas_cumprod", torch.from_numpy(ddpm_schedule(config)).float(), persistent=False)

    def token_ids(self, prompts: list[str]) -> Tensor:
        """Prompts -> (B, max_tokens) ids: <bos> words <eos> <pad>... (training-side twin of the runtime tokenizer)."""
        table = {tok: i for i, tok in enumerate(self.vocabulary.tokens)}
        rows = []
        for prompt in prompts:
            ids = [table["<bos>"]] + [table[w] for w in prompt.lower().split()] + [table["<eos>"]]
            ids = ids[: self.config.max_tokens]
            rows.append(ids + [table["<pad>"]] * (self.config.max_tokens - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def encode_text(self, prompts: list[str]) -> Tensor:
        return self.text_encoder(self.token_embedding[self.token_ids(prompts)])


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "tiny_sd.safetensors"


def load_tiny_sd(path: Path | None = None) -> TinySD:
    """The shipped (or a given) tiny-sd in eval mode."""
    from edgesdk.zoo.weights import load_weights

    tensors, metadata = load_weights(path or default_weights_path())
    if metadata.get("family") != "tiny-sd":
        from edgesdk.runtime.errors import EdgeSDKError

        raise EdgeSDKError(f"{path} holds '{metadata.get('family')}' weights, not tiny-sd")
    model = TinySD(TinySDConfig.from_dict(metadata["config"]), metadata["vocabulary"])
    model.load_state_dict(tensors, strict=True)
    return model.eval()
