"""python -m tests.fuzz --cli python|cpp [--report] [--json OUT] [--only PATTERN] [--work DIR] [--bundles DIR]

Without --report: runs every case, prints the ones that misbehaved and exits 1 if there are any (ctest's mode).
With --report: prints counts per category and outcome, then the misbehaving cases, and exits 0.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fuzz.bases import Bases
from tests.fuzz.cases import CATEGORIES, Case, cpp_cases, python_cases
from tests.fuzz.runner import GOOD, OUTCOMES, REPO, CppRunner, PythonRunner, Result, run_case


def default_binary() -> Path:
    return Path(os.environ.get("EDGESDK_RUN", REPO / "runtime/cpp/build/edgesdk-run"))


def run_all(cli: str, work: Path, bundles: Path | None, binary: Path | None = None, only: str | None = None,
            progress: bool = False) -> tuple[list[Result], float]:
    """Every case of one CLI (those whose name matches `only`), in order; returns the results and the seconds."""
    binary = binary or default_binary()
    cases: list[Case] = python_cases() if cli == "python" else cpp_cases()
    if only:
        cases = [c for c in cases if fnmatch.fnmatch(c.name, only)]
    bases = Bases(work, bundles, binary)
    runner: Any = PythonRunner() if cli == "python" else CppRunner(binary)
    results: list[Result] = []
    start = time.perf_counter()
    try:
        for i, case in enumerate(cases):
            case_dir = work / "cases" / f"{i:03d}-{case.name.replace('/', '-')}"
            try:
                result = run_case(case, runner, case_dir, bases)
            finally:
                shutil.rmtree(case_dir, ignore_errors=True)
            results.append(result)
            if progress:
                print(f"[{i + 1}/{len(cases)}] {result.describe()}", file=sys.stderr, flush=True)
    finally:
        if isinstance(runner, PythonRunner):
            runner.close()
    return results, time.perf_counter() - start


def counts(results: list[Result]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for category in CATEGORIES:
        mine = [r for r in results if r.category == category]
        if mine:
            table[category] = {o: n for o in OUTCOMES if (n := sum(r.outcome == o for r in mine))}
    table["total"] = {o: n for o in OUTCOMES if (n := sum(r.outcome == o for r in results))}
    return table


def summary(cli: str, results: list[Result], seconds: float) -> dict[str, Any]:
    return {"cli": cli, "cases": len(results), "passed": sum(r.outcome in GOOD for r in results),
            "failed": sum(r.outcome not in GOOD for r in results), "seconds": round(seconds, 1),
            "counts": counts(results), "results": [r.to_dict() for r in results]}


def print_report(report: dict[str, Any]) -> None:
    print(f"fuzz suite, {report['cli']} CLI: {report['cases']} cases, {report['passed']} behaved, "
          f"{report['failed']} misbehaved, {report['seconds']} s")
    columns = [o for o in OUTCOMES if o in report["counts"]["total"]]
    width = max(len(c) for c in columns)
    print(f"{'category':<11}" + "".join(f"{c[:width]:>{len(c) + 2}}" for c in columns))
    for category, row in report["counts"].items():
        print(f"{category:<11}" + "".join(f"{row.get(c, 0):>{len(c) + 2}}" for c in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", choices=("python", "cpp"), required=True)
    parser.add_argument("--report", action="store_true", help="print counts per category; exit 0")
    parser.add_argument("--json", type=Path, help="write the report (counts and every case) here")
    parser.add_argument("--only", help="run the cases whose name matches this pattern (fnmatch), e.g. 'image/*'")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--bundles", type=Path, help="the shared test bundles (default: $EDGESDK_TEST_BUNDLES)")
    parser.add_argument("--fallback-bundles", type=Path, help="the shared test bundles when neither --bundles nor "
                        "$EDGESDK_TEST_BUNDLES is given (ctest: the fixtures' folder)")
    parser.add_argument("--binary", type=Path, help="edgesdk-run (default: $EDGESDK_RUN or runtime/cpp/build's)")
    parser.add_argument("--quiet", action="store_true", help="no line per case on stderr")
    args = parser.parse_args(argv)
    bundles = args.bundles or (Path(os.environ["EDGESDK_TEST_BUNDLES"]) if os.environ.get("EDGESDK_TEST_BUNDLES")
                               else args.fallback_bundles)
    if bundles is None:
        parser.error("give --bundles or set EDGESDK_TEST_BUNDLES (the shared test bundles, tests/bundles.py)")
    # cases run in their own folders, so a relative binary would resolve against each case's cwd
    binary = (args.binary or default_binary()).absolute()
    if args.cli == "cpp" and not binary.is_file():
        parser.error(f"{binary} does not exist: build it first (make cpp)")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgesdk-fuzz-"))
    try:
        results, seconds = run_all(args.cli, work, bundles.resolve(), binary, args.only, progress=not args.quiet)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report = summary(args.cli, results, seconds)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    bad = [r for r in results if r.outcome not in GOOD]
    if args.report:
        print_report(report)
    if bad:
        print(f"\n{len(bad)} misbehaving case(s):")
        for r in bad:
            print(f"  {r.describe()}")
    return 0 if args.report or not bad else 1


if __name__ == "__main__":
    sys.exit(main())
