"""The onestep family: export of a one-step student (fp32 to ExecuTorch + ONNX) and the SQNR floor its quantized
bundles are held to, its torch-free runtime against the eager model, and the CLI on a one-step bundle."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesdk.export.parity import compare
from edgesdk.exporting import export_model
from edgesdk.families.onestep import ONESTEP_SQNR_FLOOR_DB, OneStepFamily
from edgesdk.quant.configs import FP32Config, W4Config, W8A8Config, W8Config
from edgesdk.runtime import EdgeSDKError, OneStepTextToImage, TextToImage
from edgesdk.runtime.backends import open_session
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.testing import write_synthetic_bundle
from edgesdk.train.common import save_weights
from edgesdk.zoo.onestep import OneStep, default_onestep_path, load_onestep, student_from_teacher
from edgesdk.zoo.tiny_sd import load_tiny_sd
from tests.conftest import run_cli, run_cli_in_process, run_without_torch

COMPONENTS = ("text_encoder", "generator", "vae_decoder")
PROMPTS = ["a large red star on a blue background", "a small green circle", "a yellow square on the left"]


@pytest.fixture(scope="module")
def student_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A student equal to the teacher's one-step guess, saved the way distillation saves one (fp16 UNet)."""
    generator = student_from_teacher(load_tiny_sd())
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    save_weights({k: v.half() for k, v in generator.unet.state_dict().items()}, path,
                 {"family": "onestep", "timestep": generator.timestep, "divergence": "js", "guidance": 4.0})
    return path


@pytest.fixture(scope="module")
def model() -> OneStep:
    return load_onestep(default_onestep_path())  # the shipped student


@pytest.fixture(scope="module")
def bundle_dir(shared: Callable[[str], Path]) -> Path:
    # export_model("onestep", out, "executorch,onnx"): the shipped student, shared with ctest (tests/bundles.py)
    return shared("onestep")


def test_bundle_layout_and_metadata(bundle_dir: Path):
    bundle = Bundle.open(bundle_dir)
    assert bundle.family == "onestep"
    assert sorted(bundle.components) == sorted(COMPONENTS)
    assert set(bundle.targets()) == {"executorch", "onnx"}
    generator = bundle.component("generator")
    assert generator.input_names == ["noise", "text"] and generator.output_names == ["latent"]
    for name in COMPONENTS:
        info = bundle.component(name)
        assert info.static_shapes["executorch"]["batch"] == 1
        assert "onnx" not in info.static_shapes  # dynamic batch there
        assert "methods" not in info.static_shapes["executorch"]  # no personalization batch methods
        for target in ("executorch", "onnx"):
            for figures in info.parity[target].values():
                assert figures["rel_max_abs"] <= 1e-4 and figures["sqnr_db"] >= 80.0, (name, target, figures)
    meta = bundle.model
    shipped = load_onestep(default_onestep_path()).info
    assert meta["divergence"] == shipped["divergence"] and meta["timestep"] == 999 and meta["steps"] == 1
    assert meta["student"]["guidance"] == shipped["guidance"] == 4.0
    assert meta["student"]["train_config"] == shipped["train_config"]  # the student's own record travels along
    assert meta["latent_size"] == 8 and meta["image_size"] == 32
    assert set(bundle.manifest["assets"]) == {"token_embedding", "vocabulary"}


def test_exported_generator_matches_the_eager_student(bundle_dir: Path, model: OneStep):
    bundle = Bundle.open(bundle_dir)
    rng = np.random.default_rng(5)
    with torch.no_grad():
        text = model.encode_text(PROMPTS).numpy()
    noise = rng.standard_normal((len(PROMPTS), 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        reference = model.generator(torch.from_numpy(noise), torch.from_numpy(text)).numpy()
    for backend in ("executorch", "onnx"):  # batch 3: chunked to batch 1 on ExecuTorch, one call on ONNX
        got = open_session(bundle, "generator", backend).run({"noise": noise, "text": text})["latent"]
        figures = compare(reference, got)
        assert figures["rel_max_abs"] <= 1e-4, (backend, figures)


def test_runtime_matches_the_eager_one_step_path(bundle_dir: Path, model: OneStep):
    with torch.no_grad():
        reference = model.vae.decoder(model.generate_latents(PROMPTS, seed=7)).numpy()
    for backend in ("executorch", "onnx"):
        pipe = OneStepTextToImage(bundle_dir, backend=backend, threads=1)
        images = pipe.generate(PROMPTS, seed=7, return_float=True)
        figures = compare(reference, images)
        assert figures["rel_max_abs"] <= 1e-4, (backend, figures)
        assert {name: t["calls"] for name, t in pipe.timings.items()} == dict.fromkeys(COMPONENTS, 1)
        pixels = pipe.generate(PROMPTS, seed=7)
        assert pixels.shape == (3, 32, 32, 3) and pixels.dtype == np.uint8
    # image i depends on its prompt and seed + i only
    single = OneStepTextToImage(bundle_dir, backend="onnx").generate(PROMPTS[1:2], seed=8, return_float=True)
    assert compare(reference[1:2], single)["rel_max_abs"] <= 1e-4


def test_pipelines_refuse_each_others_bundles(bundle_dir: Path, tmp_path: Path):
    with pytest.raises(EdgeSDKError, match="OneStepTextToImage"):
        TextToImage(bundle_dir)
    with pytest.raises(EdgeSDKError, match="not a one-step generator"):
        OneStepTextToImage(write_synthetic_bundle(tmp_path / "synthetic.edge"))


def test_runtime_samples_a_onestep_bundle_without_torch(bundle_dir: Path):
    result = run_without_torch(f"""
from edgesdk.runtime import OneStepTextToImage
images = OneStepTextToImage({str(bundle_dir)!r}, backend="onnx").generate(["a red star"], seed=3)
assert images.shape == (1, 32, 32, 3) and images.dtype.name == "uint8"
print("ok")
""")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_cli_sample_inspect_and_refused_sampler_options(bundle_dir: Path, tmp_path: Path):
    out = tmp_path / "grid.png"
    result = run_cli("sample", str(bundle_dir), "-p", "a red star", "-p", "a blue circle", "--per-prompt", "2",
                     "--backend", "executorch", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "one step" in result.stdout
    assert Image.open(out).size == (2 * 32, 2 * 32)
    for option in (["--steps", "10"], ["--sampler", "dpmpp-2m"], ["--guidance", "2"]):
        refused = run_cli("sample", str(bundle_dir), "-p", "a red star", *option, "-o", str(tmp_path / "no.png"))
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and option[0] in lines[0], refused.stderr
    assert not (tmp_path / "no.png").exists()
    summary = run_cli("inspect", str(bundle_dir), "--json")
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["family"] == "onestep"


def test_unknown_family_and_personalization_batch_are_one_line(tmp_path: Path, student_file: Path):
    result = run_cli_in_process("export", "nosuchfamily", "-o", str(tmp_path / "x.edge"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model family 'nosuchfamily'" in lines[0] and "onestep" in lines[0]
    with pytest.raises(EdgeSDKError, match="no personalization methods"):
        export_model("onestep", tmp_path / "y.edge", "onnx", weights=student_file, zo_batch=3)
    assert not (tmp_path / "x.edge").exists() and not (tmp_path / "y.edge").exists()


def test_quantized_onestep_bundles_are_held_to_the_familys_floor():
    """A one-step generator's x0 amplifies int8 error (families/onestep.py): every lossy recipe is held to at most
    ONESTEP_SQNR_FLOOR_DB, lossless ones keep theirs. The full-size w8 and w4 exports and their prompt accuracy are
    measured by benchmarks/onestep_quant.py (suite time)."""
    family = OneStepFamily()
    for config in (W8Config(), W8A8Config(), W4Config()):
        assert config.sqnr_floor_db > ONESTEP_SQNR_FLOOR_DB  # else this check could not fail
        assert family.variant(config).sqnr_floor_db == ONESTEP_SQNR_FLOOR_DB
        assert family.variant(config.with_floor(5.0)).sqnr_floor_db == 5.0  # a lower floor asked for is kept
    assert family.variant(FP32Config()) == FP32Config()
