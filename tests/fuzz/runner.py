"""Running one fuzz case against a CLI and judging what it did.

Every case runs in its own folder (its inputs), with a fresh empty HOME and TMPDIR inside it, under a wall-clock
timeout (a hang is killed with its whole process group) and an address-space limit (runaway allocation fails the
case instead of the machine). Afterwards the folder is compared with a snapshot taken before the run: an entry that
changed is a modified input (or a clobbered pre-existing output), a new entry is an output left behind, and
anything in HOME or TMPDIR is a write the command (or a native library under it) made outside its output path.

The Python CLI runs through a fork server: one child interpreter imports `edgesdk.cli` once and forks per case,
so a case costs what the command itself costs, not an interpreter start and the imports (~0.3 s each). The C++
CLI is a plain subprocess per case.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.cases import Case

MEMORY_LIMIT_BYTES = 4 << 30  # RLIMIT_AS of every case: a few GB, far above what any clean refusal needs
HASH_LIMIT_BYTES = 4 << 20  # files up to this size are compared by content, larger ones (hard links) by stat
REPO = Path(__file__).resolve().parents[2]

# What a case did, worst first: the first that applies is its outcome.
PROBLEM_ORDER = ("hang", "crash", "out of memory", "traceback", "internal error", "input modified", "silent success",
                 "output left", "native write", "invalid output", "wrong exit code", "multi-line error")
GOOD = ("clean refusal", "legitimate success")
SETUP_FAILED = "setup failed"  # a bug of the suite itself, reported rather than stopping the run
OUTCOMES = GOOD + PROBLEM_ORDER + (SETUP_FAILED,)


@dataclass
class Result:
    case: str
    category: str
    outcome: str
    problems: list[str]
    exit_code: int | None
    signal: int | None
    stderr: str
    seconds: float
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "category": self.category, "outcome": self.outcome, "problems": self.problems,
                "exit_code": self.exit_code, "signal": self.signal, "seconds": round(self.seconds, 3),
                "stderr_tail": self.stderr[-400:], "details": self.details}

    def describe(self) -> str:
        first = next((line for line in self.stderr.splitlines() if line.strip()), "")
        how = f"signal {self.signal}" if self.signal else f"exit {self.exit_code}"
        more = f"; {'; '.join(self.details)}" if self.details else ""
        return f"{self.case}: {self.outcome} ({how}, {self.seconds:.1f} s) {first[:160]!r}{more}"


# ---- snapshots of a case folder ----

def _entry(path: Path) -> tuple[Any, ...]:
    """What must stay the same about one entry: its type and, without following or opening anything that could
    block (FIFOs, devices), its content (small regular files), target (symlinks) or identity (large hard links)."""
    info = path.lstat()
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(mode):
        return ("dir", stat.S_IMODE(mode))
    if stat.S_ISREG(mode):
        if info.st_size <= HASH_LIMIT_BYTES:
            return ("file", info.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        return ("file", info.st_size, info.st_ino, info.st_mtime_ns)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return ("device", stat.S_IFMT(mode), info.st_rdev)
    return ("special", stat.S_IFMT(mode))


def snapshot(folder: Path, skip: set[str]) -> dict[str, tuple[Any, ...]]:
    """Every entry under `folder` (not following symlinks), but the top-level names in `skip`."""
    entries: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in os.walk(folder):
        rel_top = Path(top).relative_to(folder)
        if rel_top == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for name in dirs + files:
            path = Path(top) / name
            entries[(rel_top / name).as_posix()] = _entry(path)
    return entries


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else ["(removed)"]


# ---- the two ways to run a command ----

def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def case_env(case_dir: Path) -> dict[str, str]:
    home, tmp = case_dir / "home", case_dir / "tmp"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp),
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "EDGESDK_FUZZ": "1",
           # no Python bytecode written beside the sources under a fresh HOME either
           "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "120"}
    for name in ("EDGESDK_CPP_LIB", "EDGESDK_EXECUTORCH_RUNTIME", "LD_LIBRARY_PATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class CppRunner:
    """edgesdk-run as a plain subprocess per case."""

    timeout = 5.0  # s: a clean refusal takes milliseconds, the cases that succeed well under a second

    def __init__(self, binary: Path) -> None:
        self.binary = Path(binary)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path,
            timeout: float) -> tuple[int | None, int | None, bool]:
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen([str(self.binary), *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=stdout, stderr=stderr, preexec_fn=_limit_memory,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
                hung = False
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
                hung = True
        _kill_group(process.pid)
        return (code, None, hung) if code >= 0 else (None, -code, hung)


def _kill_group(pgid: int) -> None:
    """A child the command started (ffmpeg, a worker) must not outlive its case."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class PythonRunner:
    """`python -m edgesdk.cli` through a fork server (tests/fuzz/forkserver.py)."""

    timeout = 10.0  # s: the Python runtime loads ONNX Runtime sessions in up to a second on a busy machine

    def __init__(self, python: str = sys.executable) -> None:
        self.process = subprocess.Popen([python, "-m", "tests.fuzz.forkserver"], cwd=REPO, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
        self._fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        self._pending = b""
        ready = self._line(None)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the fork server did not start: {ready!r}")

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path,
            timeout: float) -> tuple[int | None, int | None, bool]:
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                   "memory": MEMORY_LIMIT_BYTES}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        pid = int(self._line(None))
        hung = self._line(timeout) is None
        if hung:
            _kill_group(pid)
            status = json.loads(self._line(None) or b"{}")
        else:
            status = json.loads(self._last)

        _kill_group(pid)
        return status["code"], status["signal"], hung

    def _line(self, timeout: float | None) -> bytes | None:
        """The server's next line, None when none came within `timeout` seconds (raw reads: a buffered reader
        could hold the line while select waits on the empty pipe)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise RuntimeError("the fork server exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        self._last = line
        return line

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---- one case ----

def judge(case: Case, case_dir: Path, before: dict[str, tuple[Any, ...]], code: int | None, sig: int | None,
          hung: bool, stderr: str) -> tuple[list[str], list[str]]:
    """The problems of one finished case (empty: it behaved) and details that say where."""
    problems: list[str] = []
    details: list[str] = []
    succeeded = code == 0 and not hung and sig is None
    if hung:
        problems.append("hang")
    elif sig is not None:
        problems.append("crash")
    if "MemoryError" in stderr or "bad_alloc" in stderr or "Cannot allocate memory" in stderr:
        problems.append("out of memory")
    if "Traceback (most recent call last)" in stderr:
        problems.append("traceback")
    if "internal error" in stderr.lower():
        problems.append("internal error")
    after = snapshot(case_dir, skip=SKIP)
    changed = [name for name, entry in before.items()
               if after.get(name) != entry and not case.may_write(name, succeeded)]
    if changed:
        problems.append("input modified")
        details.append(f"changed: {', '.join(changed[:4])}")
    new = [name for name in after if name not in before and not case.may_write(name, succeeded)]
    if new:
        problems.append("output left")
        details.append(f"left: {', '.join(sorted(new)[:4])}")
    native = [f"HOME/{p}" for p in _tree(case_dir / "home")] + [f"TMPDIR/{p}" for p in _tree(case_dir / "tmp")]
    if native:
        problems.append("native write")
        details.append(f"wrote: {', '.join(native[:3])}")
    if not hung and sig is None:
        if code == 0:
            if not case.success_allowed:
                problems.append("silent success")
            elif case.validate is not None:
                complaint = case.validate(case_dir)
                if complaint:
                    problems.append("invalid output")
                    details.append(complaint)
        else:
            if code != 2:
                problems.append("wrong exit code")
            lines = [line for line in stderr.splitlines() if line.strip()]
            if len(lines) != 1 or not lines[0].startswith("error: "):
                problems.append("multi-line error")
    ordered = [p for p in PROBLEM_ORDER if p in problems]
    return ordered, details


SKIP = {"home", "tmp", ".stdout", ".stderr"}


def run_case(case: Case, runner: PythonRunner | CppRunner, case_dir: Path, bases: Any) -> Result:
    """Prepare `case` in `case_dir` (which must not exist), run it, judge it."""
    case_dir.mkdir(parents=True)
    try:
        case.setup(case_dir, bases)
    except Exception as e:  # noqa: BLE001 - any failure of a generator is reported with its case
        return Result(case.name, case.category, SETUP_FAILED, [SETUP_FAILED], None, None, "", 0.0,
                      [f"{type(e).__name__}: {e}"])
    for name in ("home", "tmp"):
        (case_dir / name).mkdir(exist_ok=True)
    before = snapshot(case_dir, skip=SKIP)
    out, err = case_dir / ".stdout", case_dir / ".stderr"
    start = time.perf_counter()
    timeout = case.timeout or runner.timeout
    code, sig, hung = runner.run(case.argv, case_dir, case_env(case_dir), out, err, timeout)
    seconds = time.perf_counter() - start
    stderr = err.read_text(encoding="utf-8", errors="replace")
    problems, details = judge(case, case_dir, before, code, sig, hung, stderr)
    rebuilt = bases.heal()
    if rebuilt:
        details.append(f"wrote through a hard link into base bundle(s) {', '.join(rebuilt)} (rebuilt)")
    if problems:
        outcome = problems[0]
    else:
        outcome = "legitimate success" if code == 0 else "clean refusal"
    return Result(case.name, case.category, outcome, problems, code, sig, stderr, seconds, details)
