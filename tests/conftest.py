"""Shared fixtures. The expensive ones are the full-size bundles of tests/bundles.py, exported once per test run
and shared by every module and xdist worker (and by ctest under `make test`)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from edgesdk.zoo.torchvision_ops import make_torchvision_importable
from tests.bundles import bundle_root as bundle_root_dir
from tests.bundles import shared_bundle

# transformers imports torchvision when it is installed (the standard architectures need it): the CLIP and Stable
# Diffusion tests that import transformers directly need it importable first
make_torchvision_importable()

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the machine's cores: each gets its share of compute threads (torch's OpenMP pool, and every
    # child process a test starts inherits it). With a full pool each, two workers' spinning threads slowed
    # training tests down 10-25x (test_int4's distillation: 12 s alone, 290 s beside another worker).
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# `make test` runs the suite in two xdist workers, a file at a time each (--dist loadfile), in collection order
# (--no-loadscope-reorder: xdist would otherwise order files by their number of tests): the files that take longest
# (their full-size exports, measured with --durations) go first, so that the two workers finish together instead of
# one of them starting a long file at the end. test_fuzz's first cases export the shared tiny-sd and onestep bundles.
SLOWEST_FIRST = ("test_diffusers.py", "test_fuzz.py", "test_viws.py", "test_quant.py", "test_user_model.py",
                 "test_int4.py", "test_personalize.py", "test_onestep_export.py", "test_bnn.py", "test_packaging.py",
                 "test_train.py", "test_cli.py", "test_bench.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests/bundles.py keeps this run's shared bundles: beside the workers' own temporary folders, so every
    xdist worker of the run finds the same ones (``$EDGESDK_TEST_BUNDLES`` overrides it)."""
    base = tmp_path_factory.getbasetemp()
    return bundle_root_dir((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-bundles")


@pytest.fixture(scope="session")
def shared(bundle_root: Path) -> Callable[[str], Path]:
    """``shared("tiny-sd")``: a bundle of tests/bundles.py, exported by the first process of the run that asks."""
    return lambda name: shared_bundle(name, bundle_root)


@pytest.fixture(scope="session")
def shipped_bundle(shared: Callable[[str], Path]) -> Path:
    """The shipped tiny-sd, fp32, exported to every target."""
    return shared("tiny-sd")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed CLI in a child process, as a user would run it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def run_cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI's entry point (edgesdk.cli.main: the same parsing, one-line errors and exit codes as run_cli) in this
    process. A new interpreter pays ~8 s of CPU importing torch, ExecuTorch and ONNX before an export or training
    command does anything, which over the suite's few dozen such calls was minutes. What needs a process of its own
    (torch blocked, a umask, a signal, a kill, environment variables) stays with run_cli. An internal error still
    fails the test: main() turns it into exit code 1 and a line that says so."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = ["edgesdk", *args]
    try:
        from edgesdk.cli import main

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(["edgesdk", *args], code, out.getvalue(), err.getvalue())


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def run_without_torch(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``code`` in a child Python where importing torch fails (what a phone app's runtime has)."""
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code + '\nassert "torch" not in sys.modules\n'],
                          capture_output=True, text=True, timeout=timeout, check=False)


# Installed as sitecustomize.py on PYTHONPATH, so that every Python the command starts (bench runs each backend in a
# child process) has torch blocked too. Each attempt is also written down: a command that catches the ImportError
# and carries on has still tried to import torch.
_BLOCK_TORCH_EVERYWHERE = BLOCK_TORCH.replace('raise ImportError', '''import os, traceback
            with open(os.environ["EDGESDK_TORCH_ATTEMPTS"], "a") as log:
                log.write(f"import {name!r} from:\\n{''.join(traceback.format_stack(limit=12))}\\n")
            raise ImportError''')


def run_cli_without_torch(*args: str, tmp_path: Path, timeout: float = 300,
                          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process (and its children) where importing torch fails; fails the test if anything tried
    to import torch, even where the command caught the ImportError. ``env``: more environment variables."""
    blocker = tmp_path / "torch-blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(_BLOCK_TORCH_EVERYWHERE, encoding="utf-8")
    attempts = blocker / "attempts.log"
    attempts.unlink(missing_ok=True)
    python_path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH", "")) if p)
    child_env = {**os.environ, **(env or {}), "PYTHONWARNINGS": "ignore", "PYTHONPATH": python_path,
                 "EDGESDK_TORCH_ATTEMPTS": str(attempts)}
    result = subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True,
                            timeout=timeout, env=child_env, check=False)
    assert not attempts.exists(), f"edgesdk {args[0]} tried to import torch:\n{attempts.read_text()[-3000:]}"
    return result
