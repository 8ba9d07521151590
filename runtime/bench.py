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

from edgesdk.runtime.backends import executorch_runtime, open_session, session_kernel
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.onebit import model_source
from edgesdk.runtime.pipeline import TextToImage
from edgesdk.runtime.pte import planned_buffer_bytes

BENCH_PROMPT = "a large red star on a blue background"


def _proc_status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status in MB (Linux), or None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far.

    On Linux this is VmHWM from /proc, which starts afresh at exec; getrusage's ru_maxrss would carry the
    peak of the parent that spawned us (a benchmark driver that loaded torch) into our figure.
    """
    peak_mb = _proc_status_mb("VmHWM")
    if peak_mb is not None:
        return peak_mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def resident_mb() -> float:
    """Resident set size now (VmRSS), or NaN where /proc is missing (then no growth check is made)."""
    now_mb = _proc_status_mb("VmRSS")
    return float("nan") if now_mb is None else now_mb


# Below this many fp32 weight bytes a component's growth is lost in allocator noise: no verdict is given.
RESIDENCY_MIN_FP32_BYTES = 4_000_000


def weight_growth_check(growth_mb: float, file_bytes: int, fp32_bytes: int | None, judge: bool,
                        planned_bytes: int = 0) -> dict:
    """Did loading a quantized component grow memory by about its file, or by its fp32 weights?

    Loading keeps the program's bytes (the file) and, where weights stay integer, XNNPACK's packed copy of them: about
    twice the file. Expanded weights make it the file plus the fp32 weights. Growth past the midpoint of the two means
    the runtime expanded integer weights back to float (or kept a float copy), and what quantizing was for is lost.
    Measured over opening the program, where XNNPACK packs its weights. On tiny-sd's UNet with ExecuTorch: fp32
    +13.2 MB for 12.1 MB of weights; w8a8 +5.1 MB (file 3.4 MB); w4 +4.1 MB (file 1.9 MB). ONNX Runtime's growth
    is mostly its session (the fp32 UNet takes 2.5x its weights), so there the session graph is checked instead
    (``judge`` False).

    Opening a method also allocates its memory plan (``planned_bytes``, read from the .pte: edgesdk.runtime.pte),
    zero-filled and so resident at once: activations and inputs/outputs, not weights. It is taken off the growth
    before the verdict. A program with ops outside the XNNPACK delegate plans every tensor passed between them (a w8a8
    mobile ViT with 49 delegates: 13.8 MB planned for a 2.6 MB file), which alone went past the limit."""
    result: dict = {"growth_mb": round(growth_mb, 2), "file_mb": round(file_bytes / 1e6, 2),
                    "fp32_weights_mb": None if fp32_bytes is None else round(fp32_bytes / 1e6, 2),
                    "planned_mb": round(planned_bytes / 1e6, 2), "verdict": None}
    if not judge or fp32_bytes is None or fp32_bytes < RESIDENCY_MIN_FP32_BYTES or growth_mb != growth_mb:
        return result  # not judged here, too small to tell, an old bundle without the figure, or no /proc
    result["weights_growth_mb"] = round(max(0.0, growth_mb - planned_bytes / 1e6), 2)
    # kept: the program's bytes plus XNNPACK's packed int8 copy, about twice the file; expanded: the program's bytes
    # plus a float copy. The verdict splits the two halfway. (Halfway from one file to fp32, the earlier limit,
    # refused kept weights on small models: a w8a8 mobilenet_v3_small, 1.73 MB, grew 5.05 MB past its plan, fp32 6.16)
    result["limit_mb"] = round((3 * file_bytes + max(fp32_bytes, file_bytes)) / 2 / 1e6, 2)
    result["verdict"] = "kept" if result["weights_growth_mb"] <= result["limit_mb"] else "expanded"
    return result


def planned_bytes_at_open(bundle: Bundle, component: str, backend: str) -> int:
    """Bytes of the memory plan a session allocates when it opens (ExecuTorch: the "forward" method, which both
    runtimes load at open; the others load on first use). 0 for other backends (ONNX Runtime's arena grows on run)."""
    if backend != "executorch":
        return 0
    source = model_source(bundle.path_of(bundle.component(component).files["executorch"]))
    return planned_buffer_bytes(source).get("forward", 0)


def threads_used(backend: str, requested: int | None) -> dict:
    """The CPU threads a backend ran with, for comparing backends at equal threads: ``requested`` (None: the
    backend's default) and, for the ExecuTorch Python binding, its pool's actual size (ExecuTorch's default is one per
    performance core, ONNX Runtime's one per physical core)."""
    used: dict = {"requested": requested}
    if backend == "executorch" and executorch_runtime() == "python":
        from edgesdk.runtime.executorch_backend import thread_count

        used["executorch_pool"] = thread_count()
    return used


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
    if backend == "executorch" and executorch_runtime() == "python":
        # The Python binding pulls in torch (~300 MB); an app linking the C++ runtime does not. Measured apart.
        from edgesdk.runtime.executorch_backend import import_bindings

        import_bindings()
    rss_imported = peak_rss_mb()
    t0 = time.perf_counter()
    bundle = Bundle.open(bundle_path)
    # whole samples for a text-to-image bundle whose vocabulary has the benchmark prompt's words; per-component
    # figures only for the rest (other tasks, synthetic vocabularies)
    pipe = TextToImage(bundle, backend=backend, threads=threads) if bundle.task == "text-to-image" else None
    if pipe is not None:
        try:
            pipe.tokenizer.embed(BENCH_PROMPT, pipe.token_table)
        except EdgeSDKError:
            pipe = None
    text_to_image = pipe is not None
    load_s = time.perf_counter() - t0
    quantized = bundle.manifest.get("quantization", {}).get("recipe", "fp32") != "fp32"
    file_sizes = bundle.file_sizes()

    rng = np.random.default_rng(0)
    components, growth = {}, {}
    for name, info in bundle.components.items():
        if text_to_image:
            batch = 2 if name in ("text_encoder", "unet") else 1  # a CFG pair; one image for the VAE
        else:
            batch = int(bundle.model.get("example_batch", 1))
        feeds = _example_inputs(bundle, name, batch, rng)
        before, t_open = resident_mb(), time.perf_counter()
        session = pipe.session(name) if pipe else open_session(bundle, name, backend, threads)
        opened = resident_mb()
        session.run(feeds)  # warm-up: first calls allocate working memory
        load_s += time.perf_counter() - t_open
        judged = quantized and backend == "executorch"
        growth[name] = weight_growth_check(opened - before, file_sizes.get(info.files[backend], 0),
                                           info.fp32_weight_bytes, judge=judged,
                                           planned_bytes=planned_bytes_at_open(bundle, name, backend) if judged else 0)
        growth[name]["first_run_mb"] = round(resident_mb() - opened, 2)
        if growth[name]["verdict"] == "expanded":
            check = growth[name]
            raise EdgeSDKError(
                f"memory check failed: opening {name} on {backend} grew memory by {check['growth_mb']} MB; less the "
                f"{check['planned_mb']} MB the program plans for activations, {check['weights_growth_mb']} MB, past "
                f"{check['limit_mb']} MB (halfway between twice its {check['file_mb']} MB file, weights kept, and the "
                f"file plus {check['fp32_weights_mb']} MB of fp32 weights): integer weights were expanded")
        times = []
        for _ in range(component_runs):
            start = time.perf_counter()
            session.run(feeds)
            times.append(time.perf_counter() - start)
        kernel, kernel_note = session_kernel(session)
        components[name] = {"batch": batch, **percentiles(times), "kernel": kernel, "kernel_note": kernel_note}

    rss_warm = peak_rss_mb()

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
            "load_growth": growth, "threads": threads_used(backend, threads),
            "components": components, "sample": sample, "file_bytes": sizes,
            "rss_mb": {"at_start": rss_start, "after_runtime_import": rss_imported, "after_load_and_warmup": rss_warm,
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
