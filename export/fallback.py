"""Which layers each component keeps in fp32 under a recipe that quantizes layer by layer (``--fallback``).

The export measures every component's per-layer sensitivity (``edgesdk.quant.sensitivity``) on its evaluation data,
then: ``none`` quantizes every layer (the figures go into the manifest, for ``edgesdk inspect``); ``layers`` keeps
the named ones in fp32; ``auto`` starts from the fewest most sensitive layers whose simulation clears the floor by a
margin, and after each export whose real parity misses the floor on some target, raises that component's simulated
target by the shortfall and lowers it again, up to ``MAX_FALLBACK_ROUNDS`` exports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from edgesdk.export.capture import CapturedComponent
from edgesdk.quant.configs import QuantConfig
from edgesdk.quant.sensitivity import FALLBACK_MARGIN_DB, SensitivityReport, layer_sensitivity
from edgesdk.runtime.errors import EdgeSDKError

MAX_FALLBACK_ROUNDS = 4
SHOWN_LAYERS = 3  # the worst layers the export's log names


class LayerChoice:
    def __init__(self, recipe: QuantConfig, measure: bool, log: object, components: int = 1) -> None:
        self.recipe = recipe
        self.components = components
        mode = getattr(recipe, "fallback", "none")
        self.active = recipe.per_layer_choice and (measure or mode != "none")
        self.auto = self.active and mode == "auto"
        self.named = tuple(getattr(recipe, "float_layers", ())) if mode == "layers" else ()
        self.reports: dict[str, SensitivityReport] = {}
        self.chosen: dict[str, tuple[str, ...]] = {}
        self.target_db: dict[str, float] = {}
        self.log = log

    def recipe_for(self, captured: CapturedComponent,
                   calibration: Sequence[tuple[torch.Tensor, ...]] | None) -> QuantConfig:
        """The recipe this component is lowered with: the base one, with this component's fp32 layers."""
        if not self.active or not calibration:
            return self.recipe
        spec = captured.spec
        if spec.name not in self.reports:
            evaluation = spec.evaluation_inputs or (spec.example_inputs,)
            report = layer_sensitivity(captured.static, calibration, evaluation)
            self.reports[spec.name] = report
            worst = ", ".join(f"{s.layer} {s.sqnr_db:.1f} dB ({s.noise_share:.0%} of the noise)"
                              for s in report.layers[:SHOWN_LAYERS])
            self.log(f"  {spec.name}: per-layer sensitivity on {report.rows} rows (simulated int8): all "
                     f"{len(report.layers)} layers {report.all_quantized_sqnr_db:.1f} dB; worst alone: {worst}")
            if len(self.reports) == self.components:
                self.check_names()  # before the last component is lowered: a typo costs no export
            if self.auto:
                self.target_db[spec.name] = self.recipe.sqnr_floor_db + FALLBACK_MARGIN_DB
                self.chosen[spec.name] = tuple(report.float_layers_for(self.target_db[spec.name]))
            else:
                known = {s.layer for s in report.layers}
                self.chosen[spec.name] = tuple(n for n in self.named if n in known)
            if self.chosen[spec.name]:
                self.log(f"  {spec.name}: keeping {len(self.chosen[spec.name])} of {len(report.layers)} layers in "
                         f"fp32: {', '.join(self.chosen[spec.name])}")
        return dataclasses.replace(self.recipe, float_layers=self.chosen[spec.name])

    def check_names(self) -> None:
        """--fallback with names: each must be a quantized layer of some component (a typo would silently keep
        everything int8)."""
        known = {s.layer for report in self.reports.values() for s in report.layers}
        unknown = [n for n in self.named if n not in known]
        if unknown and self.reports:
            sample = ", ".join(s.layer for report in self.reports.values() for s in report.layers[:5])
            raise EdgeSDKError(f"--fallback names no int8 layer {', '.join(map(repr, unknown))}; the most sensitive "
                               f"ones are: {sample} (edgesdk inspect lists them all)")

    def manifest_entry(self, name: str) -> dict:
        if name not in self.reports:
            return {}
        return {"sensitivity": self.reports[name].to_dict(), "float_layers": list(self.chosen[name])}

    def float_layers(self) -> dict[str, list[str]]:
        return {name: list(layers) for name, layers in self.chosen.items()}

    def widen(self, below: list[tuple[str, str, float]], last_round: bool) -> None:
        """After an export whose parity missed the floor (component, target, SQNR): keep more layers in fp32, or
        refuse when no more can help."""
        floor = self.recipe.sqnr_floor_db
        worst: dict[str, tuple[str, float]] = {}
        for name, target, sqnr in below:
            if name not in worst or sqnr < worst[name][1]:
                worst[name] = (target, sqnr)
        summary = ", ".join(f"{name} on {target} {sqnr:.1f} dB" for name, (target, sqnr) in worst.items())
        for name, (_target, sqnr) in worst.items():
            report = self.reports.get(name)
            before = self.chosen.get(name, ())
            if report is None or last_round or len(before) == len(report.layers):
                kept = f" with {len(before)} of {len(report.layers)} layers in fp32" if report else ""
                raise EdgeSDKError(f"SQNR vs eager fp32 below the recipe's floor of {floor:.0f} dB{kept}: {summary}; "
                                   "nothing was written (give more or more typical calibration data, or a milder "
                                   "recipe: --quant w8)")
            self.target_db[name] += floor - sqnr + 1.0
            after = report.float_layers_for(self.target_db[name])
            if len(after) <= len(before):  # the simulation already cleared it: take more layers anyway
                after = [s.layer for s in report.layers[: len(before) + max(1, len(before) // 2)]]
            self.chosen[name] = tuple(after)
            self.log(f"  {name}: below the floor ({summary}); exporting again with {len(after)} layers in fp32")
