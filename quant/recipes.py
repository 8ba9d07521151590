"""Quantization recipes: small config objects, one per scheme, chosen by name on the CLI (`--quant`).

A recipe says what is quantized and how it is calibrated; each target lowers it with its own toolchain
(ExecuTorch: PT2E with the XNNPACK quantizer; ONNX Runtime and TensorRT: Q/DQ ONNX). A target that cannot
express a recipe is refused with a clear error, never silently given something else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgesdk.runtime.errors import EdgeSDKError


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
class Recipe:
    name: str
    sqnr_floor_db: float  # a quantized export whose parity SQNR falls below this is refused
    calibration: Calibration | None = None
    targets: tuple[str, ...] = field(default=())
    why_not: dict[str, str] = field(default_factory=dict)  # target -> why this recipe is refused there
    weight_bits: int = 8
    group_size: int | None = None  # weights share one scale per this many input features (None: per channel)
    # ExecuTorch: rewrite convolutions as im2col + linear before quantizing (``edgesdk.quant.matmul_form``), so a
    # dynamic-activation recipe quantizes them too (XNNPACK's dynamically quantized convolution fails in ExecuTorch
    # 1.5.1). Set for Stable Diffusion UNets, whose weights are three quarters convolution.
    convolutions_as_linear: bool = False
    # With convolutions_as_linear: a convolution whose im2col patches would pass this many bytes per batch row
    # stays a convolution (fp32 weights on ExecuTorch), bounding what one layer holds at run time. None: no bound.
    im2col_limit_bytes: int | None = None

    @property
    def is_static(self) -> bool:
        return self.calibration is not None

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("targets")
        data.pop("why_not")
        return data


def FP32() -> Recipe:  # noqa: N802 - reads as a config constructor, like torchao's
    return Recipe("fp32", sqnr_floor_db=80.0, targets=("executorch", "onnx", "tensorrt"))


def W8A8(calibration: Calibration | None = None) -> Recipe:  # noqa: N802
    """Static int8 weights (per channel) and activations (per tensor)."""
    return Recipe("w8a8", sqnr_floor_db=12.0, calibration=calibration or Calibration(),
                  targets=("executorch", "onnx", "tensorrt"))


def W8() -> Recipe:  # noqa: N802
    """int8 weights, activations quantized on the fly (dynamic): no calibration needed.

    On ExecuTorch this covers linear layers only: XNNPACK's dynamically quantized convolution failed to execute
    in ExecuTorch 1.5.1 (error 0x1), so convolution weights stay fp32 there, unless ``convolutions_as_linear``
    turns them into linear layers first (the Stable Diffusion import does). ONNX Runtime takes both."""
    return Recipe("w8", sqnr_floor_db=20.0, targets=("executorch", "onnx"), why_not={
        "tensorrt": "TensorRT's explicit quantization needs static activation scales; use w8a8"})


def W4(group_size: int = 64) -> Recipe:  # noqa: N802
    """4-bit weights in groups of ``group_size`` input features, int8 activations quantized on the fly (8da4w).

    4-bit kernels exist only for matrix products (XNNPACK through torchao's 8da4w; ONNX Runtime's MatMulNBits),
    so convolutions are first rewritten as im2col + linear (``edgesdk.quant.matmul_form``): every weight is then
    4-bit, which a 3x3-convolution UNet needs to come out much smaller. No calibration data is needed.
    Groups of 64 rather than 32: on the tiny-sd UNet the SQNR differs by 0.5 dB while the scales (2 bytes per
    group) shrink by half, which takes the ExecuTorch bundle from 5.9x to over 6x smaller than fp32."""
    if group_size < 8 or group_size & (group_size - 1):
        raise EdgeSDKError(f"w4 group size must be a power of two >= 8, got {group_size}")
    return Recipe("w4", sqnr_floor_db=12.0, targets=("executorch", "onnx"), weight_bits=4, group_size=group_size,
                  why_not={"tensorrt": "TensorRT's 4-bit weights (block-quantized INT4 GEMM) need Ampere or newer and "
                                       "cannot be built or checked without tensorrt; use w8a8"})


def Binary() -> Recipe:  # noqa: N802
    """1-bit weights for a network trained binary (``edgesdk.quant.binary``): the graph computes in fp32 on its
    +-1 weights, and each file is stored with one bit per binary weight (``edgesdk.runtime.onebit``), unpacked
    exactly at load. Other weights and activations are untouched; nothing is rounded, so parity is exact."""
    return Recipe("binary", sqnr_floor_db=80.0, targets=("executorch", "onnx"), weight_bits=1, why_not={
        "tensorrt": "bnn bundles are for ExecuTorch and ONNX Runtime; export TensorRT-ready ONNX with --quant fp32"})


RECIPES = {"fp32": FP32, "w8a8": W8A8, "w8": W8, "w4": W4, "binary": Binary}
LOSSLESS = ("fp32", "binary")  # recipes that leave every value as the model computes it


def recipe_from_name(name: str, calibration: Calibration | None = None) -> Recipe:
    key = name.strip().lower()
    if key not in RECIPES:
        raise EdgeSDKError(f"unknown quantization recipe '{name}'; choose from {', '.join(RECIPES)}")
    return W8A8(calibration) if key == "w8a8" else RECIPES[key]()


def check_targets(recipe: Recipe, targets: list[str]) -> None:
    unsupported = [t for t in targets if t not in recipe.targets]
    if unsupported:
        reasons = "; ".join(f"{t}: {recipe.why_not[t]}" for t in unsupported if t in recipe.why_not)
        raise EdgeSDKError(f"recipe '{recipe.name}' cannot be expressed for target(s) {', '.join(unsupported)} "
                           f"(supported: {', '.join(recipe.targets)}){' — ' + reasons if reasons else ''}; "
                           "choose targets with --target")
