"""Any user model, not only ours: a saved torch.export program (`model.pt2`) or a `package.module:factory`.

The model becomes a one-component bundle ("model") that goes through the same capture, quantization, targets,
parity report and runtime as the zoo. A factory returns ``(module, example_inputs)``, optionally with a third
item ``(input_names, output_names)``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from edgesdk.export.capture import ComponentSpec
from edgesdk.export.pipeline import Log, export_bundle, parse_targets
from edgesdk.quant.configs import W8A8Config, config_from_name
from edgesdk.runtime.errors import EdgeSDKError


def _names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def load_user_model(source: str) -> ComponentSpec:
    """`model.pt2` or `package.module:factory` -> the component to export."""
    if source.endswith(".pt2"):
        path = Path(source)
        if not path.is_file():
            raise EdgeSDKError(f"model file not found: {source}")
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            hint = "save it with torch.export.save(torch.export.export(model, example_inputs), 'model.pt2')"
            kind = type(exc).__name__
            raise EdgeSDKError(f"cannot load {source} as a torch.export program ({kind}); {hint}") from exc
        args, kwargs = program.example_inputs or ((), {})
        if kwargs or not args:
            raise EdgeSDKError(f"{source} carries no positional example inputs; re-export it with example inputs")
        signature = program.graph_signature
        inputs = [s.arg.name for s in signature.input_specs if s.kind.name == "USER_INPUT"]
        outputs = [s.arg.name for s in signature.output_specs if s.kind.name == "USER_OUTPUT"]
        module: nn.Module = program.module()
        examples = tuple(args)
        input_names = inputs if len(inputs) == len(examples) else _names("input", len(examples))
        output_names = outputs if outputs else ["output"]
    elif ":" in source:
        module_name, _, factory_name = source.partition(":")
        if "" not in sys.path:
            sys.path.insert(0, "")  # the user's working directory, as `python -m` would have it
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise EdgeSDKError(f"cannot import '{source}': {exc}") from exc
        made = factory()
        if not isinstance(made, tuple) or len(made) not in (2, 3) or not isinstance(made[0], nn.Module):
            raise EdgeSDKError(f"'{source}' must return (module, example_inputs[, (input_names, output_names)])")
        module, examples = made[0], made[1]
        examples = (examples,) if isinstance(examples, Tensor) else tuple(examples)
        with torch.no_grad():
            outs = module.eval()(*examples)  # a factory's module is a plain nn.Module
        count = len(outs) if isinstance(outs, tuple | list) else 1
        input_names, output_names = (list(made[2][0]), list(made[2][1])) if len(made) == 3 else (
            _names("input", len(examples)), _names("output", count))
    else:
        raise EdgeSDKError(f"a model to export is a .pt2 file (torch.export.save) or package.module:factory, got "
                           f"'{source}'")
    batch = int(examples[0].shape[0]) if examples and examples[0].dim() > 0 else 1
    return ComponentSpec("model", module, examples, input_names, output_names, static_batch=batch)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_RATIO = 0.875  # default: the shorter side resized to crop / 0.875 first (224 <- 256), then centre-cropped


@dataclass(frozen=True)
class ImagePreprocess:
    """How a folder of images becomes a model's input: the shorter side resized to ``resize`` (default: the crop's
    side / 0.875), a centre crop to the input's height and width, pixels scaled to [0, 1], then (x - mean) / std per
    channel (one value for all channels, or one per channel)."""

    resize: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.resize is not None and self.resize < 1:
            raise EdgeSDKError(f"--image-resize must be a positive number of pixels, got {self.resize}")
        if not self.std or any(not np.isfinite(v) or v <= 0 for v in self.std):
            raise EdgeSDKError(f"--image-std values must be finite and positive, got {list(self.std)}")
        if not self.mean or any(not np.isfinite(v) for v in self.mean):
            raise EdgeSDKError(f"--image-mean values must be finite, got {list(self.mean)}")

    def apply(self, image: Image.Image, channels: int, height: int, width: int) -> np.ndarray:
        """One PIL image -> float32 (channels, height, width)."""
        image = image.convert("RGB" if channels == 3 else "L")
        shorter = self.resize or round(max(height, width) / RESIZE_RATIO)
        scale = shorter / min(image.size)
        image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                             Image.BILINEAR)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32) / 255.0
        pixels = pixels.reshape(height, width, channels).transpose(2, 0, 1)
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise EdgeSDKError(f"--image-{name} takes 1 or {channels} values for this model, got {len(values)}")
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return (pixels - mean) / std


def load_image_folder(folder: Path, spec: ComponentSpec, preprocess: ImagePreprocess) -> list[tuple[Tensor, ...]]:
    """Calibration / evaluation batches from a folder of images, for a model with one (N, C, H, W) input."""
    example = spec.example_inputs[0]
    if len(spec.example_inputs) != 1 or example.dim() != 4 or example.shape[1] not in (1, 3):
        raise EdgeSDKError(f"a folder of images feeds a model with one (N, 1 or 3, H, W) input; this one takes "
                           f"{[tuple(t.shape) for t in spec.example_inputs]}: give .npz arrays instead")
    channels, height, width = (int(d) for d in example.shape[1:])
    pixels = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        try:
            with Image.open(path) as image:
                pixels.append(preprocess.apply(image, channels, height, width))
        except (OSError, Image.DecompressionBombError, ValueError) as exc:
            raise EdgeSDKError(f"cannot read image {path}: {exc}") from None
    batch = spec.static_batch
    if len(pixels) < batch:
        raise EdgeSDKError(f"{folder} holds {len(pixels)} images ({', '.join(IMAGE_SUFFIXES)}); the model's batch "
                           f"of {batch} needs at least {batch}")
    stacked = torch.from_numpy(np.stack(pixels)).to(example.dtype)
    return [(stacked[i : i + batch],) for i in range(0, len(pixels) - batch + 1, batch)]


def load_calibration(source: Path, spec: ComponentSpec,
                     preprocess: ImagePreprocess | None = None) -> list[tuple[Tensor, ...]]:
    """A .npz (arrays named after the inputs, or in input order), a folder of them, or a folder of images (prepared
    by ``preprocess``); rows split into batches at the model's static batch."""
    if not source.exists():
        raise EdgeSDKError(f"calibration data not found: {source}")
    if source.is_dir() and not any(source.glob("*.npz")):
        return load_image_folder(source, spec, preprocess or ImagePreprocess())
    files = sorted(source.glob("*.npz")) if source.is_dir() else [source]
    samples: list[tuple[Tensor, ...]] = []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            keys = list(data.keys())
            names = spec.input_names if all(n in keys for n in spec.input_names) else keys[: len(spec.input_names)]
            if len(names) != len(spec.input_names):
                raise EdgeSDKError(f"{file} holds {len(keys)} arrays; the model takes {len(spec.input_names)} "
                                   f"inputs ({', '.join(spec.input_names)})")
            arrays = [data[n] for n in names]
        for name, array in zip(names, arrays, strict=True):
            if array.dtype.kind not in "biuf" or array.ndim == 0:
                raise EdgeSDKError(f"{file}: array {name!r} is {array.dtype} of shape {array.shape}; calibration "
                                   "arrays hold numbers, one row per sample")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise EdgeSDKError(f"{file}: array {name!r} holds NaN or infinite values; calibration data must be "
                                   "finite")
        rows = len(arrays[0])
        for start in range(0, rows - spec.static_batch + 1, spec.static_batch):
            samples.append(tuple(torch.from_numpy(np.ascontiguousarray(a[start : start + spec.static_batch]))
                                 .to(e.dtype) for a, e in zip(arrays, spec.example_inputs, strict=True)))
    if not samples:
        raise EdgeSDKError(f"calibration set {source} is empty: it needs at least {spec.static_batch} rows per input")
    return samples


HELD_OUT_SHARE = 0.2  # of the calibration batches, kept out of calibration to judge parity on (unless --eval-data)


def split_held_out(batches: list[tuple[Tensor, ...]]) -> tuple[list[tuple[Tensor, ...]], list[tuple[Tensor, ...]]]:
    """(calibration, held-out): the last fifth of the batches (at least one) is held out; a single batch serves both
    (the report then says parity was judged on data the ranges were recorded on)."""
    if len(batches) < 2:
        return batches, batches
    held = max(1, round(len(batches) * HELD_OUT_SHARE))
    return batches[:-held], batches[-held:]


def export_user_model(source: str, output: Path, targets: str | list[str] = "", quant: str = "fp32",
                      calibration: Path | None = None, overwrite: bool = False, log: Log = print,
                      eval_data: Path | None = None, calibration_samples: int | None = None,
                      preprocess: ImagePreprocess | None = None, fallback: str = "none",
                      min_top1: float | None = None) -> Path:
    """`edgesdk export model.pt2 | pkg.module:factory`. With data (``calibration``: .npz, a folder of them, or a folder
    of images prepared by ``preprocess``), parity and the recipe's SQNR floor are judged on held-out rows of it (or on
    ``eval_data``), never on the example input, which is for tracing only; a static recipe records its ranges on the
    rest (at most ``calibration_samples`` batches). A static recipe measures each layer's sensitivity (recorded in the
    manifest); ``fallback``: none, auto (keep the fewest most sensitive layers in fp32 until the floor is met on every
    target) or comma-separated layer names to keep in fp32. ``min_top1``: classifier outputs must also keep this top-1
    agreement with fp32 (a fraction) on the evaluation rows."""
    recipe = config_from_name(quant, fallback=fallback)
    if isinstance(recipe, W8A8Config):  # measured on standard architectures: see W8A8Config.onnx_activation_ranges
        # and, on ExecuTorch, int8 activations / adds / squeeze-excitation between the int8 layers (issue 24)
        # (issue 24), and attention's products of two activations in fp32 on ONNX Runtime
        recipe = dataclasses.replace(recipe, onnx_activation_ranges="percentile", int8_elementwise=True,
                                     onnx_float_activation_matmuls=True)
    if min_top1 is not None:
        if not 0.0 < min_top1 <= 1.0:
            raise EdgeSDKError(f"--min-top1 is a fraction in (0, 1], e.g. 0.98; got {min_top1}")
        recipe = dataclasses.replace(recipe, top1_floor=min_top1)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    recipe.check_targets(target_list)
    if calibration_samples is not None and calibration_samples < 1:
        raise EdgeSDKError(f"--calibration-samples must be at least 1, got {calibration_samples}")
    spec = load_user_model(source)
    if recipe.needs_calibration and calibration is None:
        raise EdgeSDKError(f"recipe '{recipe.name}' needs --calibration DIR|FILE.npz with real inputs")
    batches = load_calibration(calibration, spec, preprocess) if calibration is not None else []
    if eval_data is not None:
        held_out, where = load_calibration(eval_data, spec, preprocess), str(eval_data)
    elif batches:
        total = len(batches)
        batches, held_out = split_held_out(batches)
        where = f"{calibration}, last {len(held_out)} of {total} batches, held out" if held_out is not batches else \
            f"{calibration} (one batch: also the calibration data; give more rows or --eval-data)"
    else:
        held_out, where = [], "the example input (no data given: pass --calibration or --eval-data)"
    calibration_inputs = None
    if recipe.needs_calibration:
        calibration_inputs = {"model": batches[:calibration_samples] if calibration_samples else batches}
    spec.evaluation_inputs = tuple(held_out)
    log(f"parity is judged on {where}")
    meta = {"source": source, "example_batch": spec.static_batch,
            "parity_data": {"source": where, "batches": max(1, len(held_out)),
                            "rows": max(1, len(held_out)) * spec.static_batch}}
    if calibration_inputs is not None:
        meta["calibration_batches"] = len(calibration_inputs["model"])
    return export_bundle([spec], family="custom", model_meta=meta, assets={}, targets=target_list, output=output,
                         overwrite=overwrite, recipe=recipe, calibration=calibration_inputs, log=log,
                         sensitivity=True)
