"""Time to quality of on-device personalization: zeroth-order on the int8 bundle against backprop Textual Inversion.

    python benchmarks/personalization.py [--bundle build/tiny-sd-w8.edge] [--backend executorch] [--threads 2]
        [--seeds 3] [--samples 16] [--ti-steps 400] [--budget 2.0] [--methods ...] [--concepts ...]
    python benchmarks/personalization.py --search    # the estimator candidates, on 3 concepts x 2 seeds

Needs matplotlib (``pip install -e .[bench]``) for the plot.

Concepts (``edgesdk.data.concepts``): five shapes in shades no caption names (pink star, teal circle, brown square,
grey triangle, lime cross) and one that is not a colour (a hollow square, in varying named colours); 5 reference
renders each, the kind as initializer word. tiny-sd is trained on shapes of every shade and on some hollow ones
(captions never say either), so each concept is inside what the model can draw.

Methods, all from the same initializer word, data, captions and loss:
- ``init word``: no training (the floor);
- ``backprop TI``: Textual Inversion by autograd on the fp32 eager PyTorch model (Adam, lr 5e-3), ``--ti-steps``;
- ``zo``, ``zo+sg``, ``zo+puts``, ``zo+sg+puts``: the paper's estimator (n = 2 one-sided directions, Adam lr 5e-3)
  with Subspace Gradient and Partial Uniform Timestep Sampling switched on and off, through the torch-free runtime
  on the exported int8 (w8) bundle;
- ``zo (default)``: what ``edgesdk personalize`` runs (``runtime.personalize.default_config``).
Every zeroth-order run gets ``--budget`` times backprop TI's mean wall-clock (its step count is set from a short
timing run, so a cosine lr schedule ends where the budget does). Same CPU, same thread count for both sides.

Each run is snapshotted at a quarter, half, three quarters and the end of its steps; each snapshot is measured on
``--samples`` images of "a <concept>" (DDIM 20 steps, the same sampling seeds for every method):
- colour error: CIEDE2000 between the drawn shape's pixels and the concept's shade (colour concepts);
- hollow: share of images whose shape has the background colour in its middle (the hollow concept);
- kind: share of images the evaluator reads as the concept's kind;
- image alignment: cosine of evaluator features between the images and 16 held-out renders of the concept.
Reported as mean ± 95 % interval (Student t) over the concepts x seeds, against wall-clock seconds and forward
passes (backprop TI: one forward + one backward per step, counted as one forward; its backward costs about two).
Writes benchmarks/results/personalization.json (every snapshot of every run) and personalization.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgesdk.data.concepts import CONCEPTS, concept_images
from edgesdk.data.shapes import ATTRIBUTES, to_model_range
from edgesdk.reporting import write_json
from edgesdk.runtime.metrics import shape_colour_error, shape_mask
from edgesdk.runtime.personalize import TokenLoss, default_config, fit_config
from edgesdk.runtime.pipeline import TextToImage
from edgesdk.runtime.zo import ZOConfig, ZOTrainer
from edgesdk.train.personalization_baselines import textual_inversion
from edgesdk.zoo.evaluator import load_evaluator
from edgesdk.zoo.tiny_sd import load_tiny_sd

TOKEN = "<concept>"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
# the paper's estimator (ZOConfig's spec defaults: n = 2 one-sided, Adam lr 5e-3, constant) with SG / PUTS ablated
PAPER = {"zo": {"sg": False, "puts": False}, "zo+sg": {"sg": True, "puts": False},
         "zo+puts": {"sg": False, "puts": True}, "zo+sg+puts": {"sg": True, "puts": True}}
DEFAULT = "zo (default)"
# --search: estimators from the zeroth-order literature on top of SG + PUTS (two-sided / antithetic pairs, several
# samples per step sharing the directions, more directions per batched forward, larger and decaying step sizes)
CANDIDATES = {
    "paper n2": {},
    "paper n2 lr2e-2 cos": {"lr": 2e-2, "cosine_lr": True},
    "n8 lr2e-2 cos": {"n": 8, "lr": 2e-2, "cosine_lr": True},
    "2s n1 lr2e-2 cos": {"two_sided": True, "n": 1, "lr": 2e-2, "cosine_lr": True},
    "2s n2 lr2e-2 cos": {"two_sided": True, "n": 2, "lr": 2e-2, "cosine_lr": True},
    "2s n4 lr2e-2 cos": {"two_sided": True, "n": 4, "lr": 2e-2, "cosine_lr": True},
    "2s n2 d2 lr2e-2 cos": {"two_sided": True, "n": 2, "draws": 2, "lr": 2e-2, "cosine_lr": True},
    "n2 d2 lr2e-2 cos": {"n": 2, "draws": 2, "lr": 2e-2, "cosine_lr": True},
    "2s n2 lr5e-2 cos": {"two_sided": True, "n": 2, "lr": 5e-2, "cosine_lr": True},
}


def t95(count: int) -> float:
    """Two-sided 95 % Student t quantile for count - 1 degrees of freedom."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
             12: 2.179, 14: 2.145, 17: 2.110, 20: 2.086, 25: 2.060, 30: 2.042}
    dof = max(1, count - 1)
    return table.get(dof) or table[min((k for k in table if k >= dof), default=30)]


def mean_ci(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return values[0], float("nan")
    return float(np.mean(values)), float(t95(len(values)) * np.std(values, ddof=1) / math.sqrt(len(values)))


def hollow_share(images: np.ndarray) -> float:
    """Share of images whose shape has the background colour in its middle (the centre of the shape's bounding box,
    a 3x3 patch): an outline, not a filled shape."""
    hollow = 0
    for image in images.astype(np.float64):
        mask = shape_mask(image)
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        cy, cx = int(round((ys.min() + ys.max()) / 2)), int(round((xs.min() + xs.max()) / 2))
        corners = np.concatenate([image[:2, :2], image[:2, -2:], image[-2:, :2], image[-2:, -2:]]).reshape(-1, 3)
        patch = image[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2].reshape(-1, 3).mean(axis=0)
        hollow += int(np.linalg.norm(patch - np.median(corners, axis=0)) < 40.0)
    return hollow / len(images)


class Measure:
    """Samples a token and scores the images (the evaluator stands in for CLIP / DINO)."""

    def __init__(self, pipe: TextToImage, samples: int) -> None:
        self.pipe, self.samples = pipe, samples
        self.evaluator = load_evaluator()
        self.held_out: dict[str, torch.Tensor] = {}

    def features(self, images: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(self.evaluator.features(torch.from_numpy(to_model_range(images))),
                                                 dim=1)

    def __call__(self, concept: str, vectors: np.ndarray | None, sample_seed: int) -> dict[str, float]:
        spec = CONCEPTS[concept]
        if concept not in self.held_out:
            self.held_out[concept] = self.features(concept_images(concept, 16, seed=1))
        word = spec.kind if vectors is None else TOKEN
        images = self.pipe.generate([f"a {word}"] * self.samples, steps=20, seed=sample_seed,
                                    learned=None if vectors is None else {TOKEN: vectors})
        kinds = self.evaluator.predict(images)["kind"]
        scores = {"kind": float(np.mean(kinds == ATTRIBUTES["kind"].index(spec.kind))),
                  "image_alignment": float((self.features(images) @ self.held_out[concept].T).mean()),
                  "hollow": hollow_share(images)}
        scores["colour_error"] = float(shape_colour_error(images, spec.rgb).mean()) if spec.rgb else None
        return scores


def zo_config(method: str, bundle_config: ZOConfig, search: dict[str, dict]) -> ZOConfig:
    if method == DEFAULT:
        return bundle_config
    if method in PAPER:
        return ZOConfig(mu=bundle_config.mu, **PAPER[method])
    return dataclasses.replace(ZOConfig(mu=bundle_config.mu), **search[method])


def step_seconds(problem: TokenLoss, config: ZOConfig, theta0: np.ndarray) -> float:
    """Seconds per step of this estimator on this backend (mean of a short run after a warm-up)."""
    trainer = ZOTrainer(problem, dataclasses.replace(config, steps=40, seed=10_000), theta0)
    logs = trainer.run(40)
    return float(np.mean([log.seconds for log in logs[5:]]))


def run_zo(problem: TokenLoss, config: ZOConfig, theta0: np.ndarray, steps: int,
           fractions: tuple[float, ...] = FRACTIONS) -> list[dict]:
    """Snapshots (step, seconds, forwards, vectors) at `fractions` of `steps`."""
    config, _ = fit_config(dataclasses.replace(config, steps=steps), problem.dim)
    trainer = ZOTrainer(problem, config, theta0)
    marks = sorted({max(1, round(f * steps)) for f in fractions})
    snapshots, elapsed = [], 0.0
    for mark in marks:
        start = time.perf_counter()
        trainer.run(mark)
        elapsed += time.perf_counter() - start
        snapshots.append({"step": mark, "seconds": elapsed, "forwards": mark * config.queries * config.draws,
                          "vectors": trainer.token().reshape(1, -1)})
    return snapshots


def run_ti(references: np.ndarray, kind: str, steps: int, seed: int,
           fractions: tuple[float, ...] = FRACTIONS) -> list[dict]:
    """Snapshots of one backprop TI run at `fractions` of `steps`; seconds exclude taking the snapshots."""
    marks = sorted({max(1, round(f * steps)) for f in fractions})
    snapshots: list[dict] = []
    clock = {"start": 0.0, "paused": 0.0}

    def on_vectors(step: int, vectors: np.ndarray) -> None:
        if step in marks:
            paused = time.perf_counter()
            snapshots.append({"step": step, "seconds": paused - clock["start"] - clock["paused"], "forwards": step,
                              "vectors": vectors})
            clock["paused"] += time.perf_counter() - paused

    model = load_tiny_sd()
    clock["start"] = time.perf_counter()
    textual_inversion(model, references, TOKEN, kind, steps, seed=seed, on_vectors=on_vectors)
    return snapshots


def summarize(rows: list[dict], methods: list[str]) -> dict:
    """Per method and snapshot index: mean ± 95 % of each metric over the runs (concept x seed)."""
    summary: dict = {}
    for method in methods:
        runs = [r for r in rows if r["method"] == method]
        points = sorted({r["snapshot"] for r in runs})
        summary[method] = []
        for point in points:
            at = [r for r in runs if r["snapshot"] == point]
            entry = {"snapshot": point, "runs": len(at)}
            for key in ("seconds", "forwards", "colour_error", "kind", "image_alignment"):
                entry[key] = mean_ci([r[key] for r in at if r.get(key) is not None])
            entry["hollow"] = mean_ci([r["hollow"] for r in at if CONCEPTS[r["concept"]].hollow])
            summary[method].append(entry)
    return summary


def target_checks(summary: dict) -> list[dict]:
    """Issue 22's targets, on the final snapshots (colour error averaged over the colour concepts)."""
    if not {"backprop TI", DEFAULT, "init word"} <= set(summary):
        return []
    ti, zo, init = (summary[m][-1] for m in ("backprop TI", DEFAULT, "init word"))
    ratio_error = zo["colour_error"][0] / ti["colour_error"][0]
    ratio_time = zo["seconds"][0] / ti["seconds"][0]
    drop = 1 - zo["colour_error"][0] / init["colour_error"][0]
    kind_gap = (ti["kind"][0] - zo["kind"][0]) * 100
    return [
        {"name": "ZO reaches backprop TI's final colour error within 10 %", "met": ratio_error <= 1.10,
         "detail": f"{zo['colour_error'][0]:.1f} vs {ti['colour_error'][0]:.1f} ({ratio_error - 1:+.0%})"},
        {"name": "in at most 2x TI's wall-clock", "met": ratio_time <= 2.0 + 1e-9,
         "detail": f"{zo['seconds'][0]:.2f} s vs {ti['seconds'][0]:.2f} s ({ratio_time:.2f}x)"},
        {"name": "ZO's kind accuracy within 10 points of TI's", "met": kind_gap <= 10.0,
         "detail": f"{zo['kind'][0]:.0%} vs {ti['kind'][0]:.0%} ({-kind_gap:+.0f} points)"},
        {"name": "ZO's colour error at least 65 % below the init word's", "met": drop >= 0.65,
         "detail": f"{zo['colour_error'][0]:.1f} vs {init['colour_error'][0]:.1f} ({-drop:+.0%})"},
    ]


def plot(summary: dict, path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no plot")
        return None
    panels = [("seconds", "colour_error", "colour error (CIEDE2000, lower is better)"),
              ("forwards", "colour_error", "colour error (CIEDE2000)"),
              ("seconds", "kind", "kind accuracy"), ("seconds", "image_alignment", "image alignment"),
              ("seconds", "hollow", "hollow concept: outlines drawn")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (x_key, y_key, label) in zip(axes, panels, strict=True):
        for method, points in summary.items():
            xs = [p[x_key][0] for p in points]
            ys = np.array([p[y_key][0] for p in points])
            errors = np.nan_to_num(np.array([p[y_key][1] for p in points]))
            if method == "init word":
                ax.axhline(ys[0], color="grey", linestyle=":", label=method)
                continue
            line, = ax.plot(xs, ys, marker="o", label=method)
            ax.fill_between(xs, ys - errors, ys + errors, color=line.get_color(), alpha=0.15)
        if y_key in ("kind", "hollow"):
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("wall-clock seconds" if x_key == "seconds" else "forward passes")
        ax.set_xscale("log")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("build/tiny-sd-w8.edge"))
    parser.add_argument("--backend", default="executorch")
    parser.add_argument("--threads", type=int, default=2, help="for both the runtime and torch (backprop TI)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16, help="images per measurement")
    parser.add_argument("--ti-steps", type=int, default=400)
    parser.add_argument("--budget", type=float, default=2.0, help="zeroth-order wall-clock, in multiples of TI's")
    parser.add_argument("--concepts", default=",".join(CONCEPTS))
    parser.add_argument("--methods", default=None, help="comma-separated; default: all (with --search: candidates)")
    parser.add_argument("--search", action="store_true", help="compare the estimator candidates (CANDIDATES)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="an earlier result of this script: its rows of every "
                        "method not run now are kept (rerun one method after changing it, e.g. --methods "
                        "'zo (default)')")
    args = parser.parse_args()
    results = Path(__file__).parent / "results"
    output = args.output or results / ("personalization_search.json" if args.search else "personalization.json")
    concepts = args.concepts.split(",")
    fractions = (0.5, 1.0) if args.search else FRACTIONS  # the search compares where the runs end
    if args.search:
        trained = args.methods.split(",") if args.methods else ["backprop TI", *CANDIDATES]
        methods = trained
    else:
        trained = args.methods.split(",") if args.methods else ["backprop TI", *PAPER, DEFAULT]
        methods = ["init word", *trained]
    if not (args.bundle / "manifest.json").exists():
        from edgesdk.exporting import export_model

        print(f"exporting {args.bundle} (w8)")
        export_model("tiny-sd", args.bundle, "executorch,onnx", quant="w8", log=lambda _m: None)
    torch.set_num_threads(args.threads)
    pipe = TextToImage(args.bundle, backend=args.backend, threads=args.threads)
    measure = Measure(pipe, args.samples)
    bundle_config = default_config(pipe.bundle)
    search = CANDIDATES if args.search else {}
    rows: list[dict] = []
    started = time.perf_counter()
    ti_seconds: list[float] = []
    # TI's wall-clock sets every zeroth-order budget: one timing run first (it also warms torch up), or the TI runs
    # of the --keep result, so that a rerun method gets the budget the kept ones had
    earlier = json.loads(args.keep.read_text()) if args.keep is not None else None
    kept_ti = [r["seconds"] for r in (earlier or {}).get("rows", []) if r["method"] == "backprop TI"
               and r["snapshot"] == len(fractions) - 1]
    if kept_ti and "backprop TI" not in trained:
        ti_seconds.extend(kept_ti)
    else:
        timing = run_ti(concept_images(concepts[0], 5, seed=0), CONCEPTS[concepts[0]].kind, args.ti_steps, seed=99)
        ti_seconds.append(timing[-1]["seconds"])
    for concept in concepts:
        spec = CONCEPTS[concept]
        references = concept_images(concept, 5, seed=0)
        problem = TokenLoss(pipe, references, TOKEN)
        theta0 = problem.initial_vector(spec.kind)
        for seed in range(args.seeds):
            sample_seed = 1000 + 97 * seed
            runs: dict[str, list[dict]] = {}
            if "init word" in methods and not (earlier and any(r["method"] == "init word" for r in earlier["rows"])):
                runs["init word"] = [{"step": 0, "seconds": 0.0, "forwards": 0, "vectors": None}]
            if "backprop TI" in trained:
                runs["backprop TI"] = run_ti(references, spec.kind, args.ti_steps, seed, fractions)
                ti_seconds.append(runs["backprop TI"][-1]["seconds"])
            budget_s = args.budget * float(np.mean(ti_seconds))
            for method in trained:
                if method == "backprop TI":
                    continue
                config = dataclasses.replace(zo_config(method, bundle_config, search), seed=seed)
                per_step = step_seconds(problem, fit_config(config, problem.dim)[0], theta0)
                runs[method] = run_zo(problem, config, theta0, max(4, int(budget_s / per_step)), fractions)
            for method, snapshots in runs.items():
                for index, snap in enumerate(snapshots):
                    scores = measure(concept, snap["vectors"], sample_seed)
                    rows.append({"concept": concept, "seed": seed, "method": method, "snapshot": index,
                                 "step": snap["step"], "seconds": snap["seconds"], "forwards": snap["forwards"],
                                 **scores})
                last = rows[-1]
                colour = f"{last['colour_error']:5.1f}" if last["colour_error"] is not None else "  -  "
                print(f"{concept:13s} seed {seed} {method:24s} {last['step']:5d} steps {last['seconds']:6.1f} s  "
                      f"colour {colour}  kind {last['kind']:4.0%}  align {last['image_alignment']:.3f}  hollow "
                      f"{last['hollow']:4.0%}   [{time.perf_counter() - started:5.0f} s]", flush=True)
            write_json(output, {"partial": True, "rows": rows})  # a long run keeps what it measured

    merged_from = None
    if earlier is not None:
        measured = {r["method"] for r in rows}
        kept = [r for r in earlier["rows"] if r["method"] not in measured and r["concept"] in concepts]
        rows = kept + rows
        methods = [m for m in ["init word", "backprop TI", *PAPER, DEFAULT, *CANDIDATES]
                   if any(r["method"] == m for r in rows)]
        merged_from = {"file": str(args.keep), "command": earlier.get("command"), "kept_rows": len(kept)}
    summary = summarize(rows, methods)
    print(f"\n{'method':24s} {'seconds':>14s} {'forwards':>9s} {'colour error':>14s} {'kind':>12s} "
          f"{'image align':>14s} {'hollow':>12s}   (final snapshot; mean ± 95 % over concepts x seeds)")
    for method in methods:
        final = summary[method][-1]

        def fmt(key: str, scale: float = 1.0, digits: int = 1, entry: dict = final) -> str:
            mean, ci = entry[key]
            return "-" if not math.isfinite(mean) else f"{mean * scale:.{digits}f} ± {ci * scale:.{digits}f}"

        print(f"{method:24s} {fmt('seconds', digits=2):>14s} {final['forwards'][0]:9.0f} {fmt('colour_error'):>14s} "
              f"{fmt('kind', 100, 0):>12s} {fmt('image_alignment', 1, 3):>14s} {fmt('hollow', 100, 0):>12s}")
    checks = target_checks(summary) if not args.search else []
    if checks:
        print()
        for check in checks:
            print(f"{check['name']}: {check['detail']} -> {'met' if check['met'] else 'MISSED'}")
    title = (f"{'estimator search' if args.search else 'time to quality'}: {len(concepts)} concepts x {args.seeds} "
             f"seeds, {args.samples} samples each; {args.bundle.name} on {args.backend}, {args.threads} threads")
    picture = plot(summary, output.with_suffix(".png"), title)
    write_json(output, {"rows": rows, "summary": summary, "checks": checks, "default_config":
                        dataclasses.asdict(bundle_config), "ti_steps": args.ti_steps, "budget": args.budget,
                        "threads": args.threads, "samples": args.samples, "seeds": args.seeds, "concepts": concepts,
                        "bundle": str(args.bundle), "backend": args.backend, "plot": str(picture),
                        "seconds_total": time.perf_counter() - started, "merged_from": merged_from,
                        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)})
    print(f"wrote {output}" + (f" and {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
