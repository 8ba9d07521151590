"""Reading a weights file: what every model of the zoo loads from (training writes them, train/common.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgesdk.runtime.errors import EdgeSDKError


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The tensors of a safetensors weights file and its metadata (each value JSON-decoded)."""
    if not path.exists():
        raise EdgeSDKError(f"weights file not found: {path}")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    return load_file(str(path)), metadata
