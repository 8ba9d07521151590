"""ViWS-Net, smaller: video rain, haze and snow removal with one model (spec ../shared/specs/viws-net.md).

Data flow for a window of T frames (B, T, 3, H, W) in [0, 1], H and W divisible by 32:

    encoder      4 Shunted-style stages over B*T frames. Each frame carries M weather-messenger tokens that join
                 every attention block (queries, and appended to the reduced keys/values); after each block the
                 messengers of 6 groups move along time by [+1, 0, -1, +2, 0, -2] frames (sign alternating per
                 block; a stage's last block of odd depth stays put). Pixel tokens never move between frames.
    [training]   weather discriminator on the last stage's pixel features, through gradient reversal (DANN ramp)
    decoder      cross-attention blocks whose queries are the frame's messenger tokens (nearest-gathered to the
                 number of spatial tokens), then a ConvTranspose/ResBlock decoder with skips from all 4 stages
    residual     y0 = x - tanh(conv(.)): the network predicts the weather component
    tail         three 3x3x3 convolutions over (time, H, W), replicate padding in time, no skip
    refiner      a tiny encoder of its own (own messengers and shift) + conv decoder, adding a correction
    output       the centre frame (index T // 2) only: the only frame the loss and the evaluation see

Export-friendly by construction: the messenger shift is a constant permutation matrix (a matmul, no torch.roll or
fmod), the decoder's query gather is a constant index, the tail runs as Conv2d over temporally stacked frames
(``TemporalTail.stacked``, equal to the Conv3d form; XNNPACK has no 3-D convolution), ``forward`` takes only the
frames, and the discriminator lives outside the inference path.

Deviations from the paper's model, all for CPU scale: dims [24, 48, 96, 192] instead of [64, 128, 256, 512], fewer
blocks and messengers (12 instead of 48), a per-stage linear embedding of the messengers instead of summed patch
kernels (the spec allows it), and a stride-1 token embedding in the decoder (at 64 x 64 the paper's stride 2 would
leave a single spatial token).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.tiny_sd import LayerNorm

WEATHERS = ("rain", "haze", "snow")
SHIFT_STRIDES = (1, 0, -1, 2, 0, -2)  # per messenger group: +-1 short-term, +-2 long-term, 0 stays


@dataclass(frozen=True)
class ViWSConfig:
    frames: int = 5
    image_size: int = 64  # training crop and export tile; any multiple of 32 works in eager
    dims: tuple[int, ...] = (24, 48, 96, 192)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    heads: tuple[int, ...] = (2, 2, 4, 8)
    sr: tuple[int, ...] = (8, 4, 2, 1)  # key/value reduction per stage (half the heads see sr, half sr / 2)
    mlp_ratio: int = 4
    messengers: int = 12  # per frame; a multiple of the 6 shift groups
    decoder_blocks: int = 1
    decoder_heads: int = 4
    tail_width: int = 16
    refiner: bool = True
    refiner_dims: tuple[int, ...] = (8, 16, 32, 64)
    refiner_depths: tuple[int, ...] = (1, 1, 1, 1)
    refiner_heads: tuple[int, ...] = (2, 2, 2, 4)
    circular_shift: bool = True  # the reference wraps frame 0 <-> T-1; False fills with zeros (an ablation)
    drop_path: float = 0.1
    discriminator_hidden: int = 32

    def __post_init__(self) -> None:
        if self.messengers % len(SHIFT_STRIDES):
            raise EdgeSDKError(f"messengers must be a multiple of {len(SHIFT_STRIDES)}, got {self.messengers}")
        if self.frames < 1 or self.frames % 2 == 0:
            raise EdgeSDKError(f"frames must be odd (a centre frame), got {self.frames}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str | dict) -> ViWSConfig:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        return ViWSConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# The shipped network, and a tiny one for tests (same code paths, a fraction of the operations).
PRESETS = {
    "default": ViWSConfig(),
    "tiny": ViWSConfig(image_size=32, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), heads=(2, 2, 2, 2), messengers=6,
                       decoder_heads=2, tail_width=4, refiner_dims=(8, 8, 8, 8), refiner_heads=(2, 2, 2, 2)),
}


# ------------------------------------------------------------------------------------------ temporal shift


def shift_matrix(frames: int, messengers: int, sign: int, circular: bool) -> Tensor:
    """(T*M, T*M) 0/1 matrix P with (P @ tokens)[t, m] = tokens[t - s_g, m] for m in group g (s_g * sign frames;
    wrapped around the clip when circular, zero otherwise). A constant matmul instead of torch.roll: ONNX has no
    Roll and ExecuTorch would see index_select + fmod; a matmul stays inside XNNPACK."""
    group = messengers // len(SHIFT_STRIDES)
    matrix = torch.zeros(frames * messengers, frames * messengers)
    for m in range(messengers):
        stride = SHIFT_STRIDES[m // group] * sign
        for t in range(frames):
            source = t - stride
            if circular:
                source %= frames
            elif not 0 <= source < frames:
                continue
            matrix[t * messengers + m, source * messengers + m] = 1.0
    return matrix


class MessengerShift(nn.Module):
    def __init__(self, frames: int, messengers: int, sign: int, circular: bool) -> None:
        super().__init__()
        self.frames, self.messengers = frames, messengers
        self.register_buffer("matrix", shift_matrix(frames, messengers, sign, circular), persistent=False)

    def forward(self, msg: Tensor) -> Tensor:  # (B*T, M, C)
        channels = msg.shape[-1]
        clips = msg.reshape(-1, self.frames * self.messengers, channels).transpose(1, 2)  # (B, C, T*M)
        return F.linear(clips, self.matrix).transpose(1, 2).reshape(-1, self.messengers, channels)


# ------------------------------------------------------------------------------------------ encoder


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch in training (identity in eval, so not exported)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = (torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.rate).to(x.dtype)
        return x * keep / (1.0 - self.rate)


def to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def to_tokens(feature: Tensor) -> Tensor:
    return feature.flatten(2).transpose(1, 2)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, D) -> (B * heads, L, D / heads): 3-D batched matmuls, which XNNPACK takes whole."""
    batch, length, dim = x.shape
    return x.reshape(batch, length, heads, dim // heads).permute(0, 2, 1, 3).reshape(-1, length, dim // heads)


def merge_heads(x: Tensor, heads: int) -> Tensor:
    _, length, head_dim = x.shape
    return x.reshape(-1, heads, length, head_dim).permute(0, 2, 1, 3).reshape(-1, length, heads * head_dim)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    return torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, dim=-1), v)


class SummedKernel(nn.Module):
    """A conv's kernel summed over space, and its bias: what the conv does to a constant patch (a messenger token).
    Computed from the conv's parameters while training; ``freeze`` stores both as constants of their own for export
    (no reduction in the graph, and no parameter shared between a convolution and an elementwise op, which crashed
    ExecuTorch's XNNPACK runtime)."""

    def __init__(self, conv: nn.Conv2d, depthwise: bool = False) -> None:
        super().__init__()
        self.conv, self.depthwise = [conv], depthwise  # a list: not a submodule (no duplicate parameters)
        self.frozen = False

    def forward(self) -> tuple[Tensor, Tensor]:
        if self.frozen:
            return self.frozen_weight, self.frozen_bias
        weight, bias = self.conv[0].weight, self.conv[0].bias
        return (weight.sum((1, 2, 3)) if self.depthwise else weight.sum((2, 3))), bias

    def freeze(self) -> None:
        # buffers, not plain attributes: torch.export lifts those as constants that its ONNX path then lost
        with torch.no_grad():
            weight, bias = self()
            self.register_buffer("frozen_weight", weight.detach().clone())
            self.register_buffer("frozen_bias", bias.detach().clone())
        self.frozen = True


class ShuntedAttention(nn.Module):
    """Queries: [pixels; messengers]. Keys/values: half the heads see the pixels reduced by a conv of kernel = stride
    = sr, the other half by sr / 2 (multi-scale); the messengers, embedded through each reduction conv's spatially
    summed kernel (a constant patch), are appended to both. V of the pixel tokens gets a depthwise 3x3 "local"
    enhancement. sr = 1: one scale, all heads."""

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.heads, self.sr = heads, sr
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        branches = 2 if sr > 1 else 1
        if sr > 1 and heads % 2:
            raise EdgeSDKError(f"multi-scale attention splits heads in two; got {heads} heads")
        width = dim // branches  # each branch serves heads / branches heads
        if sr > 1:
            self.reduce = nn.ModuleList([nn.Conv2d(dim, dim, sr, sr), nn.Conv2d(dim, dim, sr // 2, sr // 2)])
            self.summed = nn.ModuleList(SummedKernel(conv) for conv in self.reduce)
            self.norms = nn.ModuleList([LayerNorm(dim), LayerNorm(dim)])
        self.k = nn.ModuleList(nn.Linear(dim, width) for _ in range(branches))
        self.v = nn.ModuleList(nn.Linear(dim, width) for _ in range(branches))
        self.local = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, groups=width) for _ in range(branches))

    def forward(self, tokens: Tensor, pixels_count: int, height: int, width: int) -> Tensor:
        pixels, msg = tokens[:, :pixels_count], tokens[:, pixels_count:]
        branches = len(self.k)
        heads = self.heads // branches
        q = self.q(tokens)
        outputs = []
        for i in range(branches):
            if self.sr > 1:
                conv = self.reduce[i]
                reduced = to_tokens(conv(to_map(pixels, height, width)))
                h, w = height // conv.stride[0], width // conv.stride[1]
                reduced = F.gelu(self.norms[i](reduced))
                embedded = F.gelu(self.norms[i](F.linear(msg, *self.summed[i]())))
            else:
                reduced, embedded, h, w = pixels, msg, height, width
            v = self.v[i](reduced)
            v = v + to_tokens(self.local[i](to_map(v, h, w)))  # local enhancement, pixel tokens only
            k = torch.cat([self.k[i](reduced), self.k[i](embedded)], 1)
            v = torch.cat([v, self.v[i](embedded)], 1)
            q_i = q[..., i * q.shape[-1] // branches:(i + 1) * q.shape[-1] // branches]
            out = attend(split_heads(q_i, heads), split_heads(k, heads), split_heads(v, heads), self.scale)
            outputs.append(merge_heads(out, heads))
        return self.proj(torch.cat(outputs, -1) if branches > 1 else outputs[0])


class ConvMlp(nn.Module):
    """fc1 -> (x + depthwise 3x3 conv) -> GELU -> fc2. A messenger token is a constant patch, so its depthwise conv
    is m * (kernel sum) + bias."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.summed = SummedKernel(self.dwconv, depthwise=True)

    def forward(self, tokens: Tensor, pixels_count: int, height: int, width: int) -> Tensor:
        h = self.fc1(tokens)
        pixels = h[:, :pixels_count]
        pixels = pixels + to_tokens(self.dwconv(to_map(pixels, height, width)))
        if pixels_count == tokens.shape[1]:  # pixel tokens only (the decoder)
            return self.fc2(F.gelu(pixels))
        msg = h[:, pixels_count:]
        kernel_sum, bias = self.summed()
        msg = msg + msg * kernel_sum + bias
        return self.fc2(F.gelu(torch.cat([pixels, msg], 1)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = LayerNorm(dim), LayerNorm(dim)
        self.attn = ShuntedAttention(dim, heads, sr)
        self.mlp = ConvMlp(dim, ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: Tensor, pixels_count: int, height: int, width: int) -> Tensor:
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens), pixels_count, height, width))
        return tokens + self.drop_path(self.mlp(self.norm2(tokens), pixels_count, height, width))


class MessengerEncoder(nn.Module):
    """Four stages of patch embedding + messenger-token blocks; returns the 4 pixel feature maps and the
    messengers after the last stage."""

    def __init__(self, cfg: ViWSConfig, dims: tuple[int, ...], depths: tuple[int, ...], heads: tuple[int, ...]
                 ) -> None:
        super().__init__()
        self.messengers = nn.Parameter(torch.zeros(1, cfg.messengers, 3))  # start in RGB space
        nn.init.trunc_normal_(self.messengers, std=0.02)
        first = dims[0]
        self.embeds = nn.ModuleList([nn.Sequential(  # the "Head": /4 in three convs
            nn.Conv2d(3, first, 7, 2, 3), nn.BatchNorm2d(first), nn.ReLU(),
            nn.Conv2d(first, first, 3, 1, 1), nn.BatchNorm2d(first), nn.ReLU(),
            nn.Conv2d(first, first, 2, 2))])
        self.embeds.extend(nn.Conv2d(dims[i - 1], dims[i], 3, 2, 1) for i in range(1, 4))
        self.embed_norms = nn.ModuleList(LayerNorm(d) for d in dims)
        self.msg_embeds = nn.ModuleList(nn.Linear(3 if i == 0 else dims[i - 1], dims[i]) for i in range(4))
        self.msg_norms = nn.ModuleList(LayerNorm(d) for d in dims)
        rates = torch.linspace(0, cfg.drop_path, sum(depths)).tolist()
        self.stages, self.shifts, self.out_norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(4):
            start = sum(depths[:i])
            self.stages.append(nn.ModuleList(EncoderBlock(dims[i], heads[i], cfg.sr[i], cfg.mlp_ratio,
                                                          rates[start + j]) for j in range(depths[i])))
            shifts = nn.ModuleList()
            for j in range(depths[i]):
                last_of_odd = depths[i] % 2 == 1 and j == depths[i] - 1
                shifts.append(nn.Identity() if last_of_odd else
                              MessengerShift(cfg.frames, cfg.messengers, 1 if j % 2 == 0 else -1, cfg.circular_shift))
            self.shifts.append(shifts)
            self.out_norms.append(LayerNorm(dims[i]))
        self.frozen = False

    def first_messengers(self) -> Tensor:
        """The messengers embedded into stage 1: (1, M, dims[0]), the same for every input."""
        if self.frozen:
            return self.frozen_first
        return self.msg_norms[0](self.msg_embeds[0](self.messengers))

    def freeze(self) -> None:
        # A constant folded for export: a linear layer over a parameter would be quantized dynamically on a
        # constant input, a pattern XNNPACK does not take (ExecuTorch then has no kernel for its choose_qparams).
        with torch.no_grad():
            self.register_buffer("frozen_first", self.first_messengers().detach().clone())
        self.frozen = True

    def forward(self, frames: Tensor) -> tuple[list[Tensor], Tensor]:  # frames (B*T, 3, H, W)
        features: list[Tensor] = []
        x = frames
        msg = self.first_messengers().expand(frames.shape[0], -1, -1)
        for i in range(4):
            x = self.embeds[i](x)
            height, width = x.shape[2], x.shape[3]
            pixels = self.embed_norms[i](to_tokens(x))
            if i > 0:
                msg = self.msg_norms[i](self.msg_embeds[i](msg))
            tokens = torch.cat([pixels, msg], 1)
            count = height * width
            for block, shift in zip(self.stages[i], self.shifts[i], strict=True):
                tokens = block(tokens, count, height, width)
                tokens = torch.cat([tokens[:, :count], shift(tokens[:, count:])], 1)
            tokens = self.out_norms[i](tokens)
            pixels, msg = tokens[:, :count], tokens[:, count:]
            x = to_map(pixels, height, width)
            features.append(x)
        return features, msg


# ------------------------------------------------------------------------------------------ discriminator


class GradientReversal(torch.autograd.Function):
    """Identity forward; gradient times -alpha backward: the encoder is trained to fool the discriminator."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.alpha * grad, None


def dann_alpha(progress: float) -> float:
    """DANN ramp: 2 / (1 + exp(-10 p)) - 1 over training progress p in [0, 1]."""
    return 2.0 / (1.0 + torch.exp(torch.tensor(-10.0 * progress)).item()) - 1.0


class WeatherDiscriminator(nn.Module):
    """Pixel features of the last stage -> global average pool -> gated-attention pooling over the T frames ->
    3 weather logits. Training only."""

    def __init__(self, dim: int, hidden: int, frames: int) -> None:
        super().__init__()
        self.frames = frames
        self.u, self.v = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(dim, len(WEATHERS), bias=False)

    def forward(self, feature: Tensor, alpha: float) -> Tensor:
        pooled = GradientReversal.apply(feature, alpha).mean((2, 3)).reshape(-1, self.frames, feature.shape[1])
        scores = self.w(torch.sigmoid(self.u(pooled)) * torch.tanh(self.v(pooled)))  # (B, T, 1)
        weights = torch.softmax(scores, dim=1)
        return self.classifier((weights * pooled).sum(1))


# ------------------------------------------------------------------------------------------ decoders


class MessengerDecoderBlock(nn.Module):
    """Cross-attention: queries from the frame's messengers gathered to the number of spatial tokens (nearest, a
    constant index), keys and values from the spatial tokens; the result is added to the spatial tokens."""

    def __init__(self, dim: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.norm_q, self.norm_kv, self.norm2 = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.mlp = ConvMlp(dim, ratio)

    def forward(self, pixels: Tensor, msg: Tensor, height: int, width: int) -> Tensor:
        batch, count, dim = pixels.shape
        messengers = msg.shape[1]
        index = torch.tensor([i * messengers // count for i in range(count)], dtype=torch.long, device=msg.device)
        queries = torch.index_select(self.norm_q(msg), 1, index)
        context = self.norm_kv(pixels)
        out = attend(split_heads(self.q(queries), self.heads), split_heads(self.k(context), self.heads),
                     split_heads(self.v(context), self.heads), self.scale)
        pixels = pixels + self.proj(merge_heads(out, self.heads))
        return pixels + self.mlp(self.norm2(pixels), count, height, width)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ConvDecoder(nn.Module):
    """ConvTranspose x2 stages with ResBlocks and skips from the encoder's 4 stages, to 8 channels at full size."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.top = ResBlock(dims[3])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(dims[i], dims[i - 1], 4, 2, 1) for i in (3, 2, 1))
        self.blocks = nn.ModuleList(ResBlock(dims[i - 1]) for i in (3, 2, 1))
        self.up_half = nn.ConvTranspose2d(dims[0], 16, 4, 2, 1)
        self.block_half = ResBlock(16)
        self.up_full = nn.ConvTranspose2d(16, 8, 4, 2, 1)

    def forward(self, top: Tensor, features: list[Tensor]) -> Tensor:
        x = self.top(top) + features[3]
        for up, block, skip in zip(self.ups, self.blocks, (features[2], features[1], features[0]), strict=True):
            x = block(up(x)) + skip
        return F.relu(self.up_full(self.block_half(self.up_half(x))))


class TemporalTail(nn.Module):
    """Three 3x3x3 convolutions (3 -> w -> w -> 3, no bias, ReLU between) over (time, H, W), replicate padding in
    time and zero padding in space, no skip. ``forward`` is the Conv3d form (training); ``stacked`` computes the
    same numbers as Conv2d over [f(t-1), f(t), f(t+1)] stacked on channels, for runtimes without 3-D convolution."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv3d(3, width, 3, padding=(0, 1, 1), bias=False),
                                    nn.Conv3d(width, width, 3, padding=(0, 1, 1), bias=False),
                                    nn.Conv3d(width, 3, 3, padding=(0, 1, 1), bias=False)])
        self.frozen = False

    def forward(self, clips: Tensor) -> Tensor:  # (B, C, T, H, W)
        x = clips
        for i, conv in enumerate(self.convs):
            x = conv(torch.cat([x[:, :, :1], x, x[:, :, -1:]], 2))
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x

    def stacked_weights(self) -> list[Tensor]:
        """Each 3-D kernel as a 2-D one over [f(t-1), f(t), f(t+1)] stacked on channels: (out, 3 * in, 3, 3)."""
        if self.frozen:
            return [getattr(self, f"frozen_{i}") for i in range(len(self.convs))]
        return [conv.weight.permute(0, 2, 1, 3, 4).flatten(1, 2) for conv in self.convs]

    def freeze(self) -> None:
        """Store the 2-D kernels as constants (XNNPACK delegates a convolution only when its weights are)."""
        with torch.no_grad():
            for i, weight in enumerate(self.stacked_weights()):
                self.register_buffer(f"frozen_{i}", weight.detach().clone())
        self.frozen = True

    def stacked(self, frames: Tensor) -> Tensor:  # (B, T, C, H, W) -> (B, T, 3, H, W)
        batch, count, _, height, width = frames.shape
        x = frames.reshape(batch, -1, height, width)  # frame t is channels [t*C, (t+1)*C)
        for i, weight in enumerate(self.stacked_weights()):
            c = x.shape[1] // count
            padded = torch.cat([x[:, :c], x, x[:, -c:]], 1)  # replicate the first and last frame
            x = torch.cat([F.conv2d(padded[:, t * c:(t + 3) * c], weight, padding=1) for t in range(count)], 1)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x.reshape(batch, count, -1, height, width)


class Refiner(nn.Module):
    """A tiny messenger encoder of its own + conv decoder: a correction added to its input."""

    def __init__(self, cfg: ViWSConfig) -> None:
        super().__init__()
        self.encoder = MessengerEncoder(cfg, cfg.refiner_dims, cfg.refiner_depths, cfg.refiner_heads)
        self.decoder = ConvDecoder(cfg.refiner_dims)
        self.head = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, frames: Tensor) -> Tensor:
        features, _ = self.encoder(frames)
        return frames + torch.tanh(self.head(self.decoder(features[3], features)))


# ------------------------------------------------------------------------------------------ the network


class ViWSNet(nn.Module):
    def __init__(self, config: ViWSConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ViWSConfig()
        self.encoder = MessengerEncoder(cfg, cfg.dims, cfg.depths, cfg.heads)
        self.decoder_embed = nn.Conv2d(cfg.dims[3], cfg.dims[3], 3, 1, 1)
        self.decoder_blocks = nn.ModuleList(MessengerDecoderBlock(cfg.dims[3], cfg.decoder_heads, cfg.mlp_ratio)
                                            for _ in range(cfg.decoder_blocks))
        self.decoder_norm = LayerNorm(cfg.dims[3])
        self.conv_decoder = ConvDecoder(cfg.dims)
        self.residual_head = nn.Conv2d(8, 3, 3, padding=1)
        self.tail = TemporalTail(cfg.tail_width)
        self.refiner = Refiner(cfg) if cfg.refiner else None
        self.discriminator: WeatherDiscriminator | None = WeatherDiscriminator(cfg.dims[3], cfg.discriminator_hidden,
                                                                               cfg.frames)
        # export: run the tail as stacked Conv2d (set by inference_copy); same numbers, no 3-D convolution
        self.stacked_tail = False

    def _restore(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, 3, H, W) -> (restored centre frames (B, 3, H, W), last-stage pixel features (B*T, C, h, w))."""
        cfg = self.config
        height, width = clips.shape[3], clips.shape[4]
        if height % 32 or width % 32:
            raise EdgeSDKError(f"frame size must be a multiple of 32, got {height}x{width} (tile larger frames)")
        frames = clips.reshape(-1, 3, height, width)
        features, msg = self.encoder(frames)
        top = self.decoder_embed(features[3])
        h, w = top.shape[2], top.shape[3]
        pixels = to_tokens(top)
        for block in self.decoder_blocks:
            pixels = block(pixels, msg, h, w)
        top = to_map(self.decoder_norm(pixels), h, w)
        y0 = frames - torch.tanh(self.residual_head(self.conv_decoder(top, features)))
        if self.stacked_tail:
            tailed = self.tail.stacked(y0.reshape(-1, cfg.frames, 3, height, width)).reshape(-1, 3, height, width)
        else:
            clips_first = y0.reshape(-1, cfg.frames, 3, height, width).transpose(1, 2)
            tailed = self.tail(clips_first).transpose(1, 2).reshape(-1, 3, height, width)
        out = self.refiner(tailed) if self.refiner is not None else tailed
        return out.reshape(-1, cfg.frames, 3, height, width)[:, cfg.frames // 2], features[3]

    def forward(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) RGB in [0, 1] -> the restored centre frame (B, 3, H, W)."""
        return self._restore(frames)[0]

    def forward_train(self, frames: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
        """Restored centre frames and weather logits (through gradient reversal with strength alpha)."""
        if self.discriminator is None:
            raise EdgeSDKError("this copy of the network is for inference (no weather discriminator)")
        restored, top = self._restore(frames)
        return restored, self.discriminator(top, alpha)

    def inference_copy(self) -> ViWSNet:
        """The export form: a copy in eval mode with the stacked-Conv2d tail, without the discriminator."""
        import copy

        clone = copy.deepcopy(self)
        clone.discriminator = None
        clone.stacked_tail = True
        for module in clone.modules():
            if isinstance(module, (SummedKernel, TemporalTail, MessengerEncoder)):
                module.freeze()
        return clone.eval()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_parameter_count(model: ViWSNet) -> int:
    return parameter_count(model) - (parameter_count(model.discriminator) if model.discriminator else 0)


def default_viws_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "viws.safetensors"


def load_viws(path: Path | None = None) -> ViWSNet:
    """A trained network from its weights file (config in the metadata), in eval mode."""
    from edgesdk.zoo.weights import load_weights

    path = path or default_viws_path()
    tensors, metadata = load_weights(path)
    if metadata.get("family") != "viws":
        raise EdgeSDKError(f"{path} holds '{metadata.get('family')}' weights, not a viws network")
    model = ViWSNet(ViWSConfig.from_json(metadata["config"]))
    model.load_state_dict(tensors, strict=True)
    model.info = metadata  # type: ignore[attr-defined]
    return model.eval()
