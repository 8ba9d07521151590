"""`edgesdk bench` on ExecuTorch: the memory verdict tells the program's planned activation buffer apart from integer
weights expanded to float (runtime/bench.py, runtime/pte.py), and the Python binding runs at the threads asked for
(runtime/executorch_backend.py)."""

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
                           "executorch", "--component-runs", "2", "--threads", "1"],
                          capture_output=True, text=True, check=False)
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
    assert result["threads"] == {"requested": 1, "executorch_pool": 1}


SESSIONS_SCRIPT = """
import json, sys, warnings
import numpy as np
from edgesdk.runtime.backends import open_session
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.executorch_backend import thread_count

bundle = Bundle.open(sys.argv[1])
x1, x2 = (np.random.default_rng(seed).standard_normal((1, 2048)).astype(np.float32) for seed in (1, 2))
first = open_session(bundle, "model", "executorch", threads=1)
pools = [thread_count()]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    second = open_session(bundle, "model", "executorch", threads=2)  # beside an open session: the pool stays
pools.append(thread_count())
y1 = first.run({"x": x1})["y"]
kept = y1.copy()
second.run({"x": x2})
first.run({"x": x2})
del first, second
third = open_session(bundle, "model", "executorch", threads=2)  # none open: resized
pools.append(thread_count())
print(json.dumps({"pools": pools, "warnings": [str(w.message) for w in caught],
                  "outputs_kept": bool(np.array_equal(y1, kept)), "third_runs": bool(third.run({"x": x1})["y"].size)}))
"""


def test_python_binding_runs_at_the_threads_asked_for_and_outputs_are_copies(planned_bundle: Path):
    done = subprocess.run([sys.executable, "-c", SESSIONS_SCRIPT, str(planned_bundle)], capture_output=True,
                          text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-2000:]
    result = json.loads(lines[-1])
    assert result["pools"] == [1, 1, 2], result
    assert len(result["warnings"]) == 1 and "1 open session(s) use it with 1 threads" in result["warnings"][0]
    # outputs are numpy copies, not views of the method's memory that the next call overwrites
    assert result["outputs_kept"] and result["third_runs"]
