"""Training recipes: they learn, checkpoint atomically, resume after a kill, and run under torchrun (gloo)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

UNET_STEPS = 60  # the kill lands after the first checkpoint (step 5), long before the last step
TINY = ["--vae-steps", "6", "--unet-steps", str(UNET_STEPS), "--dataset-size", "64", "--batch", "8",
        "--checkpoint-every", "5", "--quiet"]


def _train_cmd(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "edgesdk.cli", "train", "tiny-sd", "-o", str(tmp / "w.safetensors"),
            "--checkpoint-dir", str(tmp / "ck"), *TINY]


def test_training_resumes_after_kill(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ckpt = tmp_path / "ck" / "diffusion.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no diffusion checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < saved < UNET_STEPS, saved
    assert not (tmp_path / "w.safetensors").exists()
    done = subprocess.run(_train_cmd(tmp_path), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming diffusion from step {saved}" in done.stderr
    assert "resuming vae" not in done.stderr  # the finished VAE stage is not redone
    assert torch.load(ckpt, weights_only=False)["step"] == UNET_STEPS
    from edgesdk.zoo.tiny_sd import load_tiny_sd

    model = load_tiny_sd(tmp_path / "w.safetensors")
    assert model.config.latent_scale != 1.0  # set from the trained VAE's latents


def test_torchrun_ddp_two_processes(tmp_path: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2",
           "-m", "edgesdk.cli", "train", "tiny-sd",
           "-o", str(tmp_path / "w.safetensors"), "--checkpoint-dir", str(tmp_path / "ck"),
           "--vae-steps", "4", "--unet-steps", "4", "--dataset-size", "64", "--batch", "8", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "w.safetensors").exists()
    assert torch.load(tmp_path / "ck" / "diffusion.pt", weights_only=False)["step"] == 4
