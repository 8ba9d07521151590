"""The shipped quantization-aware one-step student at 4-bit weights, exported as a user would, against its floors.

    python benchmarks/onestep_w4.py [--targets onnx,executorch] [--workdir build]

`edgesdk export onestep --quant w4` on the shipped `sdk/weights/onestep-w4.safetensors`, per target: the generator's
parity against its eager model (target >= 15 dB: only the int8 activations differ from eager, the weights lie on
the grid), the 4-bit kernels the graph runs (ONNX Runtime: >= 20 MatMulNBits), prompt accuracy on the export
check's samples (target: kind within 15 points of the fp32 eager student) and the bundle's size. This was a test
(tests/test_int4.py) until suite time made it a measurement: the suite keeps the cheap checks of the shipped
weights and the 4-bit plumbing on micro models. Writes benchmarks/results/onestep_w4.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgesdk.exporting import export_model
from edgesdk.reporting import write_json
from edgesdk.runtime.bundle import Bundle

TARGETS = {"parity_db": 15.0, "matmulnbits": 20, "kind_points": 0.15}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="onnx,executorch")
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "onestep_w4.json")
    args = parser.parse_args()

    started = time.perf_counter()
    path = export_model("onestep", args.workdir / "onestep-w4-bench.edge", args.targets, quant="w4", overwrite=True,
                        log=lambda _m: None)
    export_s = time.perf_counter() - started
    bundle = Bundle.open(path)
    generator = bundle.component("generator")
    accuracy = bundle.manifest["quality"]["prompt_accuracy"]
    sizes = bundle.file_sizes()
    rows, checks = [], []
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        parity = min(v["sqnr_db"] for v in generator.parity[target].values())
        row = {"target": target, "generator_parity_db": parity, "prompt_accuracy": accuracy[target],
               "bundle_bytes": sum(b for p, b in sizes.items() if p.startswith(f"{target}/"))}
        checks.append({"name": f"{target}: generator parity >= {TARGETS['parity_db']:g} dB", "value": parity,
                       "met": parity >= TARGETS["parity_db"]})
        kind_gap = accuracy["fp32_eager"]["kind"] - accuracy[target]["kind"]
        checks.append({"name": f"{target}: kind within {TARGETS['kind_points']:.0%} of fp32 eager",
                       "value": -kind_gap, "met": kind_gap <= TARGETS["kind_points"]})
        if target == "onnx":
            kernels = generator.delegation["onnx"]["onnx_ops"].get("MatMulNBits", 0)
            row["matmulnbits"] = kernels
            checks.append({"name": f"onnx: >= {TARGETS['matmulnbits']} MatMulNBits", "value": kernels,
                           "met": kernels >= TARGETS["matmulnbits"]})
        rows.append(row)

    print(f"\n{'target':12s} {'parity dB':>9s} {'kind':>6s} {'colour':>7s} {'MB':>6s}")
    for r in rows:
        a = r["prompt_accuracy"]
        print(f"{r['target']:12s} {r['generator_parity_db']:9.1f} {a['kind']:6.0%} {a['colour']:7.0%} "
              f"{r['bundle_bytes'] / 1e6:6.1f}")
    eager = accuracy["fp32_eager"]
    print(f"{'fp32 eager':12s} {'':9s} {eager['kind']:6.0%} {eager['colour']:7.0%}\n")
    for check in checks:
        print(f"{check['name']}: {check['value']:.3g} -> {'met' if check['met'] else 'MISSED'}")
    write_json(args.output, {"rows": rows, "checks": checks, "fp32_eager": eager, "export_s": export_s,
                             "command": f"python benchmarks/onestep_w4.py --targets {args.targets}"})
    return 0 if all(c["met"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
