"""What `edgesdk inspect` and `edgesdk bench` print: summaries as dicts (for --json) and rich tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgesdk.runtime.backends import BACKENDS
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import write_text


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # logs and pipes: rich would wrap tables at 80 columns
        console = Console(width=150)
    return console


def write_json(path: Path, value: object) -> Path:
    """Atomic JSON write."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def bundle_summary(bundle_path: Path) -> dict:
    bundle = Bundle.open(bundle_path)
    manifest = bundle.manifest
    sizes = bundle.file_sizes()
    components = {}
    for name, raw in manifest["components"].items():
        components[name] = {
            "inputs": raw["inputs"], "outputs": raw["outputs"],
            "files": {t: {"path": p, "bytes": sizes.get(p, 0)} for t, p in raw["files"].items()},
            "static_shapes": raw.get("static_shapes", {}), "parity": raw.get("parity", {}),
            "delegation": raw.get("delegation", {}),
            "sensitivity": raw.get("sensitivity"), "float_layers": raw.get("float_layers", []),
            "binary_kernel": _binary_kernel_summary(bundle, name),
        }
    vocabulary = manifest["assets"].get("vocabulary")
    return {
        "path": str(bundle.root), "format_version": manifest["format_version"], "family": bundle.family,
        "quantization": manifest.get("quantization", {}), "model": bundle.model, "targets": bundle.targets(),
        "total_bytes": sum(sizes.values()), "components": components,
        "vocabulary": bundle.asset_json("vocabulary")["tokens"] if vocabulary else None,
        "quality": manifest.get("quality"),
    }


def _binary_kernel_summary(bundle: Bundle, component: str) -> dict:
    """What the bundle offers for edgesdk's binary convolution kernel, per runtime, and for ONNX Runtime which
    kernel a session opened here would run ("binary avx2", or "float" and why)."""
    from edgesdk.runtime.binary_ops import onnx_kernel_choice

    info = bundle.component(component)
    summary = {runtime: dict(entry) for runtime, entry in info.binary_kernel.items() if isinstance(entry, dict)}
    if "onnx" in summary:
        choice = onnx_kernel_choice(bundle, info)
        summary["onnx"]["here"] = {"kernel": choice.kernel, "note": choice.note}
    return summary


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def summary_tables(summary: dict) -> None:
    console = _console()
    console.print(f"[bold]{summary['path']}[/]  family {summary['family']}  format v{summary['format_version']}  "
                  f"quantization {summary['quantization'].get('recipe', '?')}  total {_mb(summary['total_bytes'])}")
    table = Table(title="components")
    for col in ("component", "target", "file", "size", "worst max-abs / range", "min SQNR dB", "delegated / integer"):
        table.add_column(col)
    for name, comp in summary["components"].items():
        for target, file in comp["files"].items():
            parity = comp["parity"].get(target, {})
            rel = max((v["rel_max_abs"] for v in parity.values()), default=None)
            sqnr = min((v["sqnr_db"] for v in parity.values()), default=None)
            deleg = comp["delegation"].get(target, {})
            if "delegated_share" in deleg:
                share = f"{deleg['delegated_share']:.1%} XNNPACK ({deleg['segments']} segment(s))"
            elif "integer_kernel_share" in deleg:
                share = f"{deleg['integer_kernel_share']:.0%} of matrix ops in int kernels"
            else:
                share = "-"
            table.add_row(name, target, file["path"], _mb(file["bytes"]), "-" if rel is None else f"{rel:.2e}",
                          "-" if sqnr is None else f"{sqnr:.1f}", share)
    console.print(table)
    for name, comp in summary["components"].items():
        offered = (comp.get("binary_kernel") or {}).get("onnx")
        if offered:
            here = offered["here"]
            console.print(f"{name}: binary-kernel ONNX graph {offered['file']} ({offered['binary_layers']} x "
                          f"{offered['op']}, {offered['packed_weight_bytes']} bytes of packed weights); here: "
                          f"{here['kernel']}" + (f" ({here['note']})" if here["note"] else ""))
    for name, comp in summary["components"].items():
        if comp.get("sensitivity"):
            sensitivity_table(console, name, comp["sensitivity"], comp.get("float_layers", []))
    quality = summary.get("quality")
    if quality:
        console.print(f"prompt accuracy ({quality['samples']} samples, {quality['steps']} steps): " + "; ".join(
            f"{where} kind {acc['kind']:.0%} colour {acc['colour']:.0%}"
            for where, acc in quality["prompt_accuracy"].items()))
    if summary.get("vocabulary"):
        console.print("vocabulary: " + " ".join(summary["vocabulary"]))


WORST_LAYERS_SHOWN = 8


def sensitivity_table(console: Console, component: str, sensitivity: dict, float_layers: list[str]) -> None:
    """The layers int8 hurts most (one at a time, simulated), and which of them the bundle keeps in fp32."""
    layers = sensitivity["layers"]
    table = Table(title=f"{component}: the {min(WORST_LAYERS_SHOWN, len(layers))} of {len(layers)} int8 layers that "
                        f"cost most alone (all int8, simulated: {sensitivity['all_layers_sqnr_db']:.1f} dB; "
                        f"{sensitivity['rows']} evaluation rows)")
    for col in ("layer", "op", "SQNR dB alone", "share of the noise", "kept in fp32"):
        table.add_column(col)
    for layer in layers[:WORST_LAYERS_SHOWN]:
        table.add_row(layer["layer"], layer["op"], f"{layer['sqnr_db']:.1f}", f"{layer['noise_share']:.1%}",
                      "yes" if layer["layer"] in float_layers else "")
    console.print(table)
    if float_layers:
        console.print(f"{component}: {len(float_layers)} layer(s) kept in fp32: {', '.join(float_layers)}")


def runnable_backends(bundle: Bundle) -> list[str]:
    """The bundle's targets that can run on this machine (TensorRT only where it imports; ExecuTorch where its
    Python binding or the C++ runtime's library is installed, which a core install has not)."""
    from edgesdk.runtime.backends import executorch_runtime

    names = []
    for target in bundle.targets():
        if target == "executorch":
            try:
                executorch_runtime()
            except EdgeSDKError:
                continue
        if target == "tensorrt":
            try:
                import tensorrt  # noqa: F401
            except Exception:
                continue
        names.append(target)
    return names


def bench_bundle(bundle_path: Path, backends: str = "", steps: int = 25, runs: int = 5,
                 threads: int | None = None) -> dict:
    """One subprocess per backend, so that each peak RSS belongs to that backend alone. ``threads``: the same CPU
    thread count for every backend (None: each backend's default)."""
    bundle = Bundle.open(bundle_path)
    if steps < 1 or runs < 1:
        raise EdgeSDKError(f"--steps and --runs must be at least 1 (got {steps} and {runs})")
    if threads is not None and threads < 1:
        raise EdgeSDKError(f"--threads must be at least 1, got {threads}")
    names = [b.strip() for b in backends.split(",") if b.strip()] or runnable_backends(bundle)
    for name in names:
        if name not in BACKENDS:
            raise EdgeSDKError(f"unknown backend '{name}'; choose from {', '.join(sorted(BACKENDS))}")
    results = {"bundle": str(bundle.root), "family": bundle.family, "backends": {}}
    for name in names:
        proc = subprocess.run(
            [sys.executable, "-m", "edgesdk.runtime.bench", str(bundle.root), "--backend", name,
             "--steps", str(steps), "--runs", str(runs), *(["--threads", str(threads)] if threads else [])],
            capture_output=True, text=True, check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgeSDKError(f"benchmark of backend '{name}' failed: {tail}")
        result = json.loads(lines[-1])
        if "error" in result:
            raise EdgeSDKError(result["error"])
        results["backends"][name] = result
    return results


def bench_tables(results: dict) -> None:
    console = _console()
    table = Table(title=f"latency per component call ({results['bundle']})")
    for col in ("backend", "threads", "component", "batch", "p50 ms", "p90 ms", "kernel"):
        table.add_column(col)
    for backend, res in results["backends"].items():
        used = res.get("threads") or {}
        pool = used.get("executorch_pool")
        threads = str(used.get("requested") or "default") + (f" (pool {pool})" if pool else "")
        for name, comp in res["components"].items():
            table.add_row(backend, threads, name, str(comp["batch"]), f"{comp['p50_ms']:.2f}", f"{comp['p90_ms']:.2f}",
                          comp.get("kernel") or "-")
    console.print(table)
    for backend, res in results["backends"].items():
        for comp in res["components"].values():
            if comp.get("kernel_note"):
                console.print(f"note: {backend}: {comp['kernel_note']}")
    title = "full sample (1 image, CFG) and memory" if results["family"] == "tiny-sd" else "memory (no sampler)"
    table = Table(title=title)
    for col in ("backend", "steps", "p50 ms", "p90 ms", "per step ms", "load s", "peak RSS MB",
                "RSS above runtime import MB", "files MB"):
        table.add_column(col)
    for backend, res in results["backends"].items():
        s = res["sample"]
        timing = ([str(res["steps"]), f"{s['p50_ms']:.1f}", f"{s['p90_ms']:.1f}", f"{s['per_step_ms']:.2f}"]
                  if s else ["-", "-", "-", "-"])
        table.add_row(backend, *timing, f"{res['load_s']:.2f}", f"{res['rss_mb']['peak']:.0f}",
                      f"{res['rss_mb']['model_and_inference']:.0f}", f"{sum(res['file_bytes'].values()) / 1e6:.2f}")
    console.print(table)
    for backend, res in results["backends"].items():
        residency = res.get("weight_residency") or {}
        quantized = {n: r for n, r in residency.items() if r["int_weight_bytes_file"]}
        if quantized:
            mb = sum(r["int_weight_bytes_session"] for r in quantized.values()) / 1e6
            console.print(f"{backend}: integer weights stay integer in the session graph for all {len(quantized)} "
                          f"quantized components ({mb:.2f} MB of integer weights in memory)")
        for name, check in (res.get("load_growth") or {}).items():
            if check.get("verdict"):
                planned = (f"; {check['planned_mb']:.1f} MB of it the program's planned activation buffer, "
                           f"{check['weights_growth_mb']:.1f} MB left for weights") if check.get("planned_mb") else ""
                console.print(f"{backend}: opening {name} grew memory by {check['growth_mb']:.1f} MB{planned} (file "
                              f"{check['file_mb']:.1f} MB, fp32 weights {check['fp32_weights_mb']:.1f} MB, limit "
                              f"{check['limit_mb']:.1f} MB): weights {check['verdict']}")
