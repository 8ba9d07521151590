"""One-step students vs their teacher on the same backend: latency, prompt accuracy, Fréchet distance.

    python benchmarks/onestep.py [--backend executorch] [--samples 300] [--students rkl,js,fkl]

Students are the f-distill runs `edgesdk train onestep --divergence D -o build/onestep-D.safetensors` (missing
ones are reported, not trained here: each takes ~15 min on 2 CPU cores). Each student and the tiny-sd teacher
are exported fp32 to the backend; the teacher samples with DDIM at k = 10, 25 and 50 steps (classifier-free
guidance 4, what the students distil). Metrics:
- latency: end to end for one prompt (tokenize, text encoder, sampler or generator, VAE decode), median of
  repeated runs; target teacher(k) / student >= 0.8 k;
- prompt accuracy: the evaluator's attribute predictions agree with the prompt (kind, colour, ...);
- Fréchet distance between Gaussians fitted to the evaluator's features of the generated images and of real
  renders of the same prompts (a stand-in for FID at this scale; lower is better).
Writes benchmarks/results/onestep.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgesdk.data.shapes import random_spec, render, to_model_range
from edgesdk.evaluate import score_images
from edgesdk.reporting import write_json


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||μa − μb||² + Tr(Σa + Σb − 2 (Σa Σb)^½) between Gaussian fits of two feature sets (rows = samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root))


def features(images_uint8: np.ndarray, evaluator: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return evaluator.features(torch.from_numpy(to_model_range(images_uint8))).numpy().astype(np.float64)


def prompts_and_real_images(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng) for _ in range(count)]
    prompts = [s.caption(size=True, position=bool(i % 2), background=True) for i, s in enumerate(specs)]
    return prompts, np.stack([render(s) for s in specs])


def median_latency(run, repeats: int) -> float:
    run()  # warm-up (first call loads and plans)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bundle_for(kind: str, weights: Path | None, out: Path, backend: str) -> Path:
    from edgesdk.exporting import export_model

    if (out / "manifest.json").exists() and (weights is None or out.stat().st_mtime > weights.stat().st_mtime):
        return out
    print(f"exporting {out} ...", flush=True)
    return export_model(kind, out, backend, weights=weights, overwrite=True, log=lambda _m: None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="executorch", choices=["executorch", "onnx"])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--students", default="rkl,js,fkl")
    parser.add_argument("--teacher-steps", default="10,25,50")
    parser.add_argument("--repeats", type=int, default=20, help="latency runs per configuration")
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "onestep.json")
    args = parser.parse_args()

    from edgesdk.runtime.onestep import OneStepTextToImage
    from edgesdk.runtime.pipeline import TextToImage
    from edgesdk.zoo.evaluator import load_evaluator

    evaluator = load_evaluator().eval()
    prompts, real = prompts_and_real_images(args.samples, args.seed)
    real_features = features(real, evaluator)
    ceiling = score_images(real, prompts).accuracy
    rows = []

    def measure(name: str, generate, nfe: int) -> dict:
        images = np.concatenate([generate(prompts[i:i + 50], args.seed * 1000 + i)
                                 for i in range(0, len(prompts), 50)])
        accuracy = score_images(images, prompts).accuracy
        latency = median_latency(lambda: generate(prompts[:1], 0), args.repeats)
        row = {"method": name, "nfe": nfe, "latency_ms": latency * 1000, "accuracy": accuracy,
               "frechet": frechet_distance(features(images, evaluator), real_features)}
        print(f"{name:26s} NFE {nfe:3d}  {latency * 1000:8.1f} ms  kind {accuracy['kind']:.0%} colour "
              f"{accuracy['colour']:.0%}  FD {row['frechet']:.2f}", flush=True)
        rows.append(row)
        return row

    teacher = TextToImage(bundle_for("tiny-sd", None, args.workdir / f"tiny-sd-{args.backend}.edge", args.backend),
                          backend=args.backend)
    teacher_rows = {}
    for k in [int(s) for s in args.teacher_steps.split(",")]:
        teacher_rows[k] = measure(f"teacher DDIM {k} steps", lambda p, s, k=k: teacher.generate(p, steps=k, seed=s),
                                  2 * k)  # classifier-free guidance: two UNet rows per step
    checks = []
    for divergence in [d.strip() for d in args.students.split(",") if d.strip()]:
        weights = args.workdir / f"onestep-{divergence}.safetensors"
        if not weights.exists():
            print(f"student {divergence}: {weights} missing (train it with `edgesdk train onestep --divergence "
                  f"{divergence} -o {weights}`)")
            continue
        bundle = bundle_for("onestep", weights, args.workdir / f"onestep-{divergence}-{args.backend}.edge",
                            args.backend)
        student = OneStepTextToImage(bundle, backend=args.backend)
        row = measure(f"student {divergence} (1 step)", lambda p, s, student=student: student.generate(p, seed=s), 1)
        for k, teacher_row in teacher_rows.items():
            checks.append({"name": f"{divergence} vs teacher {k} steps: latency ratio >= {0.8 * k:g}",
                           "value": teacher_row["latency_ms"] / row["latency_ms"], "target": 0.8 * k})
    print(f"\n{'method':26s} {'latency ms':>10s} {'kind':>6s} {'colour':>7s} {'size':>6s} {'bg':>5s} {'Fréchet':>8s}")
    for r in rows:
        a = r["accuracy"]
        print(f"{r['method']:26s} {r['latency_ms']:10.1f} {a['kind']:6.0%} {a['colour']:7.0%} {a['size']:6.0%} "
              f"{a['background']:5.0%} {r['frechet']:8.2f}")
    print(f"{'real renders (ceiling)':26s} {'':10s} {ceiling['kind']:6.0%} {ceiling['colour']:7.0%} "
          f"{ceiling['size']:6.0%} {ceiling['background']:5.0%} {0.0:8.2f}\n")
    for check in checks:
        check["met"] = check["value"] >= check["target"]
        print(f"{check['name']}: {check['value']:.1f} -> {'met' if check['met'] else 'MISSED'}")
    write_json(args.output, {"backend": args.backend, "samples": args.samples, "rows": rows, "checks": checks,
                             "real_accuracy": ceiling,
                             "command": f"python benchmarks/onestep.py --backend {args.backend} "
                                        f"--samples {args.samples} --students {args.students}"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
