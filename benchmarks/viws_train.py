"""Train ViWS-Net's three ablation networks (full, no discriminator, single frame) side by side within a time
budget, with identical settings and steps, then score them on the held-out clips.

    python benchmarks/viws_train.py --minutes 6 --device cuda --batch 16 --out build/viws-train

This is how the shipped weights were trained on a lent GPU (the benchmark's ablations on 2 CPU cores get a few
hundred steps of batch 1; see benchmarks/viws.py). Steps:

1. render the clip pool once (``--workers`` processes) into OUT/pools, where every run then finds it;
2. probe: the three variants train ``--probe-steps`` steps concurrently, as they will in the real run, which gives
   the slowest variant's step rate after warm-up;
3. the three train concurrently for the step count that fits ``--minutes`` at that rate (rounded down to 100), so
   the learning-rate schedule completes; weights OUT/VARIANT.safetensors, logs OUT/VARIANT.log, checkpoints in
   OUT/checkpoints (a rerun with the same options resumes);
4. each network and the degraded input are scored (Y-PSNR / SSIM per weather) on ``--clips`` held-out clips per
   weather; OUT/summary.json holds the settings, rates and scores.

Score the result against everything else with ``python benchmarks/viws.py --ablation-weights OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {"full": [], "no-discriminator": ["--no-discriminator"], "single-frame": ["--single-frame"]}


def train_all(args: argparse.Namespace, steps: int, checkpoints: Path, outputs: Path, logs: Path | None) -> None:
    """The three variants as concurrent processes, each with its share of the CPU threads."""
    threads = max(1, (os.cpu_count() or 3) // len(VARIANTS))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    running = []
    for variant, flags in VARIANTS.items():
        command = [sys.executable, "-m", "edgesdk.cli", "train", "viws", "--steps", str(steps),
                   "--batch", str(args.batch), "--lr", str(args.lr), "--clips-per-weather", str(args.clips_per_weather),
                   "--checkpoint-every", str(max(1, steps // 10)), "--seed", str(args.seed), "--device", args.device,
                   "--checkpoint-dir", str(checkpoints), "--pool-cache", str(args.out / "pools"),
                   "-o", str(outputs / f"{variant}.safetensors"), "--quiet", *flags]
        if args.init_dir is not None:
            command += ["--init", str(args.init_dir / f"{variant}.safetensors")]
        log = open(logs / f"{variant}.log", "w") if logs else subprocess.DEVNULL  # noqa: SIM115
        running.append((variant, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for variant, process, log in running:
        if process.wait() != 0:
            failed.append(variant)
        if log is not subprocess.DEVNULL:
            log.close()
    if failed:
        sys.exit(f"error: training failed for {', '.join(failed)}" + (f"; see {logs}" if logs else ""))


def seconds_per_step(path: Path) -> float:
    from edgesdk.zoo.weights import load_weights

    _, info = load_weights(path)
    return float(info["seconds_per_step_after_warmup"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "viws-train")
    parser.add_argument("--minutes", type=float, default=6.0, help="Wall-clock budget of the real run.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16, help="Items per step (3 clips each).")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clips-per-weather", type=int, default=600)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--probe-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="Train this many steps (no probe, --minutes unused).")
    parser.add_argument("--init-dir", type=Path, default=None, help="A second stage: each variant starts from "
                                                                    "INIT_DIR/VARIANT.safetensors.")
    parser.add_argument("--max-steps", type=int, default=200_000)
    parser.add_argument("--clips", type=int, default=10, help="Held-out clips per weather for the scores.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from edgesdk.train.viws import ViWSTrainConfig, clip_pool, eager_restorer, evaluation_clips, score_restoration
    from edgesdk.zoo.viws import load_viws

    started = time.perf_counter()
    cfg = ViWSTrainConfig(clips_per_weather=args.clips_per_weather, seed=args.seed)
    clip_pool(cfg, args.workers, args.out / "pools")
    pool_seconds = time.perf_counter() - started
    print(f"clip pool: {3 * args.clips_per_weather} clips in {pool_seconds:.0f} s", flush=True)

    rate = None
    if args.steps is not None:
        steps = args.steps
    else:
        probe = args.out / "probe"
        probe.mkdir(exist_ok=True)
        train_all(args, args.probe_steps, probe / "checkpoints", probe, None)
        rate = max(seconds_per_step(probe / f"{v}.safetensors") for v in VARIANTS)
        # 0.9: the probe's processes do not all start at once, so its rate is a little better than the real run's
        steps = min(args.max_steps, max(100, int(0.9 * args.minutes * 60 / rate) // 100 * 100))
        print(f"probe: {rate * 1000:.1f} ms per step (slowest variant, 3 concurrent); training {steps} steps",
              flush=True)

    started = time.perf_counter()
    train_all(args, steps, args.out / "checkpoints", args.out, args.out)
    train_seconds = time.perf_counter() - started
    print(f"trained 3 x {steps} steps in {train_seconds:.0f} s", flush=True)

    torch.set_num_threads(os.cpu_count() or 1)
    clips = evaluation_clips(args.clips, frames=9)
    scores = {"input": score_restoration(None, clips).to_dict()}
    for variant in VARIANTS:
        model = load_viws(args.out / f"{variant}.safetensors")
        scores[variant] = score_restoration(eager_restorer(model, single_frame=variant == "single-frame"),
                                            clips).to_dict()
    summary = {"steps": steps, "batch": args.batch, "lr": args.lr, "clips_per_weather": args.clips_per_weather,
               "seed": args.seed, "device": args.device, "probe_seconds_per_step": rate,
               "init_dir": str(args.init_dir) if args.init_dir else None,
               "train_seconds": train_seconds, "pool_seconds": pool_seconds,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "scores": scores}
    tmp = args.out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(args.out / "summary.json")
    base = scores["input"]["mean_psnr"]
    print(f"{'held-out Y-PSNR / SSIM':24s}{'mean PSNR':>10s}{'vs input':>10s}{'mean SSIM':>10s}")
    for name, row in scores.items():
        print(f"{name:24s}{row['mean_psnr']:10.2f}{row['mean_psnr'] - base:+10.2f}{row['mean_ssim']:10.3f}")


if __name__ == "__main__":
    main()
