"""Peak memory and step time of personalization, each method in its own process.

    python benchmarks/personalization_memory.py [--steps 4]

Methods: zeroth-order on the int8 (w8) ONNX bundle through the torch-free runtime; backprop Textual Inversion
(fp32 eager, autograd through the frozen model); full fine-tune of the UNet (fp32, Adam). Sizes: the shipped
tiny-sd, and a scaled-up tiny-sd (UNet channels 384/768, >= 100 M UNet parameters, random weights). Peak RSS is
VmHWM of the child process (a PyTorch trainer includes torch itself; the runtime process imports no torch).
Also the ZO step time with the n+1 = 3 queries batched into one forward vs run one by one.
Writes benchmarks/results/personalization_memory.json.
"""

from __future__ import annotations

import argparse
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
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from edgesdk.data.concepts import concept_images
images = concept_images("pink-star", 5)
result = {}
if method.startswith("zo"):
    import numpy as np
    from edgesdk.runtime.personalize import TokenLoss
    from edgesdk.runtime.pipeline import TextToImage
    from edgesdk.runtime.zo import ZOConfig, ZOTrainer, perturbed_batch
    problem = TokenLoss(TextToImage(bundle, backend="onnx", threads=2), images, "<c>")
    trainer = ZOTrainer(problem, ZOConfig(), problem.initial_vector("star"))
    trainer.run(1)  # warm-up
    start = time.perf_counter(); trainer.run(1 + steps); batched = (time.perf_counter() - start) / steps
    rng = np.random.default_rng(0)
    sample = problem.draw(rng, (500, 900))
    thetas = perturbed_batch(trainer.theta, rng.standard_normal((2, problem.dim)), 1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        problem.losses(sample, thetas)
    one_forward = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        for row in thetas:
            problem.losses(sample, row[None])
    one_by_one = (time.perf_counter() - start) / steps
    result = {"step_s": batched, "queries_batched_s": one_forward, "queries_one_by_one_s": one_by_one}
else:
    from edgesdk.train.personalization_baselines import finetune_unet, textual_inversion
    from edgesdk.zoo.tiny_sd import load_tiny_sd
    model = load_tiny_sd(None if weights == "-" else __import__("pathlib").Path(weights))
    start = time.perf_counter()
    if method == "ti":
        textual_inversion(model, images, "<c>", "star", steps)
    else:
        finetune_unet(model, images, "star", steps)
    result = {"step_s": (time.perf_counter() - start) / steps}
result["peak_rss_mb"] = peak_mb()
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


def int8_bundle(weights: Path | None, out: Path) -> Path:
    """w8 ONNX bundle (int8 weights, no calibration needed), without the sampling-quality hook."""
    from edgesdk.export.pipeline import export_bundle
    from edgesdk.exporting import tiny_sd_assets, tiny_sd_components, tiny_sd_metadata
    from edgesdk.quant.recipes import W8
    from edgesdk.zoo.tiny_sd import load_tiny_sd

    if (out / "manifest.json").exists():
        return out
    model = load_tiny_sd(weights)
    return export_bundle(tiny_sd_components(model, zo_batch=0), family="tiny-sd", model_meta=tiny_sd_metadata(model),
                         assets=tiny_sd_assets(model), targets=["onnx"], output=out, recipe=W8(), overwrite=True,
                         log=lambda _m: None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "personalization_memory.json")
    args = parser.parse_args()

    sizes = {"tiny-sd": None, "scaled (UNet 384/768)": scaled_weights(args.workdir / "scaled-sd.safetensors")}
    rows = []
    for size, weights in sizes.items():
        from edgesdk.zoo.tiny_sd import load_tiny_sd

        unet_params = sum(p.numel() for p in load_tiny_sd(weights).unet.parameters())
        bundle = int8_bundle(weights, args.workdir / ("personalize-w8.edge" if weights is None
                                                      else "personalize-scaled-w8.edge"))
        for method in ("zo", "ti", "ft"):
            done = subprocess.run([sys.executable, "-c", CHILD, method, str(bundle), str(weights or "-"),
                                   str(args.steps)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{method} on {size} failed: {done.stderr.strip().splitlines()[-1]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"size": size, "unet_params": unet_params, "method": method, **result})
            print(f"{size:22s} UNet {unet_params / 1e6:6.1f} M  {method:3s} peak {result['peak_rss_mb']:7.0f} MB  "
                  f"step {result['step_s'] * 1000:8.1f} ms", flush=True)
    names = {"zo": "ZO, int8 runtime", "ti": "backprop TI, fp32", "ft": "full UNet fine-tune, fp32"}
    print(f"\n{'size':22s} {'method':26s} {'peak RSS MB':>11s} {'step ms':>9s}")
    for r in rows:
        print(f"{r['size']:22s} {names[r['method']]:26s} {r['peak_rss_mb']:11.0f} {r['step_s'] * 1000:9.1f}")
    checks = []
    for size in sizes:
        peak = {r["method"]: r["peak_rss_mb"] for r in rows if r["size"] == size}
        zo = next(r for r in rows if r["size"] == size and r["method"] == "zo")
        speedup = zo["queries_one_by_one_s"] / zo["queries_batched_s"]
        print(f"{size}: ZO uses {peak['ti'] / peak['zo']:.1f}x less than backprop TI, {peak['ft'] / peak['zo']:.1f}x "
              f"less than full fine-tune; n+1 queries batched {speedup:.2f}x faster than one by one")
        if size != "tiny-sd":
            checks += [("ZO >= 3x below backprop TI at the larger size", peak["ti"] / peak["zo"], 3.0),
                       ("ZO >= 10x below full fine-tune at the larger size", peak["ft"] / peak["zo"], 10.0)]
        else:
            checks.append(("batched n+1 queries >= 1.5x faster than one by one (tiny-sd)", speedup, 1.5))
    print()
    for name, value, target in checks:
        verdict = "met" if value >= target else f"MISSED by {target - value:.2f}"
        print(f"{name}: {value:.2f} (target {target}) -> {verdict}")
    write_json(args.output, {"rows": rows, "steps": args.steps, "checks": [
        {"name": n, "value": v, "target": t, "met": v >= t} for n, v, t in checks],
        "command": "python benchmarks/personalization_memory.py"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
