"""`make demo`: export the shipped tiny-sd to ExecuTorch and ONNX, sample on both, print parity and accuracy.

Everything it writes goes under --workdir (default build/): the bundle, the PNG grids and a JSON report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgesdk.data.concepts import CONCEPTS
from edgesdk.evaluate import prompt_accuracy
from edgesdk.export.parity import compare
from edgesdk.exporting import export_model
from edgesdk.reporting import bundle_summary, summary_tables, write_json
from edgesdk.runtime import EdgeSDKError
from edgesdk.runtime.image import save_grid
from edgesdk.runtime.metrics import shape_colour_error
from edgesdk.runtime.pipeline import TextToImage, to_uint8

DEMO_PROMPTS = [
    "a large red star on a blue background",
    "a small yellow circle on a black background",
    "a large green triangle on a white background",
    "a purple square at the top on a yellow background",
    "a large white cross on a orange background",
]


def eager_reference(bundle_dir: Path, prompts: list[str], steps: int, seed: int) -> np.ndarray:
    """The same numpy sampler driven by eager PyTorch modules: the reference the exported files must match."""
    from edgesdk.families.tiny_sd import eager_session_factory

    pipe = TextToImage(bundle_dir, backend="eager", session_factory=eager_session_factory())
    return pipe.generate(prompts, steps=steps, seed=seed, return_float=True)


CONCEPT_DIR = Path(__file__).parent / "concepts" / "pink-star"
PERSONALIZE_RECIPE = "w8"
PERSONALIZE_STEPS = 3000  # ~14 s on 2 cores; at 2000 the default estimator had not yet moved the colour (63 -> 64)


def personalize_demo(workdir: Path) -> dict:
    """Export the int8 bundle, learn <pinkstar> from the shipped reference images, grid before / after."""
    from edgesdk.runtime.personalize import personalize

    bundle_dir = workdir / f"tiny-sd-{PERSONALIZE_RECIPE}.edge"
    if not (bundle_dir / "manifest.json").exists():
        export_model("tiny-sd", bundle_dir, "executorch,onnx", quant=PERSONALIZE_RECIPE, check_quality=False,
                     log=lambda _m: None)
    token_path = workdir / "pinkstar.safetensors"
    start = time.perf_counter()
    result = personalize(bundle_dir, CONCEPT_DIR, "<pinkstar>", "star", token_path, steps=PERSONALIZE_STEPS,
                         backend="executorch", overwrite=True)
    elapsed = time.perf_counter() - start
    pipe = TextToImage(bundle_dir, backend="executorch")
    prompts = ["a star", "a star on a blue background", "a large star on a white background", "a small star",
               "a star at the top on a black background", "a large star on a green background"]
    before = pipe.generate(prompts, steps=25, seed=7)
    after = pipe.generate([p.replace("star", "<pinkstar>") for p in prompts], steps=25, seed=7,
                          learned={"<pinkstar>": result.vectors})
    grid_path = save_grid(np.concatenate([before, after]), workdir / "demo-personalization.png", columns=len(prompts))
    # how far the drawn star's colour is from the concept's pink: CIEDE2000 over the shape's pixels (~1 is a
    # just-noticeable difference; the reference renders themselves score 2-8 from their anti-aliased edges)
    pink = CONCEPTS["pink-star"].rgb
    error_before, error_after = (float(shape_colour_error(images, pink).mean()) for images in (before, after))
    print(f"    {result.steps} steps in {elapsed:.1f} s ({result.steps / elapsed:.1f} step/s), final loss "
          f"{result.final_loss:.4f}; token -> {token_path}; before (top, 'star') / after (bottom, '<pinkstar>') "
          f"-> {grid_path}")
    print(f"    colour error of the drawn star vs the concept's pink (CIEDE2000, mean over {len(prompts)} images): "
          f"'star' {error_before:.1f} -> '<pinkstar>' {error_after:.1f} ({error_after / error_before - 1:+.0%})")
    return {"steps": result.steps, "seconds": elapsed, "token": str(token_path), "grid": str(grid_path),
            "colour_error_ciede2000": {"before": error_before, "after": error_after}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--samples", type=int, default=100, help="samples per backend for prompt accuracy")
    args = parser.parse_args()
    t0 = time.perf_counter()
    bundle_dir = args.workdir / "tiny-sd.edge"

    print(f"[1/5] exporting the shipped tiny-sd to ExecuTorch and ONNX -> {bundle_dir}")
    export_model("tiny-sd", bundle_dir, "executorch,onnx", overwrite=True, log=lambda m: print("   ", m))
    summary_tables(bundle_summary(bundle_dir))

    print("[2/5] sampling the demo prompts on both backends (DDIM, 25 steps, seeds 0..4)")
    report: dict = {"prompts": DEMO_PROMPTS, "image_parity_vs_eager": {}, "prompt_accuracy": {}}
    reference = eager_reference(bundle_dir, DEMO_PROMPTS, args.steps, seed=0)
    for backend in ("executorch", "onnx"):
        start = time.perf_counter()
        pixels = TextToImage(bundle_dir, backend=backend).generate(DEMO_PROMPTS, steps=args.steps, seed=0,
                                                                   return_float=True)
        elapsed = time.perf_counter() - start
        path = save_grid(to_uint8(pixels), args.workdir / f"demo-{backend}.png", columns=len(DEMO_PROMPTS))
        figures = compare(reference, pixels)
        report["image_parity_vs_eager"][backend] = figures
        print(f"    {backend:10s} {elapsed:5.2f} s for {len(pixels)} images -> {path}; images vs eager PyTorch "
              f"(same seed): max-abs {figures['max_abs']:.2e} = {figures['rel_max_abs']:.2e} of the range")

    print(f"[3/5] prompt accuracy on {args.samples} samples per backend (evaluator trained on real renders only)")
    for backend in ("executorch", "onnx"):
        acc, _, _ = prompt_accuracy(bundle_dir, backend=backend, samples=args.samples, steps=args.steps)
        report["prompt_accuracy"][backend] = acc.to_dict()
        print(f"    {backend:10s} " + ", ".join(f"{k} {v:.1%}" for k, v in acc.accuracy.items())
              + f"  ({acc.seconds:.1f} s)")

    print(f"[4/5] personalizing on the device: a new word <pinkstar> from {CONCEPT_DIR} ({PERSONALIZE_STEPS} "
          f"zeroth-order steps, {PERSONALIZE_RECIPE} bundle, ExecuTorch, no backpropagation)")
    report["personalization"] = personalize_demo(args.workdir)

    report_path = write_json(args.workdir / "demo-report.json", report)
    print(f"[5/5] done in {time.perf_counter() - t0:.0f} s. Images: {args.workdir}/demo-executorch.png, "
          f"{args.workdir}/demo-onnx.png; report: {report_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
