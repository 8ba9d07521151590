"""Personalization quality: five concepts the vocabulary cannot name, six methods, one run.

    python benchmarks/personalization.py [--zo-steps 1500] [--ti-steps 500] [--bundle build/tiny-sd-w8.edge]

Concepts: a shape kind in a colour no caption names (pink star, teal circle, brown square, grey triangle, lime
cross), 5 reference renders each; the initializer word is the kind. Methods: the initializer word alone,
backprop Textual Inversion (fp32 eager, autograd), and zeroth-order on the exported int8 (w8) bundle through the
torch-free runtime: plain, +SG, +PUTS, +SG+PUTS. Every method samples the same prompts with the same seeds.

Metrics (the in-project evaluator stands in for CLIP/DINO):
- image alignment: cosine of evaluator features between generated images and the concept's held-out renders
  (mean over pairs), with the renders against themselves as the ceiling;
- concept colour error: distance (0-255 RGB) between the generated shape's colour and the concept's colour;
- kind: share of images whose shape the evaluator reads as the concept's kind;
- text alignment: share of "... on a <colour> background" prompts whose background the evaluator reads right.
Writes benchmarks/results/personalization.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from edgesdk.data.concepts import CONCEPTS, concept_images
from edgesdk.data.shapes import ATTRIBUTES, COLOUR_NAMES, UNNAMED_COLOURS, to_model_range
from edgesdk.reporting import write_json
from edgesdk.runtime.personalize import TokenLoss, default_mu, fit_config
from edgesdk.runtime.pipeline import TextToImage
from edgesdk.runtime.zo import ZOConfig, ZOTrainer
from edgesdk.train.personalization_baselines import textual_inversion
from edgesdk.zoo.evaluator import load_evaluator
from edgesdk.zoo.tiny_sd import load_tiny_sd

ZO_METHODS = {"zo": {"sg": False, "puts": False}, "zo+sg": {"sg": True, "puts": False},
              "zo+puts": {"sg": False, "puts": True}, "zo+sg+puts": {"sg": True, "puts": True}}
BACKGROUNDS = ("blue", "green", "white", "black")
TOKEN = "<concept>"


def shape_colour(images: np.ndarray) -> np.ndarray:
    """(N, 3): mean colour of each image's foreground, the pixels far from the border's median colour."""
    colours = []
    for image in images.astype(np.float64):
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        background = np.median(border, axis=0)
        distance = np.linalg.norm(image - background, axis=2)
        mask = distance > max(40.0, np.percentile(distance, 80))
        colours.append(image[mask].mean(axis=0) if mask.any() else background)
    return np.array(colours)


def evaluate(evaluator: torch.nn.Module, generated: np.ndarray, background_images: np.ndarray,
             references: np.ndarray, kind: str, colour: str) -> dict[str, float]:
    with torch.no_grad():
        gen = torch.nn.functional.normalize(evaluator.features(torch.from_numpy(to_model_range(generated))), dim=1)
        ref = torch.nn.functional.normalize(evaluator.features(torch.from_numpy(to_model_range(references))), dim=1)
    kinds = evaluator.predict(generated)["kind"]
    predicted_backgrounds = evaluator.predict(background_images)["background"]
    asked = np.array([COLOUR_NAMES.index(b) for b in BACKGROUNDS for _ in range(len(background_images)
                                                                                // len(BACKGROUNDS))])
    target = np.array(UNNAMED_COLOURS[colour], dtype=np.float64)
    return {"image_alignment": float((gen @ ref.T).mean()),
            "colour_error": float(np.linalg.norm(shape_colour(generated) - target, axis=1).mean()),
            "kind": float(np.mean(kinds == ATTRIBUTES["kind"].index(kind))),
            "text_alignment": float(np.mean(predicted_backgrounds == asked))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("build/tiny-sd-w8.edge"))
    parser.add_argument("--backend", default="executorch")
    parser.add_argument("--zo-steps", type=int, default=1500)
    parser.add_argument("--ti-steps", type=int, default=500)
    parser.add_argument("--images", type=int, default=8, help="generated images per prompt")
    parser.add_argument("--seeds", type=int, default=1, help="personalization seeds per concept and method")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "personalization.json")
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").exists():
        from edgesdk.exporting import export_model

        print(f"exporting {args.bundle} (w8)")
        export_model("tiny-sd", args.bundle, "executorch,onnx", quant="w8", log=lambda _m: None)

    pipe = TextToImage(args.bundle, backend=args.backend)
    evaluator = load_evaluator()
    rows = []
    for concept, (kind, colour) in CONCEPTS.items():
        references, held_out = concept_images(concept, 5, seed=0), concept_images(concept, 16, seed=1)
        learned: dict[str, np.ndarray | None] = {"init word": None}
        timings: dict[str, float] = {}
        for seed in range(args.seeds):
            start = time.perf_counter()
            ti = textual_inversion(load_tiny_sd(), references, TOKEN, kind, args.ti_steps, seed=seed)
            timings["backprop TI"] = time.perf_counter() - start
            learned[f"backprop TI/{seed}"] = ti
            for name, switches in ZO_METHODS.items():
                problem = TokenLoss(pipe, references, TOKEN)
                config, _ = fit_config(ZOConfig(seed=seed, mu=default_mu(pipe.bundle), **switches), problem.dim)
                trainer = ZOTrainer(problem, config, problem.initial_vector(kind))
                start = time.perf_counter()
                trainer.run(args.zo_steps)
                timings[name] = time.perf_counter() - start
                learned[f"{name}/{seed}"] = trainer.token().reshape(1, -1)
        for key, vectors in learned.items():
            method = key.split("/")[0]
            word = kind if vectors is None else TOKEN
            extra = {} if vectors is None else {TOKEN: vectors}
            prompts = [f"a {word}"] * args.images
            generated = pipe.generate(prompts, steps=20, seed=1000, learned=extra or None)
            per_bg = max(1, args.images // len(BACKGROUNDS))
            bg_prompts = [f"a {word} on a {b} background" for b in BACKGROUNDS for _ in range(per_bg)]
            with_backgrounds = pipe.generate(bg_prompts, steps=20, seed=2000, learned=extra or None)
            scores = evaluate(evaluator, generated, with_backgrounds, held_out, kind, colour)
            rows.append({"concept": concept, "method": method, "key": key, **scores,
                         "seconds": timings.get(method)})
            print(f"{concept:14s} {key:16s} image {scores['image_alignment']:.3f}  colour err "
                  f"{scores['colour_error']:5.1f}  kind {scores['kind']:.0%}  text {scores['text_alignment']:.0%}",
                  flush=True)
        with torch.no_grad():
            feats = torch.nn.functional.normalize(evaluator.features(torch.from_numpy(to_model_range(held_out))),
                                                  dim=1)
        rows.append({"concept": concept, "method": "ceiling (held-out renders)",
                     "image_alignment": float((feats @ feats.T).mean()), "colour_error": float(np.linalg.norm(
                         shape_colour(held_out) - np.array(UNNAMED_COLOURS[colour]), axis=1).mean())})

    methods = ["init word", "backprop TI", *ZO_METHODS, "ceiling (held-out renders)"]
    summary = {}
    print(f"\n{'method':28s} image align  colour err  kind   text   (mean over {len(CONCEPTS)} concepts)")
    for method in methods:
        chosen = [r for r in rows if r["method"] == method]
        summary[method] = {k: float(np.mean([r[k] for r in chosen])) for k in
                           ("image_alignment", "colour_error", "kind", "text_alignment") if k in chosen[0]}
        s = summary[method]
        print(f"{method:28s} {s['image_alignment']:10.3f}  {s['colour_error']:10.1f}  "
              f"{s.get('kind', float('nan')):5.0%}  {s.get('text_alignment', float('nan')):5.0%}")
    ti, plain, full = (summary[m]["image_alignment"] for m in ("backprop TI", "zo", "zo+sg+puts"))
    checks = [("ZO+SG+PUTS beats ZO plain on image alignment", full > plain, f"{full:.3f} vs {plain:.3f}"),
              ("ZO+SG+PUTS reaches >= 90 % of backprop TI's image alignment", full >= 0.9 * ti,
               f"{full / ti:.1%} of {ti:.3f}")]
    print()
    for name, met, detail in checks:
        print(f"{name}: {detail} -> {'met' if met else 'MISSED'}")
    write_json(args.output, {"rows": rows, "summary": summary, "checks": [
        {"name": n, "met": bool(m), "detail": d} for n, m, d in checks], "zo_steps": args.zo_steps,
        "ti_steps": args.ti_steps, "bundle": str(args.bundle), "backend": args.backend,
        "command": "python benchmarks/personalization.py"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
