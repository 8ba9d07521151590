"""f-distill training of the one-step student: it learns, resumes bit-exactly, and runs under torchrun."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.train.onestep import OneStepTrainConfig, train_onestep
from edgesdk.zoo.onestep import load_onestep
from edgesdk.zoo.weights import load_weights

SMALL = {"batch": 4, "dataset_size": 32, "update_freq": 3}


def test_resume_gives_the_same_student_as_one_run(tmp_path: Path):
    straight = train_onestep(tmp_path / "a.safetensors", tmp_path / "ck-a",
                             OneStepTrainConfig(iterations=7, **SMALL), show_progress=False)
    train_onestep(tmp_path / "b.safetensors", tmp_path / "ck-b", OneStepTrainConfig(iterations=4, **SMALL),
                  show_progress=False)
    resumed = train_onestep(tmp_path / "b.safetensors", tmp_path / "ck-b", OneStepTrainConfig(iterations=7, **SMALL),
                            show_progress=False)
    a, meta = load_weights(straight)
    b, _ = load_weights(resumed)
    assert meta["family"] == "onestep" and meta["divergence"] == "js" and meta["timestep"] == 999
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the student moved away from its initialisation (the teacher's UNet)
    from edgesdk.zoo.tiny_sd import load_tiny_sd

    teacher = load_tiny_sd().unet.state_dict()
    assert any(not torch.equal(a[k].float(), teacher[k].half().float()) for k in a)
    student = load_onestep(straight)
    latents = student.generate_latents(["a red star on a blue background"])
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()
    # other settings than the checkpoint's are refused, not mixed into one run
    with pytest.raises(EdgeSDKError, match="other settings"):
        train_onestep(tmp_path / "b.safetensors", tmp_path / "ck-b",
                      OneStepTrainConfig(iterations=8, **{**SMALL, "batch": 8}), show_progress=False)


def test_unknown_divergence_is_one_line():
    done = subprocess.run([sys.executable, "-m", "edgesdk.cli", "train", "onestep", "--divergence", "tv"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "choose one of rkl, srkl, js, hellinger, fkl, jeffreys" in done.stderr


def test_torchrun_two_processes_one_step(tmp_path: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2",
           "-m", "edgesdk.cli", "train", "onestep", "--divergence", "fkl",
           "-o", str(tmp_path / "s.safetensors"), "--checkpoint-dir", str(tmp_path / "ck"), "--iterations", "2",
           "--batch", "4", "--dataset-size", "32", "--update-freq", "2", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "ck" / "onestep-fkl.pt", weights_only=False)
    assert state["iteration"] == 2  # one generator and one critic step, across both ranks
    assert load_weights(tmp_path / "s.safetensors")[1]["divergence"] == "fkl"
