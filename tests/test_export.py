"""Export stages and the exported tiny-sd bundle: files, static TensorRT shapes, delegation, parity."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgesdk.export.capture import ComponentSpec, capture
from edgesdk.export.executorch import lower_to_executorch
from edgesdk.export.parity import EagerSession, compare
from edgesdk.export.pipeline import export_bundle, parse_targets
from edgesdk.export.tensorrt import tensorrt_status
from edgesdk.families.tiny_sd import eager_session_factory, tiny_sd_components
from edgesdk.runtime import EdgeSDKError
from edgesdk.runtime.backends import OnnxSession
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.pipeline import TextToImage
from edgesdk.zoo.tiny_sd import load_tiny_sd

COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


class NearestUp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")


def test_delegation_report_names_ops_xnnpack_does_not_take():
    spec = ComponentSpec("up", NearestUp(), (torch.randn(1, 3, 8, 8),), ["x"], ["y"])
    captured = capture(spec, dynamic_batch=False)
    report = lower_to_executorch(captured.static, "up").delegation
    assert report.delegated_share < 1.0
    assert any("upsample_nearest" in op for op in report.not_delegated)


def test_capture_failure_is_a_clear_error_and_leaves_nothing(tmp_path: Path):
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # Python control flow on a tensor's value cannot be captured
                return x
            return -x

    spec = ComponentSpec("bad", DataDependent(), (torch.randn(2, 3),), ["x"], ["y"])
    with pytest.raises(EdgeSDKError, match="component 'bad'"):
        export_bundle([spec], family="t", model_meta={}, assets={}, targets=["executorch"],
                      output=tmp_path / "b.edge", log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []


def test_unknown_target_is_rejected():
    with pytest.raises(EdgeSDKError, match="unknown target"):
        parse_targets("executorch,coreml")


def test_bundle_layout_and_manifest(shipped_bundle: Path):
    bundle = Bundle.open(shipped_bundle)
    assert bundle.family == "tiny-sd"
    assert sorted(bundle.components) == sorted(COMPONENTS)
    assert set(bundle.targets()) == {"executorch", "onnx", "tensorrt"}
    manifest = json.loads((shipped_bundle / "manifest.json").read_text())
    assert manifest["format"] == "edgesdk-bundle" and manifest["format_version"] == 1
    for name in COMPONENTS:
        entry = manifest["components"][name]
        # every graph the ExecuTorch file runs is inside the XNNPACK delegate
        assert entry["delegation"]["executorch"]["delegated_share"] == 1.0, entry["delegation"]["executorch"]
        for target in ("executorch", "onnx", "tensorrt"):
            for output, figures in entry["parity"][target].items():
                assert figures["rel_max_abs"] <= 1e-4, (name, target, output, figures)
                assert figures["sqnr_db"] >= 80.0


def test_tensorrt_files_are_static_and_scripted(shipped_bundle: Path):
    bundle = Bundle.open(shipped_bundle)
    script = (shipped_bundle / "tensorrt" / "build_engines.sh").read_text()
    for name in COMPONENTS:
        info = bundle.component(name)
        graph = onnx.load(str(bundle.path_of(info.files["tensorrt"]))).graph
        for value in graph.input:
            dims = value.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") for d in dims), f"{name}.{value.name} has a dynamic dim"
            assert dims[0].dim_value == info.static_shapes["tensorrt"]["batch"]
        assert f"--onnx={info.files['tensorrt']}" in script


def test_tensorrt_engine_build(tmp_path: Path):
    ok, why = tensorrt_status()
    if not ok:
        pytest.skip(why)
    from edgesdk.export.tensorrt import build_engine

    model = nn.Linear(4, 2)
    spec = ComponentSpec("lin", model, (torch.randn(1, 4),), ["x"], ["y"])
    from edgesdk.export.onnx import lower_to_onnx

    data = lower_to_onnx(capture(spec, dynamic_batch=False).static, ["x"], ["y"], "lin")
    (tmp_path / "lin.onnx").write_bytes(data)
    assert len(build_engine(tmp_path / "lin.onnx")) > 0


def test_onnx_graph_takes_a_dynamic_batch(shipped_bundle: Path):
    bundle = Bundle.open(shipped_bundle)
    info = bundle.component("unet")
    session = OnnxSession(bundle.path_of(info.files["onnx"]), info)
    rng = np.random.default_rng(0)
    model = bundle.model
    feeds = {"latent": rng.standard_normal((3, model["latent_channels"], 8, 8)).astype(np.float32),
             "timestep": np.array([10.0, 500.0, 990.0], dtype=np.float32),
             "text": rng.standard_normal((3, model["max_tokens"], model["text_width"])).astype(np.float32)}
    spec = next(s for s in tiny_sd_components(load_tiny_sd()) if s.name == "unet")
    reference = EagerSession(spec.module, spec.input_names, spec.output_names).run(feeds)["noise"]
    assert compare(reference, session.run(feeds)["noise"])["rel_max_abs"] <= 1e-4


def test_exported_images_match_eager_for_the_same_seed(shipped_bundle: Path):
    prompts = ["a large red star on a blue background", "a small green circle"]
    kwargs = {"steps": 10, "seed": 7, "return_float": True}
    eager = TextToImage(shipped_bundle, backend="eager", session_factory=eager_session_factory())
    reference = eager.generate(prompts, **kwargs)
    for backend in ("executorch", "onnx"):
        images = TextToImage(shipped_bundle, backend=backend).generate(prompts, **kwargs)
        figures = compare(reference, images)
        assert figures["rel_max_abs"] <= 1e-4, (backend, figures)


def test_component_examples_are_traced_contiguous():
    # a channels-last example (numpy's transpose of HWC images) made ExecuTorch programs read pixels in the wrong
    # places when the runtime fed contiguous arrays (found on 3-channel binary networks; see test_bnn parity)
    image = torch.randn(2, 8, 8, 3).permute(0, 3, 1, 2)
    assert not image.is_contiguous()
    spec = ComponentSpec("net", torch.nn.Identity(), (image,), ["x"], ["y"])
    assert spec.example_inputs[0].is_contiguous() and torch.equal(spec.example_inputs[0], image)


class EveryPassHasWork(nn.Module):
    """Batch norm after a convolution, prelu, a 1-D convolution and a six-way concatenation: the ops of the XNNPACK
    passes that faster_lowering skips where they are absent."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.prelu = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.PReLU()
        self.conv1d = nn.Conv1d(6, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.prelu(self.norm(self.conv(x)))
        line = self.conv1d(y.flatten(2))
        return torch.cat([y.flatten(1)] * 5 + [line.flatten(1)], dim=1)


class NoPassHasWork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.linear = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x)).mean((2, 3))
        return torch.softmax(self.linear(y), dim=-1)


@pytest.mark.parametrize("model_class", [EveryPassHasWork, NoPassHasWork])
def test_faster_lowering_gives_the_same_file(model_class: type[nn.Module], monkeypatch: pytest.MonkeyPatch):
    """The lowering-time savings (provenance records shared, idle XNNPACK passes skipped) change no byte of the .pte,
    and a pass is skipped exactly where its ops are absent."""
    import torch.fx.traceback as fx_traceback
    from executorch.backends.xnnpack._passes.fuse_batch_norm import FuseBatchNormPass

    calls = []
    original = FuseBatchNormPass.call
    monkeypatch.setattr(FuseBatchNormPass, "call", lambda self, gm: (calls.append(1), original(self, gm))[1])
    init = fx_traceback.NodeSource.__init__
    torch.manual_seed(0)
    model = model_class().eval()
    program = torch.export.export(model, (torch.randn(1, 3, 8, 8),))
    fast = lower_to_executorch(program, "m")
    assert len(calls) == (1 if model_class is EveryPassHasWork else 0)
    assert fx_traceback.NodeSource.__init__ is init  # put back after lowering
    slow = lower_to_executorch(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), "m", fast=False)
    assert fast.buffer == slow.buffer and fast.delegation == slow.delegation
