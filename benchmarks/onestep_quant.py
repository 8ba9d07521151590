"""The shipped one-step students quantized, exported as a user would, against their floors.

    python benchmarks/onestep_quant.py [--quant w4|w8] [--targets onnx,executorch] [--workdir build]

`edgesdk export onestep --quant w4` (the shipped quantization-aware `sdk/weights/onestep-w4.safetensors`) or
`--quant w8` (the shipped fp32 student, int8 weights), per target: the generator's parity against its eager model,
prompt accuracy on the export check's samples against the fp32 eager student, and the bundle's size; at w4 also the
4-bit kernels the graph runs. Targets: w4 parity >= 15 dB (only the int8 activations differ from eager, the weights
lie on the grid), >= 20 MatMulNBits on ONNX Runtime, kind within 15 points of fp32; w8 parity >= the family's floor
(ONESTEP_SQNR_FLOOR_DB, 10 dB), kind within 20 points. Both were tests (tests/test_int4.py,
tests/test_onestep_export.py) until suite time made them measurements: each is a full-size export of three
components; the suite keeps the cheap checks of the shipped weights, the family's floor and the quantization
plumbing on micro models. Writes benchmarks/results/onestep_<quant>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgesdk.exporting import export_model
from edgesdk.families.onestep import ONESTEP_SQNR_FLOOR_DB
from edgesdk.reporting import write_json
from edgesdk.runtime.bundle import Bundle

TARGETS = {"w4": {"parity_db": 15.0, "matmulnbits": 20, "kind_points": 0.15},
           "w8": {"parity_db": ONESTEP_SQNR_FLOOR_DB, "kind_points": 0.20}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quant", choices=sorted(TARGETS), default="w4")
    parser.add_argument("--targets", default="onnx,executorch")
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--output", type=Path, default=None, help="default: benchmarks/results/onestep_<quant>.json")
    args = parser.parse_args()
    floors = TARGETS[args.quant]
    output = args.output or Path(__file__).parent / "results" / f"onestep_{args.quant}.json"

    started = time.perf_counter()
    path = export_model("onestep", args.workdir / f"onestep-{args.quant}-bench.edge", args.targets, quant=args.quant,
                        overwrite=True, log=lambda _m: None)
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
        checks.append({"name": f"{target}: generator parity >= {floors['parity_db']:g} dB", "value": parity,
                       "met": parity >= floors["parity_db"]})
        kind_gap = accuracy["fp32_eager"]["kind"] - accuracy[target]["kind"]
        checks.append({"name": f"{target}: kind within {floors['kind_points']:.0%} of fp32 eager",
                       "value": -kind_gap, "met": kind_gap <= floors["kind_points"]})
        if target == "onnx" and "matmulnbits" in floors:
            kernels = generator.delegation["onnx"]["onnx_ops"].get("MatMulNBits", 0)
            row["matmulnbits"] = kernels
            checks.append({"name": f"onnx: >= {floors['matmulnbits']} MatMulNBits", "value": kernels,
                           "met": kernels >= floors["matmulnbits"]})
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
    write_json(output, {"quant": args.quant, "rows": rows, "checks": checks, "fp32_eager": eager, "export_s": export_s,
                        "command": f"python benchmarks/onestep_quant.py --quant {args.quant} --targets {args.targets}"})
    return 0 if all(c["met"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
