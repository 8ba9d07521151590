"""The C++ runtime (edgesdk-run) against the Python runtime on the same ExecuTorch bundle: per-step latency and peak
RSS of sampling and of zeroth-order personalization steps, each measurement in its own process.

    make cpp && python benchmarks/cpp_runtime.py [--bundle B.edge] [--steps 25] [--zo-steps 20] [--repeats 3]

Bundle: the tiny-sd ExecuTorch fp32 bundle the C++ tests use
(runtime/cpp/build/fixtures/bundles/tiny-sd/tiny-sd.edge), exported to build/cpp-bench/ if absent. Sampling: one
prompt, DDIM, --steps steps, guidance from the bundle (a batch-2 UNet call per step). Personalization: the
shipped concept images, n = 2 (batch-3 queries), --zo-steps steps.
Per-step time: the median gap between consecutive steps (sampler steps or optimizer steps), over --repeats
processes (median of their medians). Peak RSS: the process's VmHWM at the end (the Python side imports torch for
the ExecuTorch binding; its after-imports floor is reported separately). Writes benchmarks/results/cpp_runtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "runtime" / "cpp" / "build" / "edgesdk-run"
PROMPT = "a large red star on a blue background"

PYTHON_SAMPLE = r"""
import json, statistics, sys, time
bundle, steps = sys.argv[1], int(sys.argv[2])
from edgesdk.runtime.bench import peak_rss_mb, resident_mb
import executorch.runtime, torch  # the binding's floor, before any model loads
floor = resident_mb()
from edgesdk.runtime.pipeline import TextToImage
pipe = TextToImage(bundle, backend="executorch")
stamps = []
run = pipe.run_component
def timed(component, *arrays):
    out = run(component, *arrays)
    if component == "unet":
        stamps.append(time.perf_counter())
    return out
pipe.run_component = timed
start = time.perf_counter()
pipe.generate([PROMPT], steps=steps, seed=0)
total = time.perf_counter() - start
gaps = [b - a for a, b in zip(stamps, stamps[1:])]
print(json.dumps({"step_s": statistics.median(gaps), "total_s": total, "peak_rss_mb": peak_rss_mb(),
                  "after_imports_mb": floor}))
""".replace("PROMPT", repr(PROMPT))

PYTHON_ZO = r"""
import json, statistics, sys, time
bundle, images, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from edgesdk.runtime.bench import peak_rss_mb, resident_mb
import executorch.runtime, torch
floor = resident_mb()
from edgesdk.runtime.personalize import personalize
from edgesdk.runtime.zo import ZOConfig
stamps = [time.perf_counter()]
start = time.perf_counter()
personalize(bundle, images, "<pinkstar>", "star", out, steps=steps, backend="executorch",
            config=ZOConfig(seed=0, steps=steps), overwrite=True,
            on_step=lambda log: stamps.append(time.perf_counter()))
gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
print(json.dumps({"step_s": statistics.median(gaps), "total_s": time.perf_counter() - start,
                  "peak_rss_mb": peak_rss_mb(), "after_imports_mb": floor}))
"""


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{done.stderr[-2000:]}")
    return last_json(done.stdout)


def summarize(rows: list[dict]) -> dict:
    return {"step_ms": 1000 * statistics.median(r["step_s"] for r in rows),
            "total_s": statistics.median(r["total_s"] for r in rows),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "after_imports_mb": statistics.median(r.get("after_imports_mb", 0.0) for r in rows),
            "runs": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "runtime/cpp/build/fixtures/bundles/tiny-sd/tiny-sd.edge")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--zo-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/cpp_runtime.json")
    args = parser.parse_args()
    if not RUN.exists():
        raise SystemExit(f"{RUN} is missing: build the C++ runtime first (make cpp)")
    bundle = args.bundle
    if not (bundle / "manifest.json").exists():
        bundle = ROOT / "build/cpp-bench/tiny-sd.edge"
        if not (bundle / "manifest.json").exists():
            subprocess.run([str(Path(sys.executable).with_name("edgesdk")), "export", "tiny-sd", "--target",
                            "executorch", "-o", str(bundle)], check=True)
    from edgesdk.data.concepts import write_concept

    work = Path(tempfile.mkdtemp(prefix="edgesdk-cpp-bench-"))
    images = work / "concept"
    write_concept("pink-star", images, count=3)
    results: dict[str, dict] = {}
    python = [sys.executable, "-c"]
    for name, command in [
        ("sample/python", python + [PYTHON_SAMPLE, str(bundle), str(args.steps)]),
        ("sample/cpp", [str(RUN), "sample", str(bundle), "-p", PROMPT, "--steps", str(args.steps),
                        "--raw", str(work / "x.npy"), "--json"]),
        ("zo/python", python + [PYTHON_ZO, str(bundle), str(images), str(args.zo_steps), str(work / "p.safetensors")]),
        ("zo/cpp", [str(RUN), "personalize", str(bundle), "--images", str(images), "--token", "<pinkstar>",
                    "--init-word", "star", "--steps", str(args.zo_steps), "-o", str(work / "c.safetensors"),
                    "--overwrite", "--json"]),
    ]:
        rows = []
        for _ in range(args.repeats):
            row = run(command)
            if "step_s" in row and isinstance(row["step_s"], list):
                gaps = row["step_s"][1:] or row["step_s"]  # the first gap includes setup
                row["step_s"] = statistics.median(gaps)
            row.setdefault("total_s", row.get("generate_s", 0.0))
            rows.append(row)
        results[name] = summarize(rows)
        row = results[name]
        print(f"{name:14s} step {row['step_ms']:8.1f} ms   peak RSS {row['peak_rss_mb']:7.0f} MB", flush=True)
    print(f"\n{'task':8s} {'runtime':8s} {'ms / step':>10s} {'peak RSS MB':>12s} {'after imports MB':>17s}")
    for name, row in results.items():
        task, runtime = name.split("/")
        print(f"{task:8s} {runtime:8s} {row['step_ms']:10.1f} {row['peak_rss_mb']:12.0f} "
              f"{row['after_imports_mb']:17.0f}")
    for task in ("sample", "zo"):
        py, cpp = results[f"{task}/python"], results[f"{task}/cpp"]
        print(f"{task}: C++ {py['step_ms'] / cpp['step_ms']:.2f}x the Python runtime's speed, "
              f"{py['peak_rss_mb'] / cpp['peak_rss_mb']:.1f}x less peak memory")
    payload = {"command": "python benchmarks/cpp_runtime.py " + " ".join(sys.argv[1:]), "bundle": str(bundle),
               "steps": args.steps, "zo_steps": args.zo_steps, "repeats": args.repeats,
               "machine": {"cpu_cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
               "results": results, "when": time.strftime("%Y-%m-%d %H:%M")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temp = args.output.with_suffix(".json.tmp")
    temp.write_text(json.dumps(payload, indent=1))
    temp.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
