"""Whole BNN networks on ONNX Runtime (issue 26): the binary-kernel graph of a `binary` bundle (its binary
convolutions as ai.edgesdk::BinaryConv2d, libedgesdk_ort_ops.so) against the fp32 export of the same weights
(`--quant fp32`), for the shipped digits and shapes ResNet-20, batch 1 and 32, one thread.

    .venv/bin/python benchmarks/bnn_networks_onnx.py [--repeats 5] [--work DIR]

Both graphs are opened the way the runtime opens them (edgesdk.runtime.backends.OnnxSession, one intra-op thread),
on real test images. Latency: the median over calls within one repeat, then the median over repeats; the variants
take turns within each repeat (the machine is shared and its load drifts). Every instruction path this CPU runs is
timed (EDGESDK_BINARY_ISA); the ratio uses the one the runtime picks. The logits of the two graphs are compared
first (they must agree to float rounding, top-1 exactly).

Weight memory is counted, not sampled from RSS (the weights are kilobytes, below what RSS can resolve): the binary graph
keeps each W_packed initializer, which is already the kernel's layout (runtime/cpp/kernels/binary_conv.hpp: 64 input
channels a word, output channels in blocks of 8, so 1 bit a weight plus that padding), and the kernel runs on it in
place; any copy the kernels made (only for unaligned initializers) and the row-packed words they derive for layers whose
kernel row fits one 64-bit word (16 channels at 3x3) are read from the library after the runs
(edgesdk_ort_copied_weight_bytes, edgesdk_ort_row_packed_weight_bytes). All sit beside the float layers' weights; the
fp32 graph keeps every weight as fp32. "x one bit" compares the resident binary weights with one bit a weight. Writes
benchmarks/results/bnn_networks_onnx.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgesdk.data.classification import load_classification, normalise
from edgesdk.exporting import export_model
from edgesdk.runtime.backends import OnnxSession
from edgesdk.runtime.binary_ops import BINARY_CONV, ISA_ENV, binary_isa_name, ort_ops_library
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.onebit import model_source
from edgesdk.zoo.bnn import default_bnn_path

DATASETS = ("digits", "shapes")
BATCHES = (1, 32)
ISAS = ("avx512", "avx2", "neon", "scalar")


def bundles(work: Path, dataset: str) -> tuple[Bundle, Bundle]:
    """(binary, fp32) ONNX bundles of the shipped network, exported once into ``work``."""
    made = []
    for recipe in ("binary", "fp32"):
        path = work / f"bnn-{dataset}-{recipe}.edge"
        if not (path / "manifest.json").exists():
            export_model("bnn", path, "onnx", quant=recipe, weights=default_bnn_path(dataset), log=lambda _m: None)
        made.append(Bundle.open(path))
    return made[0], made[1]


def call_ms(session: OnnxSession, feeds: dict[str, np.ndarray], budget_s: float) -> float:
    """Median call time in ms over about ``budget_s`` of calls (at least 5)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        session.run(feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def timed(variants: dict[str, tuple[OnnxSession, str | None]], feeds: dict[str, np.ndarray], repeats: int,
          budget_s: float) -> dict[str, float]:
    """Median over repeats of each variant's median call time (ms). The variants take turns within every repeat,
    so that load from the rest of a shared machine falls on all of them alike. A variant is (session, the
    instruction path to force, or None)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for session, _ in variants.values():
        session.run(feeds)  # warm-up: the op packs its weights on the first run
    for _ in range(repeats):
        for name, (session, isa) in variants.items():
            if isa is None:
                os.environ.pop(ISA_ENV, None)
            else:
                os.environ[ISA_ENV] = isa
            samples[name].append(call_ms(session, feeds, budget_s))
    os.environ.pop(ISA_ENV, None)
    return {name: statistics.median(values) for name, values in samples.items()}


def weight_memory(binary_graph: onnx.ModelProto, float_graph: onnx.ModelProto, kernel_copy: int,
                  row_packed: int) -> dict[str, int]:
    """Bytes of weights each graph keeps (see the module doc); ``kernel_copy``: what the kernels copied;
    ``row_packed``: the row-packed words they derived for layers whose kernel row fits one word."""
    initializers = {t.name: numpy_helper.to_array(t) for t in binary_graph.graph.initializer}
    packed_names, binary_weights = set(), 0
    for node in binary_graph.graph.node:
        if node.op_type != BINARY_CONV:
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        _, kh, kw, _, _, _ = initializers[node.input[1]].shape
        binary_weights += int(attributes["out_channels"]) * kh * kw * int(attributes["in_channels"])
        packed_names.add(node.input[1])
    packed = sum(initializers[n].nbytes for n in packed_names)
    float_rest = sum(a.nbytes for n, a in initializers.items() if n not in packed_names and a.dtype == np.float32)
    fp32_all = sum(numpy_helper.to_array(t).nbytes for t in float_graph.graph.initializer
                   if t.data_type == onnx.TensorProto.FLOAT)
    return {"binary_weights": binary_weights, "binary_weights_fp32_bytes": 4 * binary_weights,
            "one_bit_bytes": (binary_weights + 7) // 8, "packed_bytes": packed, "kernel_copy_bytes": kernel_copy,
            "row_packed_bytes": row_packed, "binary_layers_resident_bytes": packed + kernel_copy + row_packed,
            "float_layers_bytes": float_rest,
            "binary_graph_weights_bytes": packed + kernel_copy + row_packed + float_rest,
            "fp32_graph_weights_bytes": fp32_all}


def kernel_weight_bytes(library: Path, counter: str) -> int:
    """A counter of the library's live kernels: "copied" (W_packed copies, 0 when every kernel runs in place) or
    "row_packed" (words derived for layers whose kernel row fits one word)."""
    lib = ctypes.CDLL(str(library))
    function = getattr(lib, f"edgesdk_ort_{counter}_weight_bytes")
    function.restype = ctypes.c_int64
    function.argtypes = []
    return int(function())


def runnable_isas(library: Path) -> list[str]:
    saved = os.environ.get(ISA_ENV)
    found = []
    try:
        for isa in ISAS:
            os.environ[ISA_ENV] = isa
            try:
                if binary_isa_name(library) == isa:
                    found.append(isa)
            except Exception:  # noqa: BLE001 - a path this CPU cannot run
                pass
    finally:
        os.environ.pop(ISA_ENV, None)
        if saved is not None:
            os.environ[ISA_ENV] = saved
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.4, help="seconds of calls per repeat")
    parser.add_argument("--work", type=Path, default=None, help="where the exported bundles are kept (default: a "
                                                                "temporary folder)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bnn_networks_onnx.json")
    args = parser.parse_args()
    library = ort_ops_library()
    if library is None:
        print("libedgesdk_ort_ops.so is not built (`make cpp` where onnxruntime_c_api.h is found, or "
              "EDGESDK_ORT_OPS_LIB): nothing to measure", file=sys.stderr)
        return 2
    os.environ.pop(ISA_ENV, None)
    default_isa = binary_isa_name(library)
    isas = runnable_isas(library)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        memory: dict[str, dict[str, int]] = {}
        for dataset in DATASETS:
            binary_bundle, fp32_bundle = bundles(work, dataset)
            info = binary_bundle.component("classifier")
            offered = info.binary_kernel["onnx"]
            binary_path = binary_bundle.path_of(offered["file"])
            fp32_info = fp32_bundle.component("classifier")
            fp32_source = model_source(fp32_bundle.path_of(fp32_info.files["onnx"]))
            fp32_graph = onnx.load_from_string(fp32_source) if isinstance(fp32_source, bytes) else onnx.load(
                fp32_source)
            binary = OnnxSession(binary_path, info, threads=1, custom_ops_library=library)
            fp32 = OnnxSession(fp32_bundle.path_of(fp32_info.files["onnx"]), fp32_info, threads=1)
            model = binary_bundle.model
            split = load_classification(dataset)
            images = normalise(split.test_images, model["mean"], model["std"])
            got, reference = binary.run({"image": images})["logits"], fp32.run({"image": images})["logits"]
            memory[dataset] = weight_memory(onnx.load(binary_path), fp32_graph, kernel_weight_bytes(library, "copied"),
                                            kernel_weight_bytes(library, "row_packed"))
            difference = float(np.abs(got - reference).max())
            top1 = float((got.argmax(1) == reference.argmax(1)).mean())
            if top1 != 1.0 or difference > 1e-4 * float(np.abs(reference).max()):
                print(f"{dataset}: the binary graph disagrees with fp32 (max |diff| {difference}, top-1 {top1})",
                      file=sys.stderr)
                return 1
            for batch in BATCHES:
                feeds = {"image": np.ascontiguousarray(images[:batch])}
                ms = timed({"fp32": (fp32, None), **{isa: (binary, isa) for isa in isas}}, feeds, args.repeats,
                           args.budget)
                fp32_ms, binary_ms = ms.pop("fp32"), ms
                rows.append({"dataset": dataset, "batch": batch, "fp32_ms": fp32_ms, "binary_ms": binary_ms,
                             "speedup": fp32_ms / binary_ms[default_isa], "max_abs_logit_difference": difference,
                             "top1_agreement_with_fp32": top1, "binary_layers": offered["binary_layers"],
                             "resolution": list(images.shape[1:])})
    print(f"ONNX Runtime, 1 thread, median of {args.repeats} repeats; binary path picked here: {default_isa} "
          f"(runnable: {', '.join(isas)})")
    header = "| network | batch | fp32 ms | " + " | ".join(f"binary {i} ms" for i in isas) + " | x vs fp32 |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        name = f"{row['dataset']} ({row['binary_layers']} binary layers)"
        print(f"| {name} | {row['batch']} | {row['fp32_ms']:.3f} | " +
              " | ".join(f"{row['binary_ms'][i]:.3f}" for i in isas) + f" | {row['speedup']:.2f} |")
    print("\nweight memory, bytes (counted):")
    print("| network | binary weights | as fp32 | one bit each | packed (file, initializer) | kernel copy "
          "| row-packed | binary layers resident | x one bit | float layers | binary graph total | fp32 graph total |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dataset, m in memory.items():
        print(f"| {dataset} | {m['binary_weights']} | {m['binary_weights_fp32_bytes']} | {m['one_bit_bytes']} | "
              f"{m['packed_bytes']} | {m['kernel_copy_bytes']} | {m['row_packed_bytes']} | "
              f"{m['binary_layers_resident_bytes']} | "
              f"{m['binary_layers_resident_bytes'] / m['one_bit_bytes']:.2f} | {m['float_layers_bytes']} | "
              f"{m['binary_graph_weights_bytes']} | {m['fp32_graph_weights_bytes']} |")
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count()},
              "isa_default": default_isa, "isas_runnable": isas, "threads": 1, "repeats": args.repeats,
              "latency": rows, "weight_memory": memory}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
