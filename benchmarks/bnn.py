"""Binary networks: full precision vs clipped STE vs ReSTE at equal epochs, bundle sizes, inference memory, parity.

    python benchmarks/bnn.py [--seeds 3] [--digits-epochs 30] [--shapes-seeds 2] [--shapes-epochs 40]

1. Accuracy (several seeds, every estimator trained for the same epochs with the same recipe, spec §6 scaled):
   digits with the `digits` network (ResNet-20 layout, 1 block per stage); shapes with the same layout at 32x32
   (1 block per stage, to keep the CPU time of 3 estimators x seeds reasonable; the shipped shapes network is the
   full ResNet-20). Both indicators per estimator: estimating error e = sum ||f_o(W) - sign(W)|| at the run's
   final o (o = 1 for STE, the o = 1 member of the family) and at o_end, and gradient instability
   s = sum var(|dL/dW|), means over each epoch's batches (the table shows the last epoch's e and the run's mean
   s; full-precision runs have none). STE appears with the reference's clip (1) and with
   ReSTE's t (1.5) on digits, for a like-for-like comparison. Shapes train with Adam (the trainer's default
   there), digits with the spec's SGD.
2. Size: the shipped networks' bundles (ExecuTorch + ONNX) with 1-bit weights (recipe binary) against the same
   network exported fp32; weights alone (bits + the full-precision layers) and whole files.
3. Inference: peak RSS above the runtime's import and latency per image (batch 1), each backend in its own
   process; top-1 agreement between eager PyTorch and each backend on the whole test set (target 100 %).
Writes benchmarks/results/bnn.json (--output to change; --skip-training / --skip-deployment run one half).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from edgesdk.data.classification import load_classification, normalise
from edgesdk.reporting import write_json

ESTIMATORS = (("fp", 1.0), ("ste", 1.0), ("ste", 1.5), ("reste", 1.0))
SHAPES_ESTIMATORS = (("fp", 1.0), ("ste", 1.0), ("reste", 1.0))  # each shapes run costs ~3x a digits run


def label(estimator: str, clip: float) -> str:
    return {"fp": "full precision", "reste": "ReSTE (o 1->3, t 1.5)"}.get(estimator, f"STE (clip {clip:g})")


def accuracy_runs(args: argparse.Namespace, workdir: Path) -> list[dict]:
    from edgesdk.train.bnn import BNNTrainConfig, train_bnn

    rows = []
    plan = (("digits", args.digits_epochs, ESTIMATORS, args.seeds),
            ("shapes", args.shapes_epochs, SHAPES_ESTIMATORS, args.shapes_seeds))
    for dataset, epochs, estimators, seeds in plan:
        if dataset not in args.datasets:
            continue
        for estimator, clip in estimators:
            runs = []
            for seed in range(seeds):
                cfg = BNNTrainConfig(dataset=dataset, estimator=estimator, ste_clip=clip, epochs=epochs, seed=seed,
                                     blocks=1, shapes_train=args.shapes_train)
                tag = f"{dataset}-{estimator}-c{clip:g}-s{seed}-e{epochs}"
                print(f"training {tag} ...", flush=True)
                result = train_bnn(workdir / f"{tag}.safetensors", workdir / f"ck-{tag}", cfg, show_progress=False)
                last = result["history"][-1]
                runs.append({"seed": seed, "test_accuracy": result["test_accuracy"],
                             "error_at_final_o": last.get("error_at_o"), "error_at_o_end": last.get("error_at_o_end"),
                             "instability_mean": statistics.mean(h["instability"] for h in result["history"])
                             if "instability" in last else None})
            accuracies = [r["test_accuracy"] for r in runs]
            rows.append({"dataset": dataset, "estimator": estimator, "ste_clip": clip, "epochs": epochs,
                         "label": label(estimator, clip), "runs": runs, "accuracy_mean": statistics.mean(accuracies),
                         "accuracy_std": statistics.pstdev(accuracies)})
    return rows


def weight_bytes(bundle_dir: Path, binary: bool) -> int:
    """Bytes the weights take in one model file of the bundle: every float parameter and buffer at 4 bytes, except
    binary weights at 1 bit when stored packed."""
    from edgesdk.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    layers = bundle.manifest["model"]["binary_layers"]
    binary_count = sum(int(np.prod(layer["shape"])) for layer in layers)
    total_floats = bundle.manifest["components"]["classifier"]["fp32_weight_bytes"] // 4
    return (total_floats - binary_count) * 4 + (binary_count + 7) // 8 if binary else total_floats * 4


CHILD = r"""
import json, sys, time
import numpy as np
from edgesdk.runtime.bench import peak_rss_mb
bundle, backend, images = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
from edgesdk.runtime import ImageClassifier
if backend == "executorch":  # torch and the bindings load before the baseline, as in an app
    import torch, executorch.runtime  # noqa: E401, F401
base = peak_rss_mb()
clf = ImageClassifier(bundle, backend=backend)
logits = clf.logits(images)
times = []
for i in range(min(200, len(images))):
    t = time.perf_counter(); clf.logits(images[i:i + 1]); times.append(time.perf_counter() - t)
np.save(sys.argv[4], logits)
print(json.dumps({"peak_rss_above_import_mb": peak_rss_mb() - base, "latency_ms": 1000 * float(np.median(times))}))
"""


def deployment(dataset: str, workdir: Path, backends: list[str]) -> dict:
    from edgesdk.exporting import export_model
    from edgesdk.zoo.bnn import default_bnn_path, load_bnn

    model = load_bnn(default_bnn_path(dataset))
    bundles = {}
    for recipe in ("binary", "fp32"):
        out = workdir / f"bnn-{dataset}-{recipe}.edge"
        print(f"exporting {out} ...", flush=True)
        bundles[recipe] = export_model("bnn", out, ",".join(backends), weights=default_bnn_path(dataset),
                                       quant=recipe, overwrite=True, log=lambda _m: None)
    from edgesdk.runtime.bundle import Bundle

    def files(path: Path) -> int:
        bundle = Bundle.open(path)
        return sum(size for name, size in bundle.file_sizes().items() if not name.endswith(".json"))

    split = load_classification(dataset)
    with torch.no_grad():
        eager = model(torch.from_numpy(normalise(split.test_images, model.config.mean, model.config.std))).numpy()
    np.save(workdir / "images.npy", split.test_images)
    per_backend = {}
    for recipe, path in bundles.items():
        for backend in backends:
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), backend, str(workdir / "images.npy"),
                                   str(workdir / "logits.npy")], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{backend} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            logits = np.load(workdir / "logits.npy")
            figures["top1_agreement_with_eager"] = float((logits.argmax(1) == eager.argmax(1)).mean())
            figures["max_abs_logit_difference"] = float(np.abs(logits - eager).max())
            figures["accuracy"] = float((logits.argmax(1) == split.test_labels).mean())
            per_backend[f"{recipe}/{backend}"] = figures
    targets = len(backends)
    return {"dataset": dataset, "parameters": model.info["parameters"], "binary_share": model.info["binary_share"],
            "test_images": len(split.test_labels),
            "eager_accuracy": float((eager.argmax(1) == split.test_labels).mean()),
            "weights_bytes": {"binary": targets * weight_bytes(bundles["binary"], True),
                              "fp32": targets * weight_bytes(bundles["fp32"], False)},
            "file_bytes": {"binary": files(bundles["binary"]), "fp32": files(bundles["fp32"])},
            "backends": per_backend}


def fmt(values: list[float], spec: str) -> str:
    width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
    return format(statistics.mean(values), spec) if values else "-".rjust(width)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-bnn"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--digits-epochs", type=int, default=30)
    parser.add_argument("--shapes-epochs", type=int, default=40)
    parser.add_argument("--shapes-seeds", type=int, default=2)
    parser.add_argument("--shapes-train", type=int, default=2000)
    parser.add_argument("--datasets", default="digits,shapes")
    parser.add_argument("--backends", default="executorch,onnx")
    parser.add_argument("--skip-training", action="store_true", help="only sizes, memory and parity")
    parser.add_argument("--skip-deployment", action="store_true", help="only the accuracy runs")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bnn.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    backends = [b for b in args.backends.split(",") if b]
    rows = [] if args.skip_training else accuracy_runs(args, args.workdir)
    deployments = [] if args.skip_deployment else [deployment(d, args.workdir, backends)
                                                    for d in args.datasets.split(",") if d]

    if rows:
        print(f"\naccuracy at equal epochs (digits {args.seeds} seeds, shapes {args.shapes_seeds}; test set), "
              "indicators of binary runs")
        print(f"{'dataset':8s} {'estimator':24s} {'epochs':>6s} {'accuracy':>15s} {'e @ final o':>12s} "
              f"{'e @ o_end':>10s} {'s (mean)':>10s}")
        for r in rows:
            e_final = [x["error_at_final_o"] for x in r["runs"] if x["error_at_final_o"] is not None]
            e_end = [x["error_at_o_end"] for x in r["runs"] if x["error_at_o_end"] is not None]
            s = [x["instability_mean"] for x in r["runs"] if x["instability_mean"] is not None]
            print(f"{r['dataset']:8s} {r['label']:24s} {r['epochs']:6d} "
                  f"{100 * r['accuracy_mean']:7.2f} ± {100 * r['accuracy_std']:4.2f} {fmt(e_final, '12.1f')} "
                  f"{fmt(e_end, '10.1f')} {fmt(s, '10.3g'):>10s}")
        for dataset in {r["dataset"] for r in rows}:
            by = {r["label"]: r["accuracy_mean"] for r in rows if r["dataset"] == dataset}
            reste = by[label("reste", 1.0)]
            ste = max(v for k, v in by.items() if k.startswith("STE"))
            print(f"{dataset}: ReSTE >= best STE: {100 * reste:.2f} vs {100 * ste:.2f} -> "
                  f"{'met' if reste >= ste else 'missed'}")
    for d in deployments:
        w, f = d["weights_bytes"], d["file_bytes"]
        print(f"\n{d['dataset']}: {d['parameters']:,} parameters, {100 * d['binary_share']:.1f} % binary; "
              f"eager accuracy {100 * d['eager_accuracy']:.2f} % on {d['test_images']} test images")
        weight_ratio, file_ratio = w["fp32"] / w["binary"], f["fp32"] / f["binary"]
        print(f"  weights: 1-bit {w['binary'] / 1024:.1f} KiB vs fp32 {w['fp32'] / 1024:.1f} KiB -> "
              f"{weight_ratio:.1f}x smaller (target 20x: {'met' if weight_ratio >= 20 else 'missed'}); "
              f"whole files {f['binary'] / 1024:.1f} KiB vs {f['fp32'] / 1024:.1f} KiB -> {file_ratio:.1f}x")
        print(f"  {'bundle/backend':22s} {'peak RSS MB':>11s} {'ms/image':>9s} {'top-1 = eager':>13s} "
              f"{'max |dlogit|':>12s}")
        for name, b in d["backends"].items():
            print(f"  {name:22s} {b['peak_rss_above_import_mb']:11.1f} {b['latency_ms']:9.3f} "
                  f"{100 * b['top1_agreement_with_eager']:12.2f}% {b['max_abs_logit_difference']:12.2e}")
    write_json(args.output, {"seeds": {"digits": args.seeds, "shapes": args.shapes_seeds}, "accuracy": rows,
                             "deployment": deployments})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
