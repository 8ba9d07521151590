"""ExecuTorch against ONNX Runtime on the same bundles, at equal CPU threads, interleaved.

`edgesdk bench` runs each backend in a process of its own, one after the other: right for peak memory, but on a
machine whose cores are shared, a load that comes and goes lands on one backend and not the other. Here every
session of every bundle is opened in one process per thread count (ExecuTorch's pool is process-wide) and timed in
rounds, one bundle and backend after another, so the noise falls on all of them alike; the figure is the median over
rounds of each round's median, and the ratios are ExecuTorch's time over ONNX Runtime's in the same process.

    python benchmarks/backend_latency.py resnet18.edge deit.edge --threads 1,2 --rounds 7 --runs 10
    python benchmarks/backend_latency.py new.edge old.edge:executorch --threads 1   # ':' picks backends

The first bundle that has an "onnx" file is the reference of the bundles after it that have none (an old ExecuTorch
export beside a new bundle of the same model). Models with one input of a fixed shape, random normal data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _targets(specs: list[str]) -> list[tuple[str, str]]:
    from edgesdk.runtime.bundle import Bundle

    pairs = []
    for spec in specs:
        path, _, wanted = spec.partition(":")
        bundle = Bundle.open(Path(path))
        have = [b for b in ("executorch", "onnx") if b in bundle.targets()]
        for backend in wanted.split(",") if wanted else have:
            pairs.append((path, backend))
    return pairs


def worker(specs: list[str], threads: int, rounds: int, runs: int) -> dict:
    from edgesdk.runtime.backends import open_session
    from edgesdk.runtime.bundle import Bundle

    rng = np.random.default_rng(0)
    calls = {}
    for path, backend in _targets(specs):
        bundle = Bundle.open(Path(path))
        name = next(iter(bundle.components))
        session = open_session(bundle, name, backend, threads=threads)
        feeds = {spec.name: rng.standard_normal([1 if isinstance(d, str) else int(d) for d in spec.shape])
                 .astype(spec.dtype) for spec in bundle.component(name).inputs}
        calls[f"{path}:{backend}"] = (lambda s=session, f=feeds: s.run(f))
    for call in calls.values():
        for _ in range(3):
            call()
    medians: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            medians[key].append(1000 * statistics.median(times))
    return {key: statistics.median(values) for key, values in medians.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", help="NAME.edge, or NAME.edge:executorch,onnx")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, one process each")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=10, help="calls per round")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.bundles, args.worker, args.rounds, args.runs)))
        return 0
    results: dict = {"command": " ".join(sys.argv), "threads": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        done = subprocess.run([sys.executable, __file__, *args.bundles, "--worker", str(threads), "--rounds",
                               str(args.rounds), "--runs", str(args.runs)], capture_output=True, text=True, check=True)
        times = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
        reference = None
        rows = {}
        for key, ms in times.items():
            path, backend = key.rsplit(":", 1)
            onnx = times.get(f"{path}:onnx")
            reference = onnx if onnx is not None else reference
            rows[key] = {"ms": round(ms, 2)}
            if backend == "executorch" and reference:
                rows[key]["vs_onnx"] = round(ms / reference, 2)
            print(f"threads {threads}  {key:60s} {ms:8.2f} ms" +
                  (f"  {rows[key]['vs_onnx']:.2f}x ONNX Runtime" if "vs_onnx" in rows[key] else ""))
        results["threads"][str(threads)] = rows
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
