"""Sampling latency of tiny-sd: eager PyTorch vs ONNX Runtime vs ExecuTorch, in one run, same sampler loop.

    python benchmarks/sampling.py [--bundle build/tiny-sd.edge] [--steps 25] [--runs 5]

Every backend drives the same numpy DDIM loop of the runtime (eager PyTorch through the reference session),
so the differences are the graphs' speed. Prints a table and writes benchmarks/results/sampling.json.
Exports the shipped model first if the bundle does not exist.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from edgesdk.exporting import export_model
from edgesdk.families.tiny_sd import eager_session_factory
from edgesdk.reporting import write_json
from edgesdk.runtime.pipeline import TextToImage

PROMPT = "a large red star on a blue background"


def make_pipeline(bundle: Path, backend: str) -> TextToImage:
    if backend != "eager":
        return TextToImage(bundle, backend=backend)
    return TextToImage(bundle, backend="eager", session_factory=eager_session_factory())


def measure(pipe: TextToImage, steps: int, runs: int, batch: int) -> dict:
    prompts = [PROMPT] * batch
    pipe.generate(prompts, steps=steps, seed=0)  # warm-up
    totals, unet = [], []
    for run in range(runs):
        start = time.perf_counter()
        pipe.generate(prompts, steps=steps, seed=run)
        totals.append(time.perf_counter() - start)
        unet.append(pipe.timings["unet"]["seconds"] / steps)
    return {"batch": batch, "per_image_ms": statistics.median(totals) * 1000 / batch,
            "per_call_ms": statistics.median(totals) * 1000, "per_step_ms": statistics.median(unet) * 1000,
            "p90_call_ms": sorted(totals)[int(0.9 * (len(totals) - 1))] * 1000, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("build/tiny-sd.edge"))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "sampling.json")
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").exists():
        print(f"exporting the shipped tiny-sd to {args.bundle} first")
        export_model("tiny-sd", args.bundle, "executorch,onnx", log=lambda _m: None)
    rows = []
    for backend in ("eager", "onnx", "executorch"):
        for batch in (1, 4):
            result = {"backend": backend, **measure(make_pipeline(args.bundle, backend), args.steps, args.runs,
                                                    batch)}
            rows.append(result)
            print(f"{backend:10s} batch {batch}: {result['per_step_ms']:7.2f} ms per denoising step (UNet on the "
                  f"batch's CFG pairs), {result['per_image_ms']:8.1f} ms per image (all {args.steps} steps, "
                  f"text encoder, decoder)")
    eager = {r["batch"]: r for r in rows if r["backend"] == "eager"}
    print(f"\nDDIM {args.steps} steps, guidance on; median of {args.runs} runs")
    print("backend     batch  ms/step  ms/image  speed-up vs eager")
    for r in rows:
        print(f"{r['backend']:10s}  {r['batch']:5d}  {r['per_step_ms']:7.2f}  {r['per_image_ms']:8.1f}  "
              f"{eager[r['batch']]['per_image_ms'] / r['per_image_ms']:.2f}x")
    write_json(args.output, {"steps": args.steps, "sampler": "ddim", "prompt": PROMPT, "rows": rows,
                             "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                                         "processor": platform.processor()},
                             "command": "python benchmarks/sampling.py"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
