"""Stage 4: parity of every exported file against eager PyTorch, through the same runtime users get."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

SQNR_CAP_DB = 200.0  # identical outputs would be +inf, which JSON cannot hold


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """max-abs error, the same relative to the reference's range, and SQNR in dB."""
    ref, out = reference.astype(np.float64), candidate.astype(np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape}, candidate {out.shape}")
    err = out - ref
    max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    value_range = float(ref.max() - ref.min()) if ref.size else 0.0
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    sqnr = SQNR_CAP_DB if noise == 0.0 else min(SQNR_CAP_DB, 10.0 * math.log10(max(signal, 1e-30) / noise))
    return {"max_abs": max_abs, "rel_max_abs": max_abs / value_range if value_range > 0 else max_abs,
            "sqnr_db": round(sqnr, 2)}


def topk_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float] | None:
    """For classifier logits (N, classes): the share of rows whose reference top-1 class is the candidate's top-1,
    and is within the candidate's top 5. None for outputs that are not (N, classes >= 2)."""
    if reference.ndim != 2 or reference.shape[1] < 2 or reference.shape != candidate.shape:
        return None
    truth = reference.argmax(axis=1)
    top5 = np.argsort(-candidate, axis=1, kind="stable")[:, :5]
    return {"top1_agreement": float(np.mean(candidate.argmax(axis=1) == truth)),
            "top5_agreement": float(np.mean((top5 == truth[:, None]).any(axis=1)))}


class EagerSession:
    """The eager-PyTorch reference behind the runtime's Session protocol (tests and parity only)."""

    def __init__(self, module: nn.Module, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        from edgesdk.export.capture import to_eval

        self.module = to_eval(module)
        self.input_names, self.output_names = list(input_names), list(output_names)

    @torch.no_grad()
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in self.input_names]
        outputs = self.module(*args)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {name: out.numpy() for name, out in zip(self.output_names, outputs, strict=True)}
