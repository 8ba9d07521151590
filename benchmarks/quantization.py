"""Quantization recipes against fp32, per backend, in one run.

    python benchmarks/quantization.py [--samples 100] [--reuse]

For each recipe (fp32, w8a8, w8, w4) and backend (ExecuTorch, ONNX Runtime): UNet latency (one CFG pair) against
the fp32 *eager* UNet, bundle size against fp32, peak RSS above the runtime import (own process per backend),
the UNet's SQNR against eager fp32, and end-to-end prompt accuracy against the fp32 bundle. Targets from the
issue are checked and every miss is printed with its margin. Writes benchmarks/results/quantization.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from edgesdk.evaluate import prompt_accuracy
from edgesdk.exporting import export_model
from edgesdk.families.tiny_sd import tiny_sd_components
from edgesdk.quant.configs import config_from_name
from edgesdk.reporting import bench_bundle, write_json
from edgesdk.runtime.bundle import Bundle
from edgesdk.zoo.tiny_sd import load_tiny_sd

RECIPES = ("fp32", "w8a8", "w8", "w4")
TARGETS = {"w8a8_executorch_speedup": 2.0, "w8a8_executorch_smaller": 3.5, "accuracy_points": 5.0, "w4_smaller": 6.0}


def eager_unet_ms(runs: int = 50) -> float:
    spec = next(s for s in tiny_sd_components(load_tiny_sd()) if s.name == "unet")
    with torch.no_grad():
        for _ in range(5):
            spec.module(*spec.example_inputs)
        start = time.perf_counter()
        for _ in range(runs):
            spec.module(*spec.example_inputs)
    return (time.perf_counter() - start) / runs * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--reuse", action="store_true", help="reuse bundles already in --workdir")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "quantization.json")
    args = parser.parse_args()

    eager_ms = eager_unet_ms()
    rows: list[dict] = []
    for recipe_name in RECIPES:
        recipe = config_from_name(recipe_name)
        path = args.workdir / ("tiny-sd.edge" if recipe_name == "fp32" else f"tiny-sd-{recipe_name}.edge")
        if not (args.reuse and (path / "manifest.json").exists()):
            print(f"exporting {recipe_name} -> {path}")
            export_model("tiny-sd", path, [t for t in recipe.targets if t != "tensorrt"], quant=recipe_name,
                         overwrite=True, log=lambda _m: None)
        bundle = Bundle.open(path)
        backends = [t for t in bundle.targets() if t != "tensorrt"]
        bench = bench_bundle(path, ",".join(backends), steps=25, runs=5)
        sizes = bundle.file_sizes()
        for backend in backends:
            res = bench["backends"][backend]
            unet = bundle.component("unet")
            accuracy, _, _ = prompt_accuracy(path, backend=backend, samples=args.samples)
            rows.append({
                "recipe": recipe_name, "backend": backend,
                "unet_ms": res["components"]["unet"]["p50_ms"],
                "sample_ms": res["sample"]["p50_ms"],
                "bytes": sum(sizes[p] for c in bundle.components.values() for t, p in c.files.items()
                             if t == backend),
                "rss_above_import_mb": res["rss_mb"]["model_and_inference"],
                "unet_sqnr_db": min(v["sqnr_db"] for v in unet.parity[backend].values()),
                "accuracy": accuracy.accuracy,
                # the least any component's graph runs inside the backend (XNNPACK on ExecuTorch; integer kernels'
                # share is ONNX Runtime's own figure)
                "min_delegated_share": min(c.delegation[backend].get("delegated_share", 1.0)
                                           for c in bundle.components.values()) if backend == "executorch" else None,
            })
            print(f"{recipe_name:5s} {backend:10s} done")

    fp32 = {r["backend"]: r for r in rows if r["recipe"] == "fp32"}
    print(f"\nfp32 eager UNet (CFG pair): {eager_ms:.2f} ms")
    print("recipe backend     UNet ms  vs eager  size MB  vs fp32  RSS MB  UNet SQNR  kind    colour  "
          "(fp32 kind/colour)")
    for r in rows:
        base = fp32[r["backend"]]
        r["speedup_vs_eager"] = eager_ms / r["unet_ms"]
        r["smaller_than_fp32"] = base["bytes"] / r["bytes"]
        r["accuracy_delta_points"] = {k: 100 * (r["accuracy"][k] - base["accuracy"][k]) for k in ("kind", "colour")}
        print(f"{r['recipe']:6s} {r['backend']:10s} {r['unet_ms']:7.2f}  {r['speedup_vs_eager']:7.2f}x  "
              f"{r['bytes'] / 1e6:7.2f}  {r['smaller_than_fp32']:6.2f}x  {r['rss_above_import_mb']:6.0f}  "
              f"{r['unet_sqnr_db']:8.1f}  {r['accuracy']['kind']:6.1%}  {r['accuracy']['colour']:6.1%}  "
              f"({base['accuracy']['kind']:.1%}/{base['accuracy']['colour']:.1%})")

    checks = []
    w8a8_et = next((r for r in rows if r["recipe"] == "w8a8" and r["backend"] == "executorch"), None)
    if w8a8_et:
        checks += [("w8a8 ExecuTorch UNet >= 2x faster than fp32 eager", w8a8_et["speedup_vs_eager"],
                    TARGETS["w8a8_executorch_speedup"]),
                   ("w8a8 ExecuTorch >= 3.5x smaller than fp32", w8a8_et["smaller_than_fp32"],
                    TARGETS["w8a8_executorch_smaller"]),
                   ("w8a8 ExecuTorch prompt accuracy (kind) change in points, at least -5",
                    w8a8_et["accuracy_delta_points"]["kind"], -TARGETS["accuracy_points"])]
    for r in rows:
        if r["recipe"] == "w4":
            checks.append((f"w4 {r['backend']} >= 6x smaller than fp32", r["smaller_than_fp32"], TARGETS["w4_smaller"]))
        if r["min_delegated_share"] is not None:  # (tests check delegation on micro models; here the full tiny-sd)
            checks.append((f"{r['recipe']} ExecuTorch: every component fully inside XNNPACK", r["min_delegated_share"],
                           1.0))
    print()
    for name, value, target in checks:
        status = "met" if value >= target else f"MISSED by {target - value:.2f}"
        print(f"{name}: {value:.2f} (target {target}) -> {status}")
    write_json(args.output, {"eager_unet_ms": eager_ms, "rows": rows, "samples": args.samples,
                             "checks": [{"name": n, "value": v, "target": t, "met": v >= t} for n, v, t in checks],
                             "command": "python benchmarks/quantization.py"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
