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
