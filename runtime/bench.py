"""Latency and memory of a bundle on one backend, measured the way an app would see them.

Run as ``python -m edgesdk.runtime.bench BUNDLE --backend onnx`` it prints one JSON object; the
``edgesdk bench`` command starts one such process per backend so each peak RSS is that backend's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edgesdk.runtime.backends import open_session
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.pipeline import TextToImage

BENCH_PROMPT = "a large red star on a blue background"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far.

    On Linux this is VmHWM from /proc, which starts afresh at exec; getrusage's ru_maxrss would carry the
    peak of the parent that spawned us (a benchmark driver that loaded torch) into our figure.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "runs": len(ms)}


def _example_inputs(bundle: Bundle, component: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in bundle.component(component).inputs:
        shape = [batch if isinstance(d, str) else int(d) for d in spec.shape]
        if spec.name == "timestep":
            feeds[spec.name] = np.full(shape, 500.0, dtype=np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def bench_backend(bundle_path: Path, backend: str, steps: int = 25, runs: int = 5, component_runs: int = 20,
                  threads: int | None = None, sampler: str = "ddim") -> dict:
    rss_start = peak_rss_mb()
    if backend == "executorch":
        # The Python binding pulls in torch (~300 MB); an app linking the C++ runtime does not. Measured apart.
        import executorch.runtime  # noqa: F401
    rss_imported = peak_rss_mb()
    t0 = time.perf_counter()
    bundle = Bundle.open(bundle_path)
    text_to_image = bundle.family == "tiny-sd"  # other bundles (users' own models) get per-component figures only
    pipe = TextToImage(bundle, backend=backend, threads=threads) if text_to_image else None
    sessions = {name: pipe.session(name) if pipe else open_session(bundle, name, backend, threads)
                for name in bundle.components}
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()

    rng = np.random.default_rng(0)
    components = {}
    for name in bundle.components:
        if text_to_image:
            batch = 2 if name in ("text_encoder", "unet") else 1  # a CFG pair; one image for the VAE
        else:
            batch = int(bundle.model.get("example_batch", 1))
        feeds = _example_inputs(bundle, name, batch, rng)
        session = sessions[name]
        session.run(feeds)  # warm-up: first calls allocate and pack weights
        times = []
        for _ in range(component_runs):
            start = time.perf_counter()
            session.run(feeds)
            times.append(time.perf_counter() - start)
        components[name] = {"batch": batch, **percentiles(times)}

    residency = {}
    if backend == "onnx":
        from edgesdk.runtime.memory import onnx_weight_residency

        for name, info in bundle.components.items():
            residency[name] = onnx_weight_residency(bundle.path_of(info.files["onnx"]))
            if not residency[name]["int_weights_kept"]:
                raise EdgeSDKError(
                    f"memory check failed: ONNX Runtime expanded the int8 weights of '{name}' to fp32 at session "
                    f"start ({residency[name]['int_weight_bytes_file']} int8 bytes in the file, "
                    f"{residency[name]['int_weight_bytes_session']} left in the session graph)")

    sample = None
    if pipe is not None:
        pipe.generate([BENCH_PROMPT], steps=steps, seed=0, sampler=sampler)  # warm-up
        totals = []
        for run in range(runs):
            start = time.perf_counter()
            pipe.generate([BENCH_PROMPT], steps=steps, seed=run, sampler=sampler)
            totals.append(time.perf_counter() - start)
        sample = percentiles(totals)
        sample["per_step_ms"] = sample["p50_ms"] / steps
    sizes = {name: sum(bundle.file_sizes().get(path, 0) for t, path in info.files.items() if t == backend)
             for name, info in bundle.components.items()}
    return {"backend": backend, "steps": steps, "sampler": sampler, "load_s": load_s, "weight_residency": residency,
            "components": components, "sample": sample, "file_bytes": sizes,
            "rss_mb": {"at_start": rss_start, "after_runtime_import": rss_imported, "after_load": rss_loaded,
                       "peak": peak_rss_mb(), "model_and_inference": peak_rss_mb() - rss_imported}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--component-runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        result = bench_backend(args.bundle, args.backend, args.steps, args.runs, args.component_runs, args.threads)
    except EdgeSDKError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
