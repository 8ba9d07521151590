"""ViWS-Net benchmark: restoration quality per weather (input, single-frame network, no discriminator, full model)
on held-out clips, and the streaming restorer's speed and PSNR loss per runtime and recipe.

    python benchmarks/viws.py                       # everything (ablations train once; reruns reuse them)
    python benchmarks/viws.py --skip-deployment     # quality only
    python benchmarks/viws.py --skip-ablations      # deployment only (shipped weights)

Quality: Y-channel PSNR / SSIM (spec §7) on the centre frames of every full 5-frame window of the held-out clips
(test sources and seeds; 9-frame clips, so 5 windows each; edge windows are not scored). The three networks of the
ablation are trained here with identical settings and steps (``--ablation-steps``); the shipped network (trained
longer) is scored too. The single-frame network is the same architecture fed its centre frame five times.

Deployment: the shipped network exported per recipe; frames per second of ``VideoRestorer.stream`` on 64 x 64
frames (the training resolution: one tile per frame) and the PSNR each backend loses against eager fp32 on the
same windows. Writes benchmarks/results/viws.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgesdk.runtime.errors import EdgeSDKError  # noqa: E402
from edgesdk.train.viws import (  # noqa: E402
    ViWSTrainConfig,
    eager_restorer,
    evaluation_clips,
    score_restoration,
    train_viws,
    variant_config,
)
from edgesdk.zoo.viws import WEATHERS, default_viws_path, load_viws  # noqa: E402

VARIANTS = ("single-frame", "no-discriminator", "full")


def ablation_weights(workdir: Path, steps: int, log: bool, given: Path | None = None) -> dict[str, Path]:
    if given is not None:  # trained elsewhere, e.g. by benchmarks/viws_train.py on a GPU
        paths = {variant: given / f"{variant}.safetensors" for variant in VARIANTS}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            sys.exit(f"error: --ablation-weights lacks {', '.join(missing)}")
        return paths
    paths = {}
    for variant in VARIANTS:
        cfg = variant_config(ViWSTrainConfig(steps=steps, batch=1), variant)
        path = workdir / f"{variant}-{steps}.safetensors"
        if not path.exists():
            print(f"training {variant} for {steps} steps", file=sys.stderr, flush=True)
            train_viws(path, workdir / "ablation-checkpoints", cfg, show_progress=log)
        paths[variant] = path
    return paths


def trained_steps(info: dict) -> int | None:
    """Steps behind a weights file: the sum over its training stages when it records them."""
    if info.get("stages"):
        return sum(int(stage["steps"]) for stage in info["stages"])
    return (info.get("train_config") or {}).get("steps")


def quality(clips: list, workdir: Path, steps: int, log: bool, given: Path | None = None) -> dict:
    rows = {"input": score_restoration(None, clips).to_dict()}
    for variant, path in ablation_weights(workdir, steps, log, given).items():
        model = load_viws(path)
        done = trained_steps(model.info) if given is not None else steps
        rows[f"{variant} ({done} steps)"] = score_restoration(
            eager_restorer(model, single_frame=variant == "single-frame"), clips).to_dict()
    shipped = load_viws()
    rows[f"full, shipped ({trained_steps(shipped.info)} steps)"] = score_restoration(
        eager_restorer(shipped), clips).to_dict()
    return rows


def print_quality(rows: dict) -> None:
    print(f"\n{'Y-PSNR / SSIM':34s}" + "".join(f"{w:>16s}" for w in (*WEATHERS, "mean")))
    for name, r in rows.items():
        cells = [f"{r['psnr'][w]:6.2f} / {r['ssim'][w]:.3f}" for w in WEATHERS]
        cells.append(f"{r['mean_psnr']:6.2f} / {r['mean_ssim']:.3f}")
        print(f"{name:34s}" + "".join(f"{c:>16s}" for c in cells))


def deployment(clips: list, workdir: Path, recipes: list[str], frames: int, reuse: bool) -> dict:
    from edgesdk.exporting import export_model
    from edgesdk.runtime.restore import VideoRestorer

    model = load_viws()
    eager = score_restoration(eager_restorer(model), clips).to_dict()
    rng = np.random.default_rng(0)
    stream = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(frames)]
    results: dict = {"eager_fp32_mean_psnr": eager["mean_psnr"], "frames_timed": frames, "rows": []}
    for recipe in recipes:
        bundle = workdir / f"viws-{recipe}.edge"
        if not (reuse and bundle.exists()):
            print(f"exporting the shipped network, recipe {recipe}", file=sys.stderr, flush=True)
            try:
                export_model("viws", bundle, "executorch,onnx", quant=recipe, overwrite=True,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
            except EdgeSDKError as exc:  # recorded, not fatal: the other recipes still run
                results.setdefault("failed", {})[recipe] = str(exc)
                print(f"  {recipe}: {exc}", file=sys.stderr, flush=True)
                continue
        size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
        for backend in ("onnx", "executorch"):
            restorer = VideoRestorer(bundle, backend=backend)
            scores = score_restoration(lambda w, r=restorer: np.stack([r.restore_window(x) for x in w]), clips)
            list(restorer.stream(stream[:6]))  # warm-up
            start = time.perf_counter()
            count = sum(1 for _ in restorer.stream(stream))
            fps = count / (time.perf_counter() - start)
            files = [f for f in bundle.rglob("*") if f.is_file() and f.parent.name == backend]
            row = {"recipe": recipe, "backend": backend, "fps": fps, "mean_psnr": scores.mean_psnr(),
                   "psnr_lost_vs_eager": eager["mean_psnr"] - scores.mean_psnr(),
                   "model_file_bytes": sum(f.stat().st_size for f in files), "bundle_bytes": size}
            results["rows"].append(row)
            print(f"  {recipe:5s} {backend:10s} {fps:7.1f} frames/s  PSNR {row['mean_psnr']:.2f} dB "
                  f"(lost {row['psnr_lost_vs_eager']:+.3f})", file=sys.stderr, flush=True)
    return results


def print_deployment(results: dict) -> None:
    print(f"\nstreaming restorer, 64x64 frames ({results['frames_timed']} frames), eager fp32 mean PSNR "
          f"{results['eager_fp32_mean_psnr']:.2f} dB")
    print(f"{'recipe':8s}{'backend':12s}{'frames/s':>10s}{'PSNR':>9s}{'lost':>9s}{'file MB':>9s}")
    for recipe, why in results.get("failed", {}).items():
        print(f"{recipe:8s}export failed: {why}")
    for r in results["rows"]:
        print(f"{r['recipe']:8s}{r['backend']:12s}{r['fps']:10.1f}{r['mean_psnr']:9.2f}{r['psnr_lost_vs_eager']:9.3f}"
              f"{r['model_file_bytes'] / 1e6:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "viws-bench")
    parser.add_argument("--ablation-steps", type=int, default=600)
    parser.add_argument("--clips", type=int, default=10, help="Held-out clips per weather (9 frames each).")
    parser.add_argument("--recipes", default="fp32,w8,w8a8")
    parser.add_argument("--frames", type=int, default=60, help="Frames streamed for the frames/s figure.")
    parser.add_argument("--ablation-weights", type=Path, default=None,
                        help="Score DIR/{full,no-discriminator,single-frame}.safetensors instead of training the "
                             "ablations here (benchmarks/viws_train.py writes such a folder).")
    parser.add_argument("--skip-ablations", action="store_true")
    parser.add_argument("--skip-deployment", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="Reuse bundles already exported in --workdir.")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "viws.json")
    args = parser.parse_args()
    if not default_viws_path().exists():
        sys.exit(f"error: no shipped weights at {default_viws_path()}; run `edgesdk train viws` first")
    torch.manual_seed(0)
    args.workdir.mkdir(parents=True, exist_ok=True)
    clips = evaluation_clips(args.clips, frames=9)
    results: dict = {"clips_per_weather": args.clips, "frames_per_clip": 9, "window": 5,
                     "edge_rule": "only full windows scored", "torch_threads": torch.get_num_threads()}
    if args.output.exists():  # keep the half not rerun
        previous = json.loads(args.output.read_text())
        results.update({k: v for k, v in previous.items() if k in ("quality", "deployment")})
    if not args.skip_ablations:
        results["quality"] = quality(clips, args.workdir, args.ablation_steps, not args.quiet, args.ablation_weights)
        if args.ablation_weights is not None:
            results.pop("ablation_steps", None)
            results["ablation_training"] = ablation_record(args.ablation_weights)
        else:
            results["ablation_steps"] = args.ablation_steps
        write_results(args.output, results)  # a long run keeps each finished half
    if not args.skip_deployment:
        results["deployment"] = deployment(clips[:: max(1, args.clips // 4)], args.workdir,
                                           args.recipes.split(","), args.frames, args.reuse)
        write_results(args.output, results)
    if "quality" in results:
        print_quality(results["quality"])
    if "deployment" in results:
        print_deployment(results["deployment"])
    print(f"\nwrote {args.output}")


def ablation_record(folder: Path) -> dict:
    """How the given ablation networks were trained, from their metadata (and the trainer's summary, if there)."""
    from edgesdk.zoo.weights import load_weights

    record: dict = {"folder": str(folder)}
    for variant in VARIANTS:
        info = load_weights(folder / f"{variant}.safetensors")[1]
        record[variant] = {"steps": trained_steps(info), "train_config": info.get("train_config"),
                           "device": info.get("device")}
    return record


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    main()
