"""`make demo`: export the shipped tiny-sd to ExecuTorch and ONNX, sample on both, print parity and accuracy.

Everything it writes goes under --workdir (default build/): the bundle, the PNG grids and a JSON report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgesdk.evaluate import prompt_accuracy
from edgesdk.export.parity import compare
from edgesdk.exporting import export_model
from edgesdk.reporting import bundle_summary, summary_tables, write_json
from edgesdk.runtime import EdgeSDKError
from edgesdk.runtime.image import save_grid
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
    from edgesdk.exporting import eager_session_factory

    pipe = TextToImage(bundle_dir, backend="eager", session_factory=eager_session_factory())
    return pipe.generate(prompts, steps=steps, seed=seed, return_float=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--samples", type=int, default=100, help="samples per backend for prompt accuracy")
    args = parser.parse_args()
    t0 = time.perf_counter()
    bundle_dir = args.workdir / "tiny-sd.edge"

    print(f"[1/4] exporting the shipped tiny-sd to ExecuTorch and ONNX -> {bundle_dir}")
    export_model("tiny-sd", bundle_dir, "executorch,onnx", overwrite=True, log=lambda m: print("   ", m))
    summary_tables(bundle_summary(bundle_dir))

    print("[2/4] sampling the demo prompts on both backends (DDIM, 25 steps, seeds 0..4)")
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

    print(f"[3/4] prompt accuracy on {args.samples} samples per backend (evaluator trained on real renders only)")
    for backend in ("executorch", "onnx"):
        acc, _, _ = prompt_accuracy(bundle_dir, backend=backend, samples=args.samples, steps=args.steps)
        report["prompt_accuracy"][backend] = acc.to_dict()
        print(f"    {backend:10s} " + ", ".join(f"{k} {v:.1%}" for k, v in acc.accuracy.items())
              + f"  ({acc.seconds:.1f} s)")

    report_path = write_json(args.workdir / "demo-report.json", report)
    print(f"[4/4] done in {time.perf_counter() - t0:.0f} s. Images: {args.workdir}/demo-executorch.png, "
          f"{args.workdir}/demo-onnx.png; report: {report_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
