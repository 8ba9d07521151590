"""Any user model, not only ours: a saved torch.export program (`model.pt2`) or a `package.module:factory`.

The model becomes a one-component bundle ("model") that goes through the same capture, quantization, targets,
parity report and runtime as the zoo. A factory returns ``(module, example_inputs)``, optionally with a third
item ``(input_names, output_names)``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgesdk.export.capture import ComponentSpec
from edgesdk.export.pipeline import Log, export_bundle, parse_targets
from edgesdk.quant.configs import config_from_name
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


def load_calibration(source: Path, spec: ComponentSpec) -> list[tuple[Tensor, ...]]:
    """A .npz (arrays named after the inputs, or in input order) or a folder of them; rows split into batches."""
    files = sorted(source.glob("*.npz")) if source.is_dir() else [source]
    if not source.exists():
        raise EdgeSDKError(f"calibration data not found: {source}")
    samples: list[tuple[Tensor, ...]] = []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            keys = list(data.keys())
            names = spec.input_names if all(n in keys for n in spec.input_names) else keys[: len(spec.input_names)]
            if len(names) != len(spec.input_names):
                raise EdgeSDKError(f"{file} holds {len(keys)} arrays; the model takes {len(spec.input_names)} "
                                   f"inputs ({', '.join(spec.input_names)})")
            arrays = [data[n] for n in names]
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
                      eval_data: Path | None = None, calibration_samples: int | None = None) -> Path:
    """`edgesdk export model.pt2 | pkg.module:factory`. With data (``calibration``: .npz or a folder of them), parity
    and the recipe's SQNR floor are judged on held-out rows of it (or on ``eval_data``), never on the example input,
    which is for tracing only; a static recipe records its ranges on the rest (at most ``calibration_samples``
    batches)."""
    recipe = config_from_name(quant)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    recipe.check_targets(target_list)
    if calibration_samples is not None and calibration_samples < 1:
        raise EdgeSDKError(f"--calibration-samples must be at least 1, got {calibration_samples}")
    spec = load_user_model(source)
    if recipe.needs_calibration and calibration is None:
        raise EdgeSDKError(f"recipe '{recipe.name}' needs --calibration DIR|FILE.npz with real inputs")
    batches = load_calibration(calibration, spec) if calibration is not None else []
    if eval_data is not None:
        held_out, where = load_calibration(eval_data, spec), str(eval_data)
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
                         overwrite=overwrite, recipe=recipe, calibration=calibration_inputs, log=log)
