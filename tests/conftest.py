"""Shared fixtures. The expensive one, `shipped_bundle`, exports the shipped tiny-sd once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shipped_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgesdk.exporting import export_model

    out = tmp_path_factory.mktemp("bundles") / "tiny-sd.edge"
    return export_model("tiny-sd", out, "executorch,onnx,tensorrt", log=lambda _m: None)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed CLI in a child process, as a user would run it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


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
