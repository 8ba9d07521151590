"""The fuzz suite (tests/fuzz) against the Python CLI: one test per generated hostile input.

Each case must end in a clean refusal (exit 2, one `error: ` line, no traceback or internal error, nothing written,
inputs byte-identical, HOME and TMPDIR untouched, within its timeout and memory limit) or, where the input is
harmless, a success with a valid output. The C++ CLI's cases run as the ctest test `fuzz_cpp`
(runtime/cpp/CMakeLists.txt), since edgesdk-run may not be built yet while pytest runs. The failing list at a glance:
`python -m tests.fuzz --cli python --report`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.bases import Bases
from tests.fuzz.cases import Case, python_cases
from tests.fuzz.runner import GOOD, REPO, PythonRunner, Result, case_env, run_case

CASES = python_cases()


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, bundle_root: Path) -> Iterator[tuple[PythonRunner, Bases, Path]]:
    work = tmp_path_factory.mktemp("fuzz")
    runner = PythonRunner()
    try:
        yield runner, Bases(work, bundle_root), work
    finally:
        runner.close()


def run(case: Case, fuzz: tuple[PythonRunner, Bases, Path]) -> Result:
    runner, bases, work = fuzz
    case_dir = work / case.name.replace("/", "-")
    try:
        return run_case(case, runner, case_dir, bases)
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_cleanly(case: Case, fuzz: tuple[PythonRunner, Bases, Path]) -> None:
    result = run(case, fuzz)
    assert result.outcome in GOOD, result.describe()


def test_corpus_covers_every_category() -> None:
    from tests.fuzz.cases import CATEGORIES

    assert {c.category for c in CASES} == set(CATEGORIES)
    assert len(CASES) >= 150


# The fork server must judge a case as a fresh `python -m edgesdk.cli` would: same exit code, same stderr, same
# files. These cases span a refusal in the bundle reader, one in the CLI's argument parser and a success.
SPOT_CHECKS = ("bundle/manifest_truncated", "args/sample_steps_fraction", "tokens/valid", "numpy/wrong_shape")


@pytest.mark.parametrize("name", SPOT_CHECKS)
def test_fork_server_matches_a_fresh_process(name: str, fuzz: tuple[PythonRunner, Bases, Path]) -> None:
    runner, bases, work = fuzz
    case = next(c for c in CASES if c.name == name)
    forked = run(case, fuzz)
    case_dir = work / name.replace("/", "-")  # the folder the forked run used, removed since
    case_dir.mkdir()
    try:
        case.setup(case_dir, bases)
        for folder in ("home", "tmp"):
            (case_dir / folder).mkdir(exist_ok=True)
        fresh = subprocess.run([sys.executable, "-m", "edgesdk.cli", *case.argv], cwd=case_dir,
                               env={**case_env(case_dir), "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                               timeout=60)
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)
    assert forked.exit_code == fresh.returncode
    assert forked.stderr.strip().splitlines()[-1:] == fresh.stderr.strip().splitlines()[-1:]


def test_the_judge_catches_what_it_must(tmp_path: Path) -> None:
    """A suite that passes everything proves nothing: a silent success, a changed input, a file left behind and a
    write into HOME must each be caught, and a clean refusal must pass."""
    from tests.fuzz.runner import SKIP, judge, snapshot

    case = Case("meta/judge", "args", [], lambda d, b: None)
    (tmp_path / "input.txt").write_text("before")
    for folder in ("home", "tmp"):
        (tmp_path / folder).mkdir()
    before = snapshot(tmp_path, SKIP)
    assert judge(case, tmp_path, before, 2, None, False, "error: no\n")[0] == []
    assert judge(case, tmp_path, before, 0, None, False, "")[0] == ["silent success"]
    assert judge(case, tmp_path, before, 2, None, False, "error: a\nerror: b\n")[0] == ["multi-line error"]
    assert judge(case, tmp_path, before, 1, None, False, "error: internal error (x)\n")[0] == \
        ["internal error", "wrong exit code"]
    assert judge(case, tmp_path, before, None, 6, False, "")[0] == ["crash"]
    assert judge(case, tmp_path, before, None, 9, True, "")[0] == ["hang"]
    (tmp_path / "input.txt").write_text("after")
    (tmp_path / "out.png").write_text("half")
    (tmp_path / "home" / ".cache").mkdir()
    assert judge(case, tmp_path, before, 2, None, False, "error: no\n")[0] == \
        ["input modified", "output left", "native write"]
