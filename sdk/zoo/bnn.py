"""A CIFAR-style ResNet-20 binary network (spec ../shared/specs/reste-bnn.md §5), in one file.

Stem: full-precision 3x3 conv, ReLU, BN. Three stages of ``blocks`` basic blocks at widths w, 2w, 4w (strides 1, 2,
2); each block is bn1(relu(conv1(x))) -> bn2(relu(conv2(.))) plus one shortcut around both, no final ReLU; the
shortcut is option A (stride-2 subsample and zero channel padding: no weights). Head: global average pool,
BatchNorm1d, a full-precision linear classifier. Every 3x3 convolution inside the blocks is binary
(``edgesdk.quant.binary.BinaryConv2d``); the stem, classifier and batch norms stay full precision.

Presets: ``resnet20`` (w = 16, 3 blocks per stage: 269,722 parameters on 3-channel input, the paper's CIFAR
network) for the 32x32 shapes set, and ``digits`` (w = 16, 1 block per stage) for 8x8 scikit-learn digits.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from edgesdk.quant.binary import BinaryConv2d, FoldedBinaryConv2d
from edgesdk.runtime.errors import EdgeSDKError


@dataclass(frozen=True)
class BNNConfig:
    in_channels: int = 3
    image_size: int = 32
    classes: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
    width: int = 16
    blocks: int = 3  # basic blocks per stage
    estimator: str = "reste"  # reste | ste | fp (full-precision twin)
    binary_activations: bool = True  # False: the 1W/32A variant
    ste_clip: float = 1.0
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))  # input normalisation, per channel, on [0, 1] pixels
    std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str | dict) -> BNNConfig:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        return BNNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


PRESETS = {
    "resnet20": BNNConfig(),
    "digits": BNNConfig(in_channels=1, image_size=8, classes=tuple(str(d) for d in range(10)), blocks=1,
                        mean=(0.3,), std=(0.4,)),
}


class ShortcutA(nn.Module):
    """Option A: keep every other pixel and pad the new channels with zeros (no weights)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        # x[:, :, ::2, ::2], written as reshape + unit slices: XNNPACK delegates those, not a stepped slice
        phases = x.reshape(batch, channels, height // 2, 2, width // 2, 2)
        kept = phases[:, :, :, :1, :, :1].reshape(batch, channels, height // 2, width // 2)
        half = self.extra // 2
        return F.pad(kept, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    def __init__(self, cfg: BNNConfig, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        binary = dict(estimator=cfg.estimator, binary_activations=cfg.binary_activations, ste_clip=cfg.ste_clip)
        self.conv1 = BinaryConv2d(in_planes, planes, 3, stride=stride, padding=1, **binary)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = BinaryConv2d(planes, planes, 3, stride=1, padding=1, **binary)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes - in_planes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(F.relu(self.conv1(x)))
        out = self.bn2(F.relu(self.conv2(out)))
        return out + self.shortcut(x)


class BNN(nn.Module):
    """(B, C, H, W) images normalised per ``config.mean``/``std`` -> (B, classes) logits."""

    def __init__(self, config: BNNConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Conv2d(config.in_channels, w, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(w)
        stages, in_planes = [], w
        for planes, stride in ((w, 1), (2 * w, 2), (4 * w, 2)):
            for i in range(config.blocks):
                stages.append(BasicBlock(config, in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*stages)
        self.bn_head = nn.BatchNorm1d(in_planes)
        self.fc = nn.Linear(in_planes, len(config.classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn0(F.relu(self.stem(x)))
        x = self.blocks(x)
        return self.fc(self.bn_head(x.mean(dim=(2, 3), keepdim=True).flatten(1)))  # keepdim: XNNPACK's form


class ChannelAffine(nn.Module):
    """x * scale + shift per channel: an eval-mode batch norm with its four vectors reduced to the two it applies."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().reshape(1, -1, 1, 1))
        self.register_buffer("shift", shift.detach().clone().reshape(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def batch_norm_affine(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """(scale, shift) of an eval-mode batch norm: gamma / sqrt(var + eps) and beta - mean * scale."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


class ScaledBinaryConv2d(nn.Module):
    """A folded binary convolution that keeps its alpha as an output scale (the unfolded inference form)."""

    def __init__(self, folded: FoldedBinaryConv2d) -> None:
        super().__init__()
        self.folded, self.alpha = folded, folded.alpha

    def forward(self, x: Tensor) -> Tensor:
        return self.folded(x) * self.alpha


@torch.no_grad()
def folded_for_inference(model: BNN, fold_alpha: bool = True) -> BNN:
    """An eval-mode copy in deployment form: binary convolutions hold +-1 weights (``FoldedBinaryConv2d``), batch
    norms become per-channel affines, and the head's BatchNorm1d folds into the classifier. With ``fold_alpha``
    each layer's alpha = mean|W| moves into the affine after its ReLU (relu(alpha y) = alpha relu(y) for alpha > 0:
    pure +-1 weights, spec §8); without it the layer multiplies its output by alpha. Same function as
    ``model.eval()`` either way (to float rounding)."""
    if model.config.estimator == "fp":
        raise EdgeSDKError("a full-precision twin has no binary layers to fold; export it as it is")
    folded = copy.deepcopy(model).eval()
    folded.bn0 = ChannelAffine(*batch_norm_affine(model.bn0))
    for block in folded.blocks:
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            binary = FoldedBinaryConv2d(getattr(block, conv_name))
            scale, shift = batch_norm_affine(getattr(block, bn_name))
            if fold_alpha:
                setattr(block, conv_name, binary)
                scale = scale * binary.alpha
            else:
                setattr(block, conv_name, ScaledBinaryConv2d(binary))
            setattr(block, bn_name, ChannelAffine(scale, shift))
    # fc(bn(x)) = W (s x + h) + b = (W diag(s)) x + (W h + b)
    scale, shift = batch_norm_affine(model.bn_head)
    folded.fc.weight.copy_(model.fc.weight * scale[None, :])
    folded.fc.bias.copy_(model.fc.bias + model.fc.weight @ shift)
    folded.bn_head = nn.Identity()
    return folded


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def binary_share(model: BNN) -> float:
    """Fraction of the parameters that are binary-convolution weights (99 % for ResNet-20)."""
    binary = sum(m.weight.numel() for m in model.modules() if isinstance(m, BinaryConv2d))
    return binary / parameter_count(model)


def default_bnn_path(dataset: str) -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / f"bnn-{dataset}.safetensors"


def load_bnn(path: Path) -> BNN:
    """A trained network from its weights file (config in the metadata), in eval mode."""
    from edgesdk.zoo.weights import load_weights

    tensors, metadata = load_weights(path)
    if metadata.get("family") != "bnn":
        raise EdgeSDKError(f"{path} holds '{metadata.get('family')}' weights, not a bnn")
    model = BNN(BNNConfig.from_json(metadata["config"]))
    model.load_state_dict(tensors, strict=True)
    model.info = metadata  # type: ignore[attr-defined]
    return model.eval()
