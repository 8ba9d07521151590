"""Model families: each one module implementing `Family`, registered in `FAMILIES`.

A family says everything the export driver (``edgesdk.exporting.export_model``) needs to know about its models: the
recipes it accepts (``--quant``) and its default, how it loads weights, the components it captures with their example
inputs and shape regimes, its calibration data, the assets and metadata its bundles carry, an end-to-end quality
check, and which runtime task opens its bundles. The driver branches on none of it. Adding a family is one module
here and one line in `FAMILIES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgesdk.quant.configs import Calibration, QuantConfig, config_from_name
from edgesdk.runtime.errors import EdgeSDKError

if TYPE_CHECKING:
    import torch

    from edgesdk.export.capture import ComponentSpec

Log = Callable[[str], None]
# On-device personalization runs the n+1 queries of one zeroth-order step (n = 2 directions by default) as one
# forward; ExecuTorch gets a method at that batch too (weights stored once in the .pte).
ZO_BATCH = 3
MAX_ZO_BATCH = 8


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for beyond the recipe and targets. A family refuses the options it has no use for."""

    weights: Path | None = None  # a weights file (a diffusers folder for stable-diffusion); None: the shipped ones
    zo_batch: int | None = None  # ExecuTorch batch of the personalization method; None: the family's default
    image_size: int | None = None  # the resolution graphs are fixed at, for families that can choose it
    calibration: Calibration | None = None  # static recipes: how calibration inputs are recorded


class Family:
    """The protocol, with the defaults most families keep. Override what differs."""

    name: ClassVar[str]  # what `edgesdk export NAME` takes and the manifest's "family"
    runtime_task: ClassVar[str]  # the runtime task that opens its bundles (edgesdk.runtime.tasks)
    default_recipe: ClassVar[str] = "fp32"
    options: ClassVar[frozenset[str]] = frozenset()  # ExportOptions fields it accepts beyond weights/calibration

    recipe_names: ClassVar[tuple[str, ...]] = ("fp32",)  # what --quant accepts here

    def recipe(self, name: str | None, calibration: Calibration | None = None) -> QuantConfig:
        """``--quant NAME`` (None: the family's default) -> the config this family exports with."""
        key = (name or self.default_recipe).strip().lower()
        if key not in self.recipe_names:
            config_from_name(key)  # an unknown name gets the general refusal, listing every recipe
            raise EdgeSDKError(f"a {self.name} bundle takes --quant {' | '.join(self.recipe_names)}, not '{name}'"
                               + self.why_not_recipe(key))
        return self.variant(config_from_name(key, calibration))

    def variant(self, config: QuantConfig) -> QuantConfig:
        """The family's own version of a recipe (a floor its outputs need, a graph rewrite). Default: as it is."""
        return config

    def why_not_recipe(self, name: str) -> str:
        """' (why)' for a known recipe this family does not offer; '' when there is nothing to add."""
        if name == "binary":  # offered only by families of networks trained binary
            return f" (recipe 'binary' stores the weights of a network trained binary; {self.name} is not: export " \
                   "family bnn)"
        return ""

    def check_options(self, options: ExportOptions, config: QuantConfig) -> ExportOptions:
        """Refuse what does not apply; fill in family defaults. Returns the options the export runs with."""
        if options.zo_batch and "zo_batch" not in self.options:
            raise EdgeSDKError(f"--zo-batch {options.zo_batch}: {self.name} bundles carry no personalization methods")
        if options.image_size is not None and "image_size" not in self.options:
            raise EdgeSDKError(f"--image-size applies to stable-diffusion (--from-diffusers) only, not {self.name}")
        if options.weights is not None and not options.weights.exists():
            raise EdgeSDKError(f"weights file not found: {options.weights}")
        return options

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> torch.nn.Module:
        raise NotImplementedError

    def components(self, model: torch.nn.Module, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        raise NotImplementedError

    def calibration(self, model: torch.nn.Module, config: QuantConfig,
                    log: Log) -> dict[str, list[tuple[torch.Tensor, ...]]] | None:
        """Inputs per component for a static recipe (None: this family has no calibration data)."""
        return None

    def assets(self, model: torch.nn.Module) -> dict[str, object]:
        return {}

    def metadata(self, model: torch.nn.Module) -> dict:
        return {}

    def quality(self, model: torch.nn.Module, targets: list[str], log: Log) -> Callable[[Path], dict] | None:
        """An end-to-end check of a quantized bundle's staging folder (figures for the manifest); None: none."""
        return None


# The registry: family name -> "module:class". One line per family; a module is imported when its family is used.
FAMILIES: dict[str, str] = {
    "tiny-sd": "edgesdk.families.tiny_sd:TinySDFamily",
    "onestep": "edgesdk.families.onestep:OneStepFamily",
    "bnn": "edgesdk.families.bnn:BNNFamily",
    "viws": "edgesdk.families.viws:ViWSFamily",
    "stable-diffusion": "edgesdk.families.stable_diffusion:StableDiffusionFamily",
}


def get_family(name: str) -> Family:
    """The registered family called ``name`` (a one-line error listing them otherwise)."""
    if name not in FAMILIES:
        raise EdgeSDKError(f"unknown model family '{name}'; available: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
