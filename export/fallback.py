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
from dataclasses import dataclass

import torch

from edgesdk.export.capture import CapturedComponent
from edgesdk.quant.configs import QuantConfig
from edgesdk.quant.sensitivity import FALLBACK_MARGIN_DB, SensitivityReport, layer_sensitivity
from edgesdk.runtime.errors import EdgeSDKError

MAX_FALLBACK_ROUNDS = 4
SHOWN_LAYERS = 3  # the worst layers the export's log names


TOP1_MISS_DB = 3.0  # a top-1 agreement miss asks the fallback for this much more simulated SQNR


@dataclass(frozen=True)
class Shortfall:
    """One exported file below the floor: what it missed, and by how many dB of SQNR (an estimate for top-1)."""

    component: str
    target: str
    what: str
    missing_db: float


def floor_text(sqnr_floor_db: float | None, top1_floor: float | None) -> str:
    parts = [f"{sqnr_floor_db:.0f} dB"] if sqnr_floor_db is not None else []
    return " and ".join(parts + ([f"{top1_floor:.0%} top-1 agreement"] if top1_floor is not None else []))


def below_floor(results: dict[str, dict], sqnr_floor_db: float | None,
                top1_floor: float | None = None) -> list[Shortfall]:
    """Every file whose worst output SQNR is below the floor, or whose classifier top-1 agreement with fp32 is."""
    below = []
    for name, per_target in results.items():
        for target, figures in per_target.items():
            sqnr = min(v["sqnr_db"] for v in figures.values())
            top1 = min((v["top1_agreement"] for v in figures.values() if "top1_agreement" in v), default=None)
            if sqnr_floor_db is not None and sqnr < sqnr_floor_db:
                below.append(Shortfall(name, target, f"{name} on {target} {sqnr:.1f} dB", sqnr_floor_db - sqnr))
            elif top1_floor is not None and top1 is not None and top1 < top1_floor:
                below.append(Shortfall(name, target, f"{name} on {target} top-1 agreement {top1:.1%}", TOP1_MISS_DB))
    return below


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

    def widen(self, below: list[Shortfall], last_round: bool) -> None:
        """After an export whose parity missed the floor: keep more layers in fp32 (the component's simulated target
        raised by the largest shortfall), or refuse when no more can help."""
        floor = floor_text(self.recipe.sqnr_floor_db, self.recipe.top1_floor)
        summary = ", ".join(b.what for b in below)
        worst: dict[str, float] = {}
        for shortfall in below:
            worst[shortfall.component] = max(worst.get(shortfall.component, 0.0), shortfall.missing_db)
        for name, missing_db in worst.items():
            report = self.reports.get(name)
            before = self.chosen.get(name, ())
            if report is None or last_round or len(before) == len(report.layers):
                kept = f" with {len(before)} of {len(report.layers)} layers in fp32" if report else ""
                raise EdgeSDKError(f"parity vs eager fp32 below the recipe's floor of {floor}{kept}: {summary}; "
                                   "nothing was written (give more or more typical calibration data, or a milder "
                                   "recipe: --quant w8)")
            self.target_db[name] += missing_db + 1.0
            after = report.float_layers_for(self.target_db[name])
            if len(after) <= len(before):  # the simulation already cleared it: take more layers anyway
                after = [s.layer for s in report.layers[: len(before) + max(1, len(before) // 2)]]
            self.chosen[name] = tuple(after)
            self.log(f"  {name}: below the floor ({summary}); exporting again with {len(after)} layers in fp32")
