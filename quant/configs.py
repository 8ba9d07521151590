"""Quantization configs: one typed object per scheme, carrying its own behaviour (in the manner of torchao's).

A config says what is quantized and how it is calibrated, which targets can express it (and why not the others),
the SQNR floor an export must keep, and how each target's graph is prepared, quantized and stored. Export asks the
config and lowers what it gets back; it never decides on a recipe's name or bit width itself. ``--quant NAME`` picks
a config by name (``config_from_name``); a family may hold its own variant (``dataclasses.replace``: a floor, the
convolutions-as-linear rewrite). The torch / ONNX work lives in ``edgesdk.quant.pt2e`` and ``edgesdk.quant.onnx``;
this module imports neither, so reading a config costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edgesdk.runtime.errors import EdgeSDKError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.export import ExportedProgram

    from edgesdk.quant.onnx_files import OnnxModel

ALL_TARGETS = ("executorch", "onnx", "tensorrt")


@dataclass(frozen=True)
class Calibration:
    """Where activation ranges come from. Diffusion activations move with t, so by default calibration
    inputs are recorded along real sampling trajectories over the whole timestep range and many prompts."""

    samples: int = 32  # calibration inputs per component
    trajectory: str = "sampling"  # "sampling": DDIM trajectories; "uniform-t": noised data at random t
    steps: int = 25  # DDIM steps of a calibration trajectory
    prompts: int = 16
    guidance: float = 4.0
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise EdgeSDKError(f"calibration needs at least 1 sample, got {self.samples}")
        if self.trajectory not in ("sampling", "uniform-t"):
            raise EdgeSDKError(f"unknown calibration trajectory '{self.trajectory}'; use sampling or uniform-t")


@dataclass(frozen=True)
class QuantConfig:
    """What every scheme says about itself. Subclasses set the class-level facts and override the hooks they need;
    the defaults leave the graph and its values as they are."""

    name: ClassVar[str]
    targets: ClassVar[tuple[str, ...]] = ALL_TARGETS
    why_not: ClassVar[dict[str, str]] = {}  # target -> why this scheme is refused there
    weight_bits: ClassVar[int] = 8
    # leaves every value as the model computes it: no quantization pass, no end-to-end quality check needed
    lossless: ClassVar[bool] = False
    # quantizes layer by layer on recorded ranges: per-layer sensitivity can be measured and layers kept in float
    # (``edgesdk.quant.sensitivity``, ``--fallback``)
    per_layer_choice: ClassVar[bool] = False
    # benchmarks/zo_regime.py: static int8 activations (w8a8) leave the zeroth-order estimate almost no signal at
    # usable perturbation sizes and 4-bit weights move the loss surface too coarsely; bundles of the schemes that
    # keep it carry the personalization method by default
    keeps_zeroth_order_signal: ClassVar[bool] = False
    # the network's binary convolutions can run on edgesdk's bit-packed kernel: the ONNX target also writes the
    # graph with them as ai.edgesdk::BinaryConv2d (export/binary_onnx.py), beside the float graph
    binary_kernel: ClassVar[bool] = False

    sqnr_floor_db: float = 80.0  # a quantized export whose parity SQNR falls below this is refused
    # and, for classifier outputs (N, classes), one whose top-1 agreement with fp32 falls below this (None: not judged)
    top1_floor: float | None = None
    calibration: Calibration | None = None  # static activation ranges need recorded inputs

    @property
    def needs_calibration(self) -> bool:
        return self.calibration is not None

    def with_floor(self, floor_db: float) -> QuantConfig:
        """The same scheme held to another SQNR floor (a family whose outputs amplify the error sets its own)."""
        return dataclasses.replace(self, sqnr_floor_db=floor_db)

    def check_targets(self, targets: Sequence[str]) -> None:
        unsupported = [t for t in targets if t not in self.targets]
        if unsupported:
            reasons = "; ".join(f"{t}: {self.why_not[t]}" for t in unsupported if t in self.why_not)
            raise EdgeSDKError(f"recipe '{self.name}' cannot be expressed for target(s) {', '.join(unsupported)} "
                               f"(supported: {', '.join(self.targets)}){' — ' + reasons if reasons else ''}; "
                               "choose targets with --target")

    def to_dict(self) -> dict:
        """What the manifest records under ``quantization``."""
        return {"name": self.name, "sqnr_floor_db": self.sqnr_floor_db, "top1_floor": self.top1_floor,
                "calibration": dataclasses.asdict(self.calibration) if self.calibration else None,
                "weight_bits": self.weight_bits, "group_size": None, "convolutions_as_linear": False,
                "im2col_limit_bytes": None}

    # ---- hooks: what each target lowers. Defaults: the graph as captured, no quantization, stored as is.

    def prepare_graph(self, program: ExportedProgram, target: str, max_batch: int | None = None) -> ExportedProgram:
        """The captured program rewritten into the form this scheme quantizes on ``target`` (before quantization).
        ``max_batch``: the dynamic batch's bound for a dynamic-batch program, None for a static one."""
        return program

    def quantized_module(self, program: ExportedProgram, calibration: Sequence[tuple[torch.Tensor, ...]],
                         example_inputs: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        """ExecuTorch: the module with quantization inserted, before re-capture (a dynamic-batch program's can be
        captured at any batch, with the same quantization parameters at each)."""
        return program.module()

    def quantize_program(self, program: ExportedProgram, calibration: Sequence[tuple[torch.Tensor, ...]],
                         example_inputs: tuple[torch.Tensor, ...]) -> ExportedProgram:
        """ExecuTorch: the quantized program, ready for ``to_edge_transform_and_lower``."""
        if self.lossless:
            return program
        import torch

        return torch.export.export(self.quantized_module(program, calibration, example_inputs), example_inputs)

    def quantize_onnx(self, model: OnnxModel, calibration: Sequence[dict[str, np.ndarray]],
                      target: str) -> OnnxModel:
        """ONNX Runtime / TensorRT: the quantized graph (calibration feeds keyed by input name)."""
        return model

    def stored(self, data: bytes) -> tuple[bytes, str, dict | None]:
        """How a model file is stored: (bytes, file-name suffix, what the manifest records about the packing)."""
        return data, "", None


@dataclass(frozen=True)
class FP32Config(QuantConfig):
    """No quantization: every target, values as the model computes them."""

    name: ClassVar[str] = "fp32"
    lossless: ClassVar[bool] = True
    keeps_zeroth_order_signal: ClassVar[bool] = True


FALLBACK_MODES = ("none", "auto", "layers")


@dataclass(frozen=True)
class W8A8Config(QuantConfig):
    """Static int8 weights (per channel) and activations (per tensor), ranges recorded on calibration inputs.

    ``fallback``: "none" quantizes every convolution and linear layer; "auto" keeps the fewest, most sensitive ones in
    fp32 until the SQNR floor is met on every target (the export picks them, ``edgesdk.quant.sensitivity``);
    "layers" keeps ``float_layers`` in fp32 as named. ``float_layers`` is what one component is lowered with."""

    name: ClassVar[str] = "w8a8"
    per_layer_choice: ClassVar[bool] = True
    sqnr_floor_db: float = 12.0
    calibration: Calibration | None = dataclasses.field(default_factory=Calibration)
    fallback: str = "none"
    float_layers: tuple[str, ...] = ()
    # ONNX Runtime's activation ranges: "minmax" (the families' floors were set with it) or "percentile" (99.999th
    # percentile of a histogram: your own models; on trained mobilenet_v3_small +6-7 dB SQNR, resnet18 unchanged,
    # benchmarks/user_models.py). ExecuTorch's XNNPACK quantizer always uses its own histogram (L2) observer.
    onnx_activation_ranges: str = "minmax"
    # ExecuTorch: also quantize the element-wise ops between int8 layers (activations, residual adds, squeeze-
    # excitation; ``edgesdk.quant.pt2e._close_int8_islands``) so XNNPACK runs them in int8 instead of fp32 between
    # converts. Your own models get it (``export_user_model``): on mobilenet_v3_small / efficientnet_b0 the converts
    # had cancelled the int8 speed-up. The families keep conv / linear only (their floors were set that way).
    int8_elementwise: bool = False
    # ONNX Runtime: MatMuls of two activations (attention) stay fp32 (``edgesdk.quant.onnx.activation_matmuls``).
    # Your own models get it: trained deit_tiny went from 17.2 to 28.5 dB. The families keep them int8 (their floors
    # and integer-kernel shares were set that way).
    onnx_float_activation_matmuls: bool = False

    def __post_init__(self) -> None:
        if self.calibration is None:
            raise EdgeSDKError("recipe 'w8a8' records activation ranges: it needs a Calibration")
        if self.onnx_activation_ranges not in ("minmax", "percentile"):
            raise EdgeSDKError(f"unknown activation ranges '{self.onnx_activation_ranges}'; use minmax or percentile")
        if self.fallback not in FALLBACK_MODES:
            raise EdgeSDKError(f"unknown fallback '{self.fallback}'; use none, auto or a list of layer names")
        if self.fallback == "layers" and not self.float_layers:
            raise EdgeSDKError("--fallback with layer names needs at least one name")

    def quantized_module(self, program, calibration, example_inputs):  # noqa: ANN001, ANN201 - see the base class
        from edgesdk.quant.pt2e import int8_module

        return int8_module(program, static=True, calibration=calibration, example_inputs=example_inputs,
                           float_layers=self.float_layers, int8_elementwise=self.int8_elementwise)

    def quantize_onnx(self, model, calibration, target):  # noqa: ANN001, ANN201
        from edgesdk.quant.onnx import quantize_onnx_int8

        if not calibration:
            raise EdgeSDKError(f"recipe '{self.name}' needs calibration data and none was given")
        percentile = self.onnx_activation_ranges == "percentile"
        return quantize_onnx_int8(model, static=True, calibration=calibration, target=target,
                                  float_layers=self.float_layers, percentile=percentile,
                                  float_activation_matmuls=self.onnx_float_activation_matmuls)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "onnx_activation_ranges": self.onnx_activation_ranges,
                "int8_elementwise": self.int8_elementwise,
                "onnx_float_activation_matmuls": self.onnx_float_activation_matmuls}


@dataclass(frozen=True)
class W8Config(QuantConfig):
    """int8 weights, activations quantized on the fly (dynamic): no calibration needed.

    On ExecuTorch this covers linear layers only: XNNPACK's dynamically quantized convolution failed to execute
    in ExecuTorch 1.5.1 (error 0x1), so convolution weights stay fp32 there, unless ``convolutions_as_linear``
    turns them into linear layers first (the Stable Diffusion import does). ONNX Runtime takes both."""

    name: ClassVar[str] = "w8"
    targets: ClassVar[tuple[str, ...]] = ("executorch", "onnx")
    why_not: ClassVar[dict[str, str]] = {
        "tensorrt": "TensorRT's explicit quantization needs static activation scales; use w8a8"}
    keeps_zeroth_order_signal: ClassVar[bool] = True

    sqnr_floor_db: float = 20.0
    # ExecuTorch: rewrite convolutions as im2col + linear before quantizing (``edgesdk.quant.matmul_form``), so the
    # dynamic recipe quantizes them too. Set for Stable Diffusion UNets, whose weights are three quarters convolution.
    convolutions_as_linear: bool = False
    # With convolutions_as_linear: a convolution whose im2col patches would pass this many bytes per batch row stays
    # a convolution (fp32 weights on ExecuTorch), bounding what one layer holds at run time. None: no bound.
    im2col_limit_bytes: int | None = None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "convolutions_as_linear": self.convolutions_as_linear,
                "im2col_limit_bytes": self.im2col_limit_bytes}

    def prepare_graph(self, program, target, max_batch=None):  # noqa: ANN001, ANN201
        if target != "executorch" or not self.convolutions_as_linear:
            return program
        from edgesdk.quant.matmul_form import linear_layer_program

        return linear_layer_program(program, max_batch, self.im2col_limit_bytes)

    def quantized_module(self, program, calibration, example_inputs):  # noqa: ANN001, ANN201
        from edgesdk.quant.pt2e import int8_module

        return int8_module(program, static=False, calibration=(), example_inputs=example_inputs)

    def quantize_onnx(self, model, calibration, target):  # noqa: ANN001, ANN201
        from edgesdk.quant.onnx import quantize_onnx_int8

        return quantize_onnx_int8(model, static=False, calibration=(), target=target)


@dataclass(frozen=True)
class W4Config(QuantConfig):
    """4-bit weights in groups of ``group_size`` input features, int8 activations quantized on the fly (8da4w).

    4-bit kernels exist only for matrix products (XNNPACK through torchao's 8da4w; ONNX Runtime's MatMulNBits),
    so convolutions are first rewritten as im2col + linear (``edgesdk.quant.matmul_form``): every weight is then
    4-bit, which a 3x3-convolution UNet needs to come out much smaller. No calibration data is needed.
    Groups of 64 rather than 32: on the tiny-sd UNet the SQNR differs by 0.5 dB while the scales (2 bytes per
    group) shrink by half, which takes the ExecuTorch bundle from 5.9x to over 6x smaller than fp32."""

    name: ClassVar[str] = "w4"
    targets: ClassVar[tuple[str, ...]] = ("executorch", "onnx")
    why_not: ClassVar[dict[str, str]] = {
        "tensorrt": "TensorRT's 4-bit weights (block-quantized INT4 GEMM) need Ampere or newer and cannot be built or "
                    "checked without tensorrt; use w8a8"}
    weight_bits: ClassVar[int] = 4

    sqnr_floor_db: float = 12.0
    group_size: int = 64

    def __post_init__(self) -> None:
        if self.group_size < 8 or self.group_size & (self.group_size - 1):
            raise EdgeSDKError(f"w4 group size must be a power of two >= 8, got {self.group_size}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "group_size": self.group_size}

    def prepare_graph(self, program, target, max_batch=None):  # noqa: ANN001, ANN201
        if target == "executorch":
            return program  # torchao's 8da4w rewrites the layers itself (quant.pt2e.int4_module)
        from edgesdk.quant.matmul_form import linear_layer_program

        return linear_layer_program(program, max_batch)  # MatMulNBits: convolutions as im2col + MatMul first

    def quantized_module(self, program, calibration, example_inputs):  # noqa: ANN001, ANN201
        from edgesdk.quant.pt2e import int4_module

        return int4_module(program, self.group_size)

    def quantize_onnx(self, model, calibration, target):  # noqa: ANN001, ANN201
        from edgesdk.quant.onnx import quantize_onnx_4bit
        from edgesdk.quant.onnx_files import LargeOnnx

        if isinstance(model, LargeOnnx):
            raise EdgeSDKError("w4 on ONNX Runtime is not supported for models over 2 GB; use --quant w8")
        return quantize_onnx_4bit(model, self.group_size)


@dataclass(frozen=True)
class BinaryConfig(QuantConfig):
    """1-bit weights for a network trained binary (``edgesdk.quant.binary``): the graph computes in fp32 on its
    +-1 weights, and each file is stored with one bit per binary weight (``edgesdk.runtime.onebit``), unpacked
    exactly at load. Other weights and activations are untouched; nothing is rounded, so parity is exact."""

    name: ClassVar[str] = "binary"
    targets: ClassVar[tuple[str, ...]] = ("executorch", "onnx")
    why_not: ClassVar[dict[str, str]] = {
        "tensorrt": "bnn bundles are for ExecuTorch and ONNX Runtime; export TensorRT-ready ONNX with --quant fp32"}
    weight_bits: ClassVar[int] = 1
    lossless: ClassVar[bool] = True
    binary_kernel: ClassVar[bool] = True

    def stored(self, data: bytes) -> tuple[bytes, str, dict | None]:
        from edgesdk.runtime.onebit import SUFFIX, pack

        container, header = pack(data)
        return container, SUFFIX, {"binary_weights": header["binary_words"],
                                   "unpacked_bytes": header["original_size"], "stored_bytes": len(container)}


CONFIGS: dict[str, type[QuantConfig]] = {c.name: c for c in (FP32Config, W8A8Config, W8Config, W4Config,
                                                              BinaryConfig)}


def config_from_name(name: str, calibration: Calibration | None = None, fallback: str = "none") -> QuantConfig:
    """``--quant NAME`` -> its config (``calibration`` and ``fallback`` apply to the static scheme only; ``fallback``
    is none, auto, or comma-separated layer names to keep in fp32)."""
    key = name.strip().lower()
    if key not in CONFIGS:
        raise EdgeSDKError(f"unknown quantization recipe '{name}'; choose from {', '.join(CONFIGS)}")
    fallback = fallback.strip()
    if CONFIGS[key] is W8A8Config:
        if fallback.lower() in ("none", "auto", ""):
            return W8A8Config(calibration=calibration or Calibration(), fallback=fallback.lower() or "none")
        names = tuple(dict.fromkeys(n.strip() for n in fallback.split(",") if n.strip()))
        return W8A8Config(calibration=calibration or Calibration(), fallback="layers", float_layers=names)
    if fallback.lower() not in ("none", ""):
        raise EdgeSDKError(f"--fallback applies to the static int8 recipe (w8a8) only, not '{key}'")
    return CONFIGS[key]()
