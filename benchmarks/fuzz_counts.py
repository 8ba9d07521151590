"""Counts per category and outcome of the fuzz suite (tests/fuzz) on both CLIs, with the time each takes.

    .venv/bin/python benchmarks/fuzz_counts.py [--out benchmarks/results/fuzz_counts.json] [--bundles DIR]

The shared test bundles come from --bundles, else $EDGESDK_TEST_BUNDLES, else build/test-bundles (what `make test`
leaves); the C++ cases need runtime/cpp/build/edgesdk-run (`make cpp`). The JSON holds, per CLI, the counts table,
the seconds the run took and every case's outcome; benchmarks/results/fuzz_counts_before.json is the same run on
the code before issue 25's fixes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz.__main__ import default_binary, print_report, run_all, summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/fuzz_counts.json")
    parser.add_argument("--bundles", type=Path,
                        default=Path(os.environ.get("EDGESDK_TEST_BUNDLES", REPO / "build/test-bundles")))
    parser.add_argument("--cli", choices=("python", "cpp", "both"), default="both")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
              "note": "outcome per case: tests/fuzz/runner.py; counts: cases per category and outcome"}
    for cli in ("python", "cpp") if args.cli == "both" else (args.cli,):
        work = Path(tempfile.mkdtemp(prefix=f"edgesdk-fuzz-{cli}-"))
        try:
            results, seconds = run_all(cli, work, args.bundles.resolve(), default_binary())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report[cli] = summary(cli, results, seconds)
        print_report(report[cli])
        print()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
