"""`edgesdk bench`'s memory verdict on ExecuTorch: the program's planned activation buffer is told apart from
integer weights expanded to float (runtime/bench.py, runtime/pte.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgesdk.runtime import EdgeSDKError
from edgesdk.runtime.bench import weight_growth_check
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.pte import planned_buffer_bytes


class WideThenUpsampled(nn.Module):
    """A 2048x2048 linear layer (16.8 MB as fp32: past bench's 4 MB "too small to tell") whose output is upsampled
    nearest, which XNNPACK does not take: the 19 MB upsampled tensor is in the program's memory plan."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2048, 2048)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.fc(x).reshape(1, 8, 16, 16), scale_factor=48.0, mode="nearest")


def test_verdict_takes_the_planned_buffer_off_and_still_catches_expansion():
    # a w8a8 mobile ViT whose 49 delegates plan 13.8 MB of activations between them: refused before this fix
    file_bytes, fp32, planned = 2_630_000, 9_310_000, 13_830_000
    assert weight_growth_check(15.1, file_bytes, fp32, judge=True)["verdict"] == "expanded"  # planned ignored
    kept = weight_growth_check(15.1, file_bytes, fp32, judge=True, planned_bytes=planned)
    assert kept["verdict"] == "kept" and kept["weights_growth_mb"] == pytest.approx(1.27)
    assert kept["planned_mb"] == 13.83 and kept["growth_mb"] == 15.1
    # weights really expanded to fp32 beside the same plan: still refused
    expanded = weight_growth_check(9.3 + 13.83, file_bytes, fp32, judge=True, planned_bytes=planned)
    assert expanded["verdict"] == "expanded" and expanded["weights_growth_mb"] > expanded["limit_mb"]
    # the figures without a verdict stay as they were (ONNX, too small, no /proc)
    assert weight_growth_check(15.1, file_bytes, fp32, judge=False, planned_bytes=planned)["verdict"] is None


@pytest.fixture(scope="module")
def planned_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgesdk.export.capture import ComponentSpec
    from edgesdk.export.pipeline import export_bundle
    from edgesdk.quant.configs import Calibration, W8A8Config

    torch.manual_seed(0)
    spec = ComponentSpec("model", WideThenUpsampled().eval(), (torch.randn(1, 2048),), ["x"], ["y"])
    calibration = {"model": [(torch.randn(1, 2048),) for _ in range(4)]}
    out = tmp_path_factory.mktemp("bench") / "planned.edge"
    return export_bundle([spec], family="custom", model_meta={}, assets={}, targets=["executorch"], output=out,
                         recipe=W8A8Config(calibration=Calibration(samples=4)), calibration=calibration,
                         log=lambda _m: None)


def test_planned_buffer_is_read_from_the_program_without_torch(planned_bundle: Path):
    from executorch.exir._serialize._program import deserialize_pte_binary

    path = Bundle.open(planned_bundle).path_of("executorch/model.pte")
    program = deserialize_pte_binary(path.read_bytes())
    program = getattr(program, "program", program)  # newer ExecuTorch wraps the program with its data
    expected = {plan.name: sum(plan.non_const_buffer_sizes) for plan in program.execution_plan}
    assert planned_buffer_bytes(path) == expected
    assert expected["forward"] >= 8 * 768 * 768 * 4  # the upsampled output at least
    with pytest.raises(EdgeSDKError, match="not an ExecuTorch program"):
        planned_buffer_bytes(b"PK\x03\x04 not a program")
    with pytest.raises(EdgeSDKError, match="truncated or corrupt"):
        planned_buffer_bytes(path.read_bytes()[:64])


def test_bench_gives_numbers_for_a_quantized_program_with_a_large_plan(planned_bundle: Path):
    # in a process of its own, as `edgesdk bench` runs it: this one has freed memory the allocator would reuse
    done = subprocess.run([sys.executable, "-m", "edgesdk.runtime.bench", str(planned_bundle), "--backend",
                           "executorch", "--component-runs", "2"], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-2000:]
    result = json.loads(lines[-1])
    assert "error" not in result, result
    check = result["load_growth"]["model"]
    assert check["verdict"] == "kept", check
    # the plan made most of the growth, more than the weights' limit on its own: without taking it off, a refusal
    assert check["planned_mb"] > check["limit_mb"] and check["growth_mb"] > check["limit_mb"], check
    assert check["weights_growth_mb"] < check["limit_mb"]
    assert result["components"]["model"]["p50_ms"] > 0
