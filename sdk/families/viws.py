"""viws: ViWS-Net video restoration under rain, haze and snow (edgesdk.zoo.viws), exported over one tile."""

from __future__ import annotations

import json
from typing import ClassVar

import torch

from edgesdk.export.capture import ComponentSpec
from edgesdk.families import ExportOptions, Family, Log
from edgesdk.quant.configs import QuantConfig
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.viws import ViWSNet

VIWS_TILE_OVERLAP = 16  # px; the runtime blends overlapping tiles linearly (the reference uses 16 px at 512)


def viws_example_clips(model: ViWSNet, count: int, split: str = "test", seed: int = 0) -> list[torch.Tensor]:
    """Real degraded windows (1, T, 3, H, W) of every weather, cycled: parity and calibration on the inputs the
    network meets (random noise would leave activation ranges and attention patterns unlike real frames)."""
    from edgesdk.data.weather import make_clip_set

    cfg = model.config
    clips = make_clip_set(split, -(-count // 3), frames=cfg.frames, size=cfg.image_size, seed=seed)[:count]
    return [torch.from_numpy(c.degraded).permute(0, 3, 1, 2).unsqueeze(0).contiguous() for c in clips]


def viws_metadata(model: ViWSNet) -> dict:
    from edgesdk.zoo.viws import WEATHERS, inference_parameter_count

    cfg, info = model.config, getattr(model, "info", {})
    return {"task": "restore", "frames": cfg.frames, "tile": cfg.image_size, "tile_overlap": VIWS_TILE_OVERLAP,
            "weathers": list(WEATHERS), "centre_frame_only": True, "edge_frames": "replicated",
            "stitching": "linear blend in tile overlaps", "parameters": inference_parameter_count(model),
            "variant": info.get("variant"), "config": json.loads(cfg.to_json()),
            "train_steps": (info.get("train_config") or {}).get("steps")}


class ViWSFamily(Family):
    """The restorer over one tile (static T x tile x tile; the runtime tiles larger frames and slides the window over
    a video). Weather discriminator left out; tail as stacked Conv2d."""

    name: ClassVar[str] = "viws"
    runtime_task: ClassVar[str] = "restore"
    recipe_names: ClassVar[tuple[str, ...]] = ("fp32", "w8", "w8a8")

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> ViWSNet:
        from edgesdk.zoo.viws import default_viws_path, load_viws

        path = options.weights or default_viws_path()
        if not path.exists():
            raise EdgeSDKError(f"weights file not found: {path} (train one with `edgesdk train viws`)")
        return load_viws(path)

    def components(self, model: ViWSNet, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        return [ComponentSpec("restorer", model.inference_copy(), (viws_example_clips(model, 3)[0],), ["frames"],
                              ["restored"], static_batch=1, max_batch=8)]

    def calibration(self, model: ViWSNet, config: QuantConfig, log: Log) -> dict[str, list[tuple]] | None:
        log(f"recording {config.calibration.samples} calibration windows (training clips, every weather)")
        windows = viws_example_clips(model, config.calibration.samples, split="train", seed=config.calibration.seed)
        return {"restorer": [(x,) for x in windows]}

    def metadata(self, model: ViWSNet) -> dict:
        return viws_metadata(model)
