"""f-distill mode coverage on the 2-D toy (spec §11): every divergence, several seeds, two skewed-init targets.

    python benchmarks/fdistill_modes.py [--targets 2-modes,8-ring] [--seeds 3] [--steps 3000] [--divergences ...]

The student starts collapsed on the heaviest mode; only h(r) differs between rows (same seeds, networks, noise;
GAN term off, the discriminator still trained for r). Per row, over seeds (mean ± std):
- modes: modes holding > 20 % of their true weight (nearest-mode assignment), at the last step;
- TV: total variation between the nearest-mode histogram and the true weights, at the last step;
- quality: share of samples within 3 std of any mode;
- h max: the largest per-sample weight in the last 500 steps (h is batch-mean normalised, so its mean is 1);
- all @: the first evaluated step with every mode covered (median over seeds; "-" if never).
Runs on one thread. Writes benchmarks/results/fdistill_modes.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from edgesdk.reporting import write_json
from edgesdk.train.fdistill import DIVERGENCES
from edgesdk.train.fdistill_toy import TARGETS, ToyConfig, run_toy


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(runs: list[dict], mode_count: int) -> dict:
    """Across seeds: final modes / TV / quality / h max, and when every mode was first covered."""
    finals = [run["final"] for run in runs]
    first_all = [next((h["step"] for h in run["history"] if h["modes_covered"] == mode_count), None) for run in runs]
    reached = [s for s in first_all if s is not None]
    summary: dict = {key: _mean_std([f[key] for f in finals])
                     for key in ("modes_covered", "tv", "quality", "h_mean", "h_max")}
    summary["all_modes_step_median"] = float(np.median(reached)) if len(reached) * 2 > len(runs) else None
    summary["seeds_reaching_all_modes"] = len(reached)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--divergences", default=",".join(DIVERGENCES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000, help="generator steps per run")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "fdistill_modes.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny MLPs: one core is as fast, and leaves the other free
    config = ToyConfig()
    start = time.perf_counter()
    runs, summary = [], {}
    for target in args.targets.split(","):
        mode_count = len(TARGETS[target][1])
        summary[target] = {}
        for divergence in args.divergences.split(","):
            chosen = [run_toy(target, divergence, seed, args.steps, config) for seed in range(args.seeds)]
            for run in chosen:
                f = run["final"]
                print(f"{target:8s} {divergence:10s} seed {run['seed']}  modes {f['modes_covered']}  TV {f['tv']:.3f}"
                      f"  quality {f['quality']:.2f}  fractions {f['mode_fractions']}  {run['seconds']:.0f} s",
                      flush=True)
            runs += chosen
            summary[target][divergence] = summarize(chosen, mode_count)

    print(f"\nmean ± std over {args.seeds} seeds, {args.steps} generator steps, σ log-uniform in "
          f"[{config.sigma_min}, {config.sigma_max}], generator LR {config.generator_lr}, {config.critic_steps}:1")
    for target, rows in summary.items():
        print(f"\n{target} ({len(TARGETS[target][1])} modes, init on one)")
        print(f"{'divergence':10s} {'modes':>10s} {'TV':>14s} {'quality':>12s} {'h mean':>6s} {'h max':>12s} "
              f"{'all @':>6s}")
        for divergence, s in rows.items():
            step = s["all_modes_step_median"]
            print(f"{divergence:10s} {s['modes_covered'][0]:5.1f}±{s['modes_covered'][1]:<4.1f} "
                  f"{s['tv'][0]:7.3f}±{s['tv'][1]:<6.3f} {s['quality'][0]:6.2f}±{s['quality'][1]:<5.2f} "
                  f"{s['h_mean'][0]:6.2f} {s['h_max'][0]:6.1f}±{s['h_max'][1]:<5.1f} "
                  f"{'-' if step is None else int(step):>6}")
    seconds = time.perf_counter() - start
    command = " ".join(["python", shlex.quote(sys.argv[0]), *map(shlex.quote, sys.argv[1:])])
    write_json(args.output, {"command": command, "config": asdict(config), "steps": args.steps, "seeds": args.seeds,
                             "summary": summary, "runs": runs, "seconds": round(seconds, 1),
                             "torch_threads": torch.get_num_threads()})
    print(f"\n{seconds / 60:.1f} min; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
