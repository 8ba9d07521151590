"""One binary 3x3 convolution layer (stride 1, pad 1, batch 1, one thread) at ResNet shapes: the bit-packed kernel
(ONNX Runtime custom op ai.edgesdk::BinaryConv2d, libedgesdk_ort_ops.so) against the same layer in fp32 (ONNX
Runtime Conv after the sign; ExecuTorch/XNNPACK via edgesdk's lowering) and in int8 (ONNX Runtime QLinearConv, its
optimized int8 kernel, and ConvInteger, which gives the same integers exactly).

    .venv/bin/python benchmarks/bnn_kernel.py [--repeats 5] [--all-shapes]

Every variant's output is checked against the binary op's first (fp32, ExecuTorch and ConvInteger must be equal
exactly, their sums being of +-1 and 0; QLinearConv's int8 output is rounded, its largest error is reported).
Latency: the median over calls within one repeat (0.15 s of calls), then the median over repeats, the variants taking
turns within every repeat (the machine is shared, and its slow spells last seconds); each row also gives ONNX Runtime's
cost of a run from Python (an Identity graph) and the speed-up over ORT fp32 net of it. Writes
benchmarks/results/bnn_kernel.json and prints which instruction path ran.

    .venv/bin/python benchmarks/bnn_kernel.py --networks [--repeats 3]

Whole networks instead (the shipped digits and shapes ResNet-20, batch 1 and 32, one thread): the BNN bundle's
binary-kernel program on the C++ runtime (libedgesdk_c.so, `make cpp`) against the fp32 export of the same weights
(--quant fp32) on the C++ runtime, on ExecuTorch's Python binding and on ONNX Runtime; latency p50 per batch, the
binary program's logits against the fp32 program's, and its resident binary weights (the program's constants, in the
kernel's layout, which it reads in place, + any copy the kernel made: libedgesdk_c's repacked-bytes counter, 0 in
place, + the row-packed words it derives for layers whose kernel row fits one word) against one bit a weight.
Writes benchmarks/results/bnn_networks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgesdk.runtime.binary_ops import (
    BINARY_CONV,
    DOMAIN,
    ISA_ENV,
    OPSET_VERSION,
    binary_isa_name,
    ort_ops_library,
    pack_binary_weights,
)

RESULTS = Path(__file__).resolve().parent / "results" / "bnn_kernel.json"
RESNET_SHAPES = [(64, 32), (128, 16), (256, 8)]  # channels, side: the three stages of a CIFAR ResNet
ALL_SHAPES = [(c, s) for c in (64, 128, 256) for s in (32, 16, 8)]
SIGN_GAIN = 2.0 ** 100


def ort_session(model: Any, library: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if library is not None:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def make_model(nodes: list[Any], initializers: list[Any], channels: int, side: int) -> Any:
    graph = helper.make_graph(nodes, "layer",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, channels, side, side])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, channels, side, side])],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(DOMAIN, OPSET_VERSION)])


def sign_nodes(output: str) -> tuple[list[Any], list[Any]]:
    """s(x) = clamp(x * 2^100, -1, 1), as the exported float graph computes it."""
    nodes = [helper.make_node("Mul", ["X", "gain"], ["scaled"]),
             helper.make_node("Clip", ["scaled", "low", "high"], [output])]
    constants = [numpy_helper.from_array(np.array(SIGN_GAIN, np.float32), "gain"),
                 numpy_helper.from_array(np.array(-1.0, np.float32), "low"),
                 numpy_helper.from_array(np.array(1.0, np.float32), "high")]
    return nodes, constants


def binary_model(weights: np.ndarray, channels: int, side: int) -> Any:
    node = helper.make_node(BINARY_CONV, ["X", "W_packed"], ["Y"], domain=DOMAIN, in_channels=channels,
                            out_channels=int(weights.shape[0]), kernel_shape=[3, 3], strides=[1, 1],
                            pads=[1, 1, 1, 1])
    return make_model([node], [numpy_helper.from_array(pack_binary_weights(weights), "W_packed")], channels, side)


def fp32_model(weights: np.ndarray, channels: int, side: int) -> Any:
    nodes, constants = sign_nodes("signs")
    bits = np.where(weights >= 0, 1.0, -1.0).astype(np.float32)
    nodes.append(helper.make_node("Conv", ["signs", "bits"], ["Y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    return make_model(nodes, [*constants, numpy_helper.from_array(bits, "bits")], channels, side)


def int8_model(weights: np.ndarray, channels: int, side: int) -> Any:
    """s(x) quantized exactly (uint8, scale 1, zero point 1: -1, 0, +1 -> 0, 1, 2), int8 +-1 weights, ConvInteger
    (int32 sums), cast to float: the same integers as the binary op."""
    nodes, constants = sign_nodes("signs")
    bits = np.where(weights >= 0, 1, -1).astype(np.int8)
    nodes += [helper.make_node("QuantizeLinear", ["signs", "one", "x_zero"], ["q"]),
              helper.make_node("ConvInteger", ["q", "bits", "x_zero"], ["sums"], kernel_shape=[3, 3],
                               pads=[1, 1, 1, 1]),
              helper.make_node("Cast", ["sums"], ["Y"], to=TensorProto.FLOAT)]
    constants += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                  numpy_helper.from_array(np.array(1, np.uint8), "x_zero"),
                  numpy_helper.from_array(bits, "bits")]
    return make_model(nodes, constants, channels, side)


def qlinear_model(weights: np.ndarray, channels: int, side: int) -> Any:
    """ONNX Runtime's optimized int8 convolution: s(x) quantized exactly (uint8, scale 1, zero point 128: its fast
    u8s8 path; int8 activations took a path 100x slower here), int8 +-1 weights, QLinearConv with a uint8 output of
    scale 9C/127 (sums reach +-9C, so the output is rounded: timing only), and back to float."""
    nodes, constants = sign_nodes("signs")
    bits = np.where(weights >= 0, 1, -1).astype(np.int8)
    y_scale = np.array(9.0 * channels / 127.0, np.float32)
    nodes += [helper.make_node("QuantizeLinear", ["signs", "one", "x_zero"], ["q"]),
              helper.make_node("QLinearConv", ["q", "one", "x_zero", "bits", "one", "w_zero", "y_scale", "x_zero"],
                               ["qy"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              helper.make_node("DequantizeLinear", ["qy", "y_scale", "x_zero"], ["Y"])]
    constants += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                  numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
                  numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
                  numpy_helper.from_array(y_scale, "y_scale"),
                  numpy_helper.from_array(bits, "bits")]
    return make_model(nodes, constants, channels, side)


def executorch_runner(weights: np.ndarray, side: int) -> Callable[[np.ndarray], np.ndarray]:
    """The fp32 layer as edgesdk exports it for ExecuTorch: delegable_sign then conv2d, XNNPACK-delegated, run by
    the executorch Python binding (its thread pool pinned to one thread)."""
    import torch
    import torch.nn.functional as F
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    from edgesdk.export.executorch import lower_to_executorch
    from edgesdk.quant.binary import delegable_sign

    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("bits", torch.where(torch.from_numpy(weights) >= 0, 1.0, -1.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(delegable_sign(x), self.bits, None, 1, 1)

    portable_lib._unsafe_reset_threadpool(1)
    example = (torch.zeros(1, weights.shape[1], side, side),)
    program = lower_to_executorch(torch.export.export(Layer().eval(), example), "layer")
    loaded = Runtime.get().load_program(program.buffer)
    method = loaded.load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        # the method lives in the program's memory: keep the program alive as long as this closure
        return method.execute([torch.from_numpy(x)])[0].numpy() if loaded is not None else x

    return run


def median_latency_ms(run: Callable[[], Any], repeats: int, budget_s: float = 0.4) -> dict[str, float]:
    """Median of per-call times within each repeat, then the median (and spread) over repeats."""
    for _ in range(3):
        run()
    medians = []
    for _ in range(repeats):
        times = []
        start = time.perf_counter()
        while len(times) < 5 or (time.perf_counter() - start < budget_s and len(times) < 2000):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times) * 1e3)
    return {"median_ms": round(statistics.median(medians), 4), "min_repeat_ms": round(min(medians), 4),
            "max_repeat_ms": round(max(medians), 4)}


def latencies_in_turns(variants: dict[str, tuple[Callable[[], Any], str | None]], repeats: int,
                       budget_s: float = 0.15) -> dict[str, dict[str, float]]:
    """median_latency_ms of each variant, the variants taking turns within every repeat: this shared machine's
    slow spells last seconds, and measured one after the other a variant could sit wholly inside one. A variant is
    (run, the instruction path to force through EDGESDK_BINARY_ISA, or None)."""
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for run, _ in variants.values():
        for _ in range(3):
            run()
    for _ in range(repeats):
        for name, (run, isa) in variants.items():
            if isa is None:
                os.environ.pop(ISA_ENV, None)
            else:
                os.environ[ISA_ENV] = isa
            medians[name].append(median_latency_ms(run, 1, budget_s)["median_ms"])
    os.environ.pop(ISA_ENV, None)
    return {name: {"median_ms": round(statistics.median(values), 4), "min_repeat_ms": round(min(values), 4),
                   "max_repeat_ms": round(max(values), 4)} for name, values in medians.items()}


def bench_shape(channels: int, side: int, library: Path, repeats: int, paths: list[str]) -> dict[str, Any]:
    generator = np.random.default_rng(channels * 1000 + side)
    weights = generator.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    x = generator.standard_normal((1, channels, side, side)).astype(np.float32)
    x[generator.random(x.shape) < 0.05] = 0.0
    feeds = {"X": x}

    binary = ort_session(binary_model(weights, channels, side), library)
    fp32 = ort_session(fp32_model(weights, channels, side))
    int8 = ort_session(int8_model(weights, channels, side))
    qlinear = ort_session(qlinear_model(weights, channels, side))
    (reference,) = binary.run(None, feeds)
    row: dict[str, Any] = {"channels": channels, "side": side, "batch": 1, "threads": 1}
    exact = {"ort_fp32": bool(np.array_equal(fp32.run(None, feeds)[0], reference)),
             "ort_int8_convinteger": bool(np.array_equal(int8.run(None, feeds)[0], reference))}
    rounded = qlinear.run(None, feeds)[0]
    row["int8_qlinearconv_max_error"] = float(np.abs(rounded - reference).max())  # its output is rounded

    for isa in paths:
        os.environ[ISA_ENV] = isa
        (y,) = binary.run(None, feeds)
        exact[f"binary_{isa}"] = bool(np.array_equal(y, reference))
    os.environ.pop(ISA_ENV, None)
    # ONNX Runtime's own cost of one run from Python (an Identity graph, same input): it is in every ORT figure and
    # is not the layer's; at 8x8 it is about half the binary layer's latency
    identity = ort_session(make_model([helper.make_node("Identity", ["X"], ["Y"])], [], channels, side))
    variants: dict[str, tuple[Callable[[], Any], str | None]] = {
        **{f"binary_{isa}": (lambda: binary.run(None, feeds), isa) for isa in paths},
        "fp32_ort": (lambda: fp32.run(None, feeds), None),
        "int8_ort_convinteger": (lambda: int8.run(None, feeds), None),
        "int8_ort_qlinearconv": (lambda: qlinear.run(None, feeds), None),
        "ort_call_overhead": (lambda: identity.run(None, feeds), None)}
    try:
        executorch = executorch_runner(weights, side)
        exact["executorch_fp32"] = bool(np.array_equal(executorch(x), reference))
        variants["fp32_executorch_xnnpack"] = (lambda: executorch(x), None)
    except Exception as exc:  # report, do not hide: the row says why ExecuTorch is missing
        row["fp32_executorch_xnnpack"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    times = latencies_in_turns(variants, repeats)
    binary_paths = {isa: times.pop(f"binary_{isa}") for isa in paths}
    row["binary_ort"] = binary_paths
    row.update(times)
    row["exact"] = exact
    best = binary_paths[paths[-1]]["median_ms"]
    fp32_times = [row["fp32_ort"]["median_ms"]]
    if "median_ms" in row["fp32_executorch_xnnpack"]:
        fp32_times.append(row["fp32_executorch_xnnpack"]["median_ms"])
    row["speedup_vs_best_fp32"] = round(min(fp32_times) / best, 2)
    row["speedup_vs_ort_fp32"] = round(row["fp32_ort"]["median_ms"] / best, 2)
    row["speedup_vs_best_int8"] = round(min(row["int8_ort_convinteger"]["median_ms"],
                                            row["int8_ort_qlinearconv"]["median_ms"]) / best, 2)
    overhead = row["ort_call_overhead"]["median_ms"]
    row["speedup_vs_ort_fp32_net_of_call"] = round((row["fp32_ort"]["median_ms"] - overhead)
                                                   / max(best - overhead, 1e-6), 2)
    row["packed_weight_bytes"] = int(pack_binary_weights(weights).nbytes)
    row["fp32_weight_bytes"] = int(weights.nbytes)
    return row


NETWORK_RESULTS = RESULTS.with_name("bnn_networks.json")


def network_bundles(dataset: str, workdir: Path) -> tuple[Path, Path]:
    """The binary bundle (recipe binary: float + binary-kernel programs) and the fp32 export of the same weights."""
    from edgesdk.exporting import export_model
    from edgesdk.zoo.bnn import default_bnn_path

    paths = []
    for recipe in ("binary", "fp32"):
        out = workdir / f"bnn-{dataset}-{recipe}.edge"
        if not out.exists():
            print(f"exporting {out.name} ...", flush=True)
            export_model("bnn", out, "executorch,onnx", weights=default_bnn_path(dataset), quant=recipe,
                         log=lambda _: None)
        paths.append(out)
    return paths[0], paths[1]


def bench_networks(args: argparse.Namespace) -> int:
    """Whole networks: see the module docstring."""
    from edgesdk.data.classification import load_classification, normalise
    from edgesdk.quant.binary import binary_layers
    from edgesdk.runtime.backends import StaticBatchSession
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.runtime.cpp_backend import CppExecuTorchSession, library_path
    from edgesdk.runtime.executorch_backend import ExecuTorchSession
    from edgesdk.zoo.bnn import default_bnn_path, load_bnn

    if library_path() is None:
        print("error: libedgesdk_c.so is not built (make cpp)", file=sys.stderr)
        return 2
    rows = []
    for dataset in ("digits", "shapes"):
        binary_dir, fp32_dir = network_bundles(dataset, args.workdir)
        binary, fp32 = Bundle.open(binary_dir), Bundle.open(fp32_dir)
        info, fp32_info = binary.component("classifier"), fp32.component("classifier")
        split = load_classification(dataset)
        meta = binary.manifest["model"]
        images = normalise(split.test_images, meta["mean"], meta["std"])

        def static(session: Any, component: Any) -> StaticBatchSession:
            return StaticBatchSession(session, int(component.static_shapes["executorch"]["batch"]), component.inputs)

        cpp_binary = CppExecuTorchSession(binary, info, threads=1)
        cpp_fp32 = CppExecuTorchSession(fp32, fp32_info, threads=1)
        runners = {
            "binary_cpp": static(cpp_binary, info),
            "fp32_cpp_executorch": static(cpp_fp32, fp32_info),
            "fp32_python_executorch": static(ExecuTorchSession(fp32.path_of(fp32_info.files["executorch"]), fp32_info,
                                                               threads=1), fp32_info),
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        onnx = ort.InferenceSession(str(fp32.path_of(fp32_info.files["onnx"])), options,
                                    providers=["CPUExecutionProvider"])
        kernel = cpp_binary.kernel
        logits = {name: run.run({"image": images})["logits"] for name, run in runners.items()}
        logits["fp32_onnxruntime"] = onnx.run(None, {"image": images})[0]
        record = info.binary_kernel["executorch"]
        packed = int(record["packed_weight_bytes"])  # the program's constants: the kernel's layout
        repacked = cpp_binary.repacked_weight_bytes  # copies the kernel made beside them (0 in place)
        rows_packed = cpp_binary.row_packed_weight_bytes  # words derived for layers of <= 64 / kw input channels
        resident = packed + repacked + rows_packed
        one_bit = sum(-(-int(m.weight.numel()) // 8) for m in binary_layers(load_bnn(default_bnn_path(dataset))))
        row: dict[str, Any] = {
            "dataset": dataset, "kernel": kernel, "binary_layers": record["binary_layers"],
            "max_abs_logit_diff_binary_vs_fp32": float(np.abs(logits["binary_cpp"]
                                                              - logits["fp32_cpp_executorch"]).max()),
            "top1_agreement_binary_vs_fp32": float((logits["binary_cpp"].argmax(1)
                                                    == logits["fp32_cpp_executorch"].argmax(1)).mean()),
            "memory": {"one_bit_bytes": one_bit, "packed_weight_bytes": packed, "kernel_repacked_bytes": repacked,
                       "kernel_row_packed_bytes": rows_packed, "resident_binary_weight_bytes": resident,
                       "resident_over_one_bit": round(resident / one_bit, 2),
                       "binary_program_file_bytes": binary.file_sizes()[record["file"]],
                       "fp32_weight_bytes": info.fp32_weight_bytes},
            "latency_ms": {}}
        for batch in (1, 32):
            x = np.ascontiguousarray(images[:batch])
            row["latency_ms"][str(batch)] = {
                name: median_latency_ms(lambda run=run, x=x: run.run({"image": x}), args.repeats)["median_ms"]
                for name, run in runners.items()}
            row["latency_ms"][str(batch)]["fp32_onnxruntime"] = median_latency_ms(
                lambda onnx=onnx, x=x: onnx.run(None, {"image": x}), args.repeats)["median_ms"]
            times = row["latency_ms"][str(batch)]
            best_fp32 = min(v for k, v in times.items() if k.startswith("fp32"))
            times["speedup_vs_fp32_cpp_executorch"] = round(times["fp32_cpp_executorch"] / times["binary_cpp"], 2)
            times["speedup_vs_best_fp32"] = round(best_fp32 / times["binary_cpp"], 2)
            print(f"{dataset:6s} batch {batch:2d}: binary C++ {times['binary_cpp']:.3f}  fp32 C++ ET "
                  f"{times['fp32_cpp_executorch']:.3f}  fp32 Python ET {times['fp32_python_executorch']:.3f}  "
                  f"fp32 ORT {times['fp32_onnxruntime']:.3f} ms  x{times['speedup_vs_fp32_cpp_executorch']} vs fp32 "
                  f"ExecuTorch, x{times['speedup_vs_best_fp32']} vs best fp32", flush=True)
        print(f"{dataset:6s} binary weights resident {resident} B = packed {packed} + repacked {repacked} + "
              f"row-packed {rows_packed} "
              f"(x{row['memory']['resident_over_one_bit']} of one bit a weight, {one_bit} B); "
              f"logits max |binary - fp32| "
              f"{row['max_abs_logit_diff_binary_vs_fp32']:.2e}; kernel {kernel}", flush=True)
        rows.append(row)
    result = {"what": "whole BNN networks, 1 thread, latency p50 in ms (median over calls, median over repeats); "
                      "ExecuTorch programs have static batch 1, so batch 32 is 32 calls of batch 1 on both",
              "command": f"python benchmarks/bnn_kernel.py --networks --repeats {args.repeats}",
              "machine": platform.processor() or platform.machine(), "onnxruntime": ort.__version__, "rows": rows}
    args.network_output.parent.mkdir(parents=True, exist_ok=True)
    args.network_output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.network_output}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-shapes", action="store_true", help="every channel count at every size, not only "
                                                                  "ResNet's stage pairs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--networks", action="store_true", help="whole networks (digits, shapes ResNet-20) instead")
    parser.add_argument("--network-output", type=Path, default=NETWORK_RESULTS)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-bnn-kernel"), help="exported bundles")
    args = parser.parse_args()
    if args.networks:
        return bench_networks(args)
    library = ort_ops_library()
    if library is None:
        print("error: libedgesdk_ort_ops.so is not built (make cpp; see runtime/cpp/CMakeLists.txt)", file=sys.stderr)
        return 2
    os.environ.pop(ISA_ENV, None)
    best = binary_isa_name(library)
    paths = []
    for isa in ("scalar", "avx2", "avx512", "neon"):
        os.environ[ISA_ENV] = isa
        try:
            binary_isa_name(library)
            paths.append(isa)
        except Exception:  # noqa: S112 - a path this CPU cannot run is simply not measured
            continue
    os.environ.pop(ISA_ENV, None)
    paths.sort(key=lambda isa: isa == best)  # the default path last
    print(f"binary kernel instruction path (default on this CPU): {best}; measured: {', '.join(paths)}")
    rows = []
    for channels, side in (ALL_SHAPES if args.all_shapes else RESNET_SHAPES):
        row = bench_shape(channels, side, library, args.repeats, paths)
        rows.append(row)
        et = row["fp32_executorch_xnnpack"]
        et_text = f"{et['median_ms']:8.3f}" if "median_ms" in et else "   error"
        binary_text = "  ".join(f"{isa} {row['binary_ort'][isa]['median_ms']:7.3f}" for isa in paths)
        print(f"C={channels:3d} {side:2d}x{side:<2d}  binary[{binary_text}]"
              f"  fp32 ORT {row['fp32_ort']['median_ms']:8.3f}"
              f"  fp32 ET/XNNPACK {et_text}  int8 ORT QLinearConv {row['int8_ort_qlinearconv']['median_ms']:7.3f}"
              f" ConvInteger {row['int8_ort_convinteger']['median_ms']:7.3f} ms  "
              f"x{row['speedup_vs_best_fp32']} vs best fp32 (x{row['speedup_vs_ort_fp32_net_of_call']} vs ORT fp32 "
              f"net of its {row['ort_call_overhead']['median_ms']:.3f} ms call)  exact {all(row['exact'].values())}",
              flush=True)
    result = {
        "what": "one binary 3x3 conv layer, stride 1, pad 1, batch 1, 1 thread; latency in ms (median over calls, "
                "median over repeats)",
        "command": "python benchmarks/bnn_kernel.py" + (" --all-shapes" if args.all_shapes else "")
                   + f" --repeats {args.repeats}",
        "isa_default": best, "isa_measured": paths, "machine": platform.processor() or platform.machine(),
        "cpu_flags_avx512_vpopcntdq": "avx512_vpopcntdq" in Path("/proc/cpuinfo").read_text(),
        "onnxruntime": ort.__version__,
        "int8_variants": {
            "int8_ort_qlinearconv": "QuantizeLinear, QLinearConv, DequantizeLinear (int8 output rounded: timing only)",
            "int8_ort_convinteger": "ConvInteger on uint8 signs and int8 weights (exact int32 sums)"},
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_suffix(".json.part")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
