"""Peak memory and step time of personalization, each method in its own process.

    python benchmarks/personalization_memory.py [--steps 4] [--backends onnx,executorch]

Methods: zeroth-order on the int8 (w8) bundle through the runtime, as `edgesdk personalize` runs it (lean
sessions), on ONNX Runtime (the process imports no torch) and on ExecuTorch (its Python binding imports torch,
which a phone linking the C++ runtime does not: the `after imports` column shows that floor); backprop Textual
Inversion (fp32 eager, autograd through the frozen model); full fine-tune of the UNet (fp32, Adam). Sizes: the
shipped tiny-sd, and a scaled-up tiny-sd (UNet channels 384/768, >= 100 M UNet parameters, random weights).
Peak RSS is VmHWM of the child process, read after the training steps.

Step time: the n+1 = 3 queries of a ZO step as one batch-3 forward vs three batch-1 forwards. The bundles here
carry ExecuTorch methods at batch 1 and 3 besides the sampling batch 2, so both sides run an exact-batch method.
Writes benchmarks/results/personalization_memory.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch

from edgesdk.data.shapes import vocabulary
from edgesdk.reporting import write_json

CHILD = r"""
import json, sys, time
method, bundle, weights, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
from edgesdk.runtime.bench import peak_rss_mb, resident_mb
from edgesdk.data.concepts import concept_images
images = concept_images("pink-star", 5)
result = {}
if method.startswith("zo-"):
    import numpy as np
    from edgesdk.runtime.personalize import TokenLoss
    from edgesdk.runtime.pipeline import TextToImage
    from edgesdk.runtime.zo import ZOConfig, ZOTrainer, perturbed_batch
    pipe = TextToImage(bundle, backend=method[3:], threads=2, lean_memory=True)  # as `edgesdk personalize` opens it
    if method == "zo-executorch":
        import executorch.runtime, torch  # noqa: F401  (the binding's own floor, before any model loads)
    result["after_imports_mb"] = resident_mb()
    problem = TokenLoss(pipe, images, "<c>")
    trainer = ZOTrainer(problem, ZOConfig(mu=1e-1), problem.initial_vector("star"))
    trainer.run(1)  # warm-up
    start = time.perf_counter(); trainer.run(1 + steps); result["step_s"] = (time.perf_counter() - start) / steps
    result["peak_rss_mb"] = peak_rss_mb()  # before the batch-1 methods below load their own weights
    rng = np.random.default_rng(0)
    sample = problem.draw(rng, (500, 900))
    thetas = perturbed_batch(trainer.theta, rng.standard_normal((2, problem.dim)), 1e-1)
    for row in thetas:
        problem.losses(sample, row[None])  # warm-up (loads the batch-1 methods)
    repeats = max(steps, 10)
    batched, one_by_one = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both sides alike
        start = time.perf_counter(); problem.losses(sample, thetas); batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for row in thetas:
            problem.losses(sample, row[None])
        one_by_one.append(time.perf_counter() - start)
    result["queries_batched_s"] = float(np.median(batched))
    result["queries_one_by_one_s"] = float(np.median(one_by_one))
else:
    from edgesdk.train.personalization_baselines import finetune_unet, textual_inversion
    from edgesdk.zoo.tiny_sd import load_tiny_sd
    result["after_imports_mb"] = resident_mb()
    model = load_tiny_sd(None if weights == "-" else __import__("pathlib").Path(weights))
    start = time.perf_counter()
    if method == "ti":
        textual_inversion(model, images, "<c>", "star", steps)
    else:
        finetune_unet(model, images, "star", steps)
    result["step_s"] = (time.perf_counter() - start) / steps
    result["peak_rss_mb"] = peak_rss_mb()
print(json.dumps(result))
"""


def scaled_weights(path: Path) -> Path:
    """A tiny-sd with a >= 100 M-parameter UNet and random weights (memory only; it draws noise)."""
    from edgesdk.train.common import save_weights
    from edgesdk.zoo.tiny_sd import TinySD, TinySDConfig

    if path.exists():
        return path
    torch.manual_seed(0)
    model = TinySD(TinySDConfig(unet_channels=(384, 768), time_dim=1024), vocabulary())
    save_weights(model.state_dict(), path, {"family": "tiny-sd", "config": model.config.to_dict(),
                                            "vocabulary": model.vocabulary.words})
    return path


def int8_bundle(weights: Path | None, out: Path, backends: list[str]) -> Path:
    """w8 bundle (int8 weights, no calibration), ExecuTorch methods at batch 1, 2 and 3, no quality hook."""
    from edgesdk.export.pipeline import export_bundle
    from edgesdk.families import ZO_BATCH
    from edgesdk.families.tiny_sd import tiny_sd_assets, tiny_sd_components, tiny_sd_metadata
    from edgesdk.quant.configs import W8Config
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.zoo.tiny_sd import load_tiny_sd

    if (out / "manifest.json").exists():
        existing = Bundle.open(out)
        methods = existing.component("unet").static_shapes.get("executorch", {}).get("methods", {})
        if set(backends) <= set(existing.targets()) and ("executorch" not in backends or {"1", "3"} <= set(methods)):
            return out
    model = load_tiny_sd(weights)
    components = [dataclasses.replace(c, extra_batches=(1, ZO_BATCH)) if c.extra_batches else c
                  for c in tiny_sd_components(model)]
    print(f"exporting {out} ({', '.join(backends)}) ...", flush=True)
    return export_bundle(components, family="tiny-sd", model_meta=tiny_sd_metadata(model),
                         assets=tiny_sd_assets(model), targets=backends, output=out, recipe=W8Config(), overwrite=True,
                         log=lambda _m: None)


def run_child(method: str, bundle: Path, weights: Path | None, steps: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, method, str(bundle), str(weights or "-"), str(steps)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


NAMES = {"zo-onnx": "ZO, int8, ONNX Runtime", "zo-executorch": "ZO, int8, ExecuTorch",
         "ti": "backprop TI, fp32", "ft": "full UNet fine-tune, fp32"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--backends", default="onnx,executorch", help="runtimes for the ZO rows")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "personalization_memory.json")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in ("onnx", "executorch") for b in backends):
        raise SystemExit(f"--backends: onnx and/or executorch, got {args.backends!r}")

    sizes = {"tiny-sd": None, "scaled (UNet 384/768)": scaled_weights(args.workdir / "scaled-sd.safetensors")}
    rows = []
    for size, weights in sizes.items():
        from edgesdk.zoo.tiny_sd import load_tiny_sd

        unet_params = sum(p.numel() for p in load_tiny_sd(weights).unet.parameters())
        bundle = int8_bundle(weights, args.workdir / ("personalize-w8.edge" if weights is None
                                                      else "personalize-scaled-w8.edge"), backends)
        for method in [f"zo-{b}" for b in backends] + ["ti", "ft"]:
            result = run_child(method, bundle, weights, args.steps)
            rows.append({"size": size, "unet_params": unet_params, "method": method, **result})
            print(f"{size:22s} UNet {unet_params / 1e6:6.1f} M  {method:13s} peak {result['peak_rss_mb']:7.0f} MB  "
                  f"step {result['step_s'] * 1000:8.1f} ms", flush=True)
    print(f"\n{'size':22s} {'method':27s} {'peak RSS MB':>11s} {'after imports':>13s} {'step ms':>9s} "
          f"{'n+1 batched ms':>14s} {'one by one ms':>13s}")
    for r in rows:
        timing = (f"{r['queries_batched_s'] * 1000:14.1f} {r['queries_one_by_one_s'] * 1000:13.1f}"
                  if "queries_batched_s" in r else "")
        print(f"{r['size']:22s} {NAMES[r['method']]:27s} {r['peak_rss_mb']:11.0f} {r['after_imports_mb']:13.0f} "
              f"{r['step_s'] * 1000:9.1f} {timing}")
    checks = []
    larger = list(sizes)[-1]
    peak = {r["method"]: r["peak_rss_mb"] for r in rows if r["size"] == larger}
    for method in [f"zo-{b}" for b in backends]:
        checks += [(f"{NAMES[method]} >= 3x below backprop TI at the larger size", peak["ti"] / peak[method], 3.0),
                   (f"{NAMES[method]} >= 10x below full fine-tune at the larger size", peak["ft"] / peak[method], 10.0)]
    for r in rows:
        if "queries_batched_s" in r:
            checks.append((f"batched n+1 queries >= 1.5x faster than one by one ({NAMES[r['method']]}, {r['size']})",
                           r["queries_one_by_one_s"] / r["queries_batched_s"], 1.5))
    print()
    for name, value, target in checks:
        verdict = "met" if value >= target else f"MISSED by {target - value:.2f}"
        print(f"{name}: {value:.2f} (target {target}) -> {verdict}")
    write_json(args.output, {"rows": rows, "steps": args.steps, "checks": [
        {"name": n, "value": v, "target": t, "met": v >= t} for n, v, t in checks],
        "command": f"python benchmarks/personalization_memory.py --steps {args.steps} --backends {args.backends}"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
