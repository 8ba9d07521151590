"""The export driver: a registered family's model to a verified bundle. It branches on no family or recipe: the family
(``edgesdk.families``) and the quantization config (``edgesdk.quant.configs``) carry that."""

from __future__ import annotations

from pathlib import Path

from edgesdk.export.pipeline import Log, export_bundle, parse_targets
from edgesdk.families import FAMILIES, ExportOptions, get_family
from edgesdk.quant.configs import Calibration

__all__ = ["FAMILIES", "export_diffusers", "export_model"]


def export_model(family: str, output: Path, targets: str | list[str] = "executorch,onnx",
                 weights: Path | None = None, overwrite: bool = False, quant: str | None = None,
                 calibration: Calibration | None = None, log: Log = print, zo_batch: int | None = None,
                 check_quality: bool = True, image_size: int | None = None) -> Path:
    """`edgesdk export FAMILY`: the shipped (or given) weights to a verified bundle, quantized per `quant` (default:
    the family's). ``weights``: a weights file, or for stable-diffusion the diffusers folder."""
    home = get_family(family)
    config = home.recipe(quant, calibration)
    target_list = parse_targets(targets) if targets else list(config.targets)
    config.check_targets(target_list)
    options = home.check_options(ExportOptions(weights, zo_batch, image_size, calibration), config)
    model = home.load(options, config, log)
    specs = home.components(model, options, log)
    inputs = home.calibration(model, config, log) if config.needs_calibration else None
    quality = home.quality(model, target_list, log) if check_quality and not config.lossless else None
    return export_bundle(specs, family=home.name, task=home.runtime_task, model_meta=home.metadata(model),
                         assets=home.assets(model), targets=target_list, output=output, overwrite=overwrite,
                         recipe=config, calibration=inputs, quality=quality, log=log)


def export_diffusers(folder: Path, output: Path, targets: str | list[str] = "executorch,onnx", quant: str = "fp32",
                     image_size: int | None = None, overwrite: bool = False, zo_batch: int | None = None,
                     log: Log = print) -> Path:
    """`edgesdk export --from-diffusers FOLDER`: family stable-diffusion over a SD-1.x/2.x diffusers folder."""
    return export_model("stable-diffusion", output, targets, weights=Path(folder), overwrite=overwrite, quant=quant,
                        log=log, zo_batch=zo_batch, image_size=image_size)
