"""The one-step student of tiny-sd: one UNet evaluation maps noise and a prompt to a clean latent.

The generator is a copy of the teacher's UNet read at the last timestep T-1: it predicts noise from pure noise
z = x_T, and x_0 = (z - sqrt(1 - abar_T) eps) / sqrt(abar_T), so at initialisation the student is exactly the
teacher's one-step guess (spec §6: G starts from the teacher's weights). Text encoder, token table and VAE are
the teacher's, frozen: a student file stores only its UNet, and loads the rest from the tiny-sd it was
distilled from (found by the sha256 its metadata records: the shipped students were distilled from the tiny-sd of
the named palette, kept as ``weights/tiny_sd_named.safetensors`` beside today's continuous-palette tiny-sd).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from edgesdk.zoo.tiny_sd import TinySD, UNet, default_weights_path, load_tiny_sd


class OneStepGenerator(nn.Module):
    """(noise (B,4,8,8), text (B,L,D)) -> latent x_0 (B,4,8,8), in the teacher's latent space."""

    def __init__(self, unet: UNet, alphas_cumprod: Tensor, timestep: int | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.timestep = int(len(alphas_cumprod) - 1 if timestep is None else timestep)
        abar = float(alphas_cumprod[self.timestep])
        self.signal, self.noise_level = math.sqrt(abar), math.sqrt(1.0 - abar)

    def forward(self, noise: Tensor, text: Tensor) -> Tensor:
        # the timestep column is built from the input so the batch stays dynamic under torch.export
        t = torch.ones_like(noise[:, 0, 0, 0]) * float(self.timestep)
        eps = self.unet(noise, t, text)
        return (noise - self.noise_level * eps) / self.signal


class OneStep(nn.Module):
    """A distilled student with the frozen parts of its teacher: what `edgesdk export onestep` exports."""

    def __init__(self, teacher: TinySD, generator: OneStepGenerator, info: dict | None = None) -> None:
        super().__init__()
        self.config = teacher.config
        self.vocabulary = teacher.vocabulary
        self.token_embedding = teacher.token_embedding
        self.text_encoder = teacher.text_encoder
        self.vae = teacher.vae
        self.generator = generator
        self.register_buffer("alphas_cumprod", teacher.alphas_cumprod.clone(), persistent=False)
        self.info = dict(info or {})  # divergence, guidance, steps... (from the weights file)

    # the teacher's tokenizer, over the same vocabulary and config (without holding the teacher's UNet)
    token_ids = TinySD.token_ids

    def encode_text(self, prompts: list[str]) -> Tensor:
        return self.text_encoder(self.token_embedding[self.token_ids(prompts)])

    @torch.no_grad()
    def generate_latents(self, prompts: list[str], seed: int = 0) -> Tensor:
        """Eager reference: one generator evaluation per prompt; noise of row i from seed + i, drawn exactly as
        the runtime draws it (`edgesdk.runtime.pipeline.initial_noise`), so an exported bundle and this agree."""
        from edgesdk.runtime.pipeline import initial_noise

        cfg = self.config
        noise = torch.from_numpy(initial_noise(seed, len(prompts), (cfg.latent_channels, cfg.latent_size,
                                                                    cfg.latent_size)))
        return self.generator(noise, self.encode_text(prompts))


def student_from_teacher(teacher: TinySD) -> OneStepGenerator:
    """G initialised as a copy of the teacher's UNet (trainable), reading the teacher's last timestep."""
    generator = OneStepGenerator(copy.deepcopy(teacher.unet), teacher.alphas_cumprod)
    for p in generator.parameters():
        p.requires_grad_(True)
    return generator


def default_onestep_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "onestep.safetensors"


def default_onestep_w4_path() -> Path:
    """The shipped student fine-tuned for 4-bit weights (`edgesdk train onestep-w4`), what `--quant w4` exports."""
    return default_onestep_path().with_name("onestep-w4.safetensors")


def shipped_teacher(sha256: str | None) -> Path | None:
    """The shipped tiny-sd weights whose file has this sha256 (a student's teacher), None when none has."""
    from edgesdk.runtime.bundle import file_sha256

    for candidate in (default_weights_path(), default_weights_path().with_name("tiny_sd_named.safetensors")):
        if sha256 and candidate.exists() and file_sha256(candidate) == sha256:
            return candidate
    return None


def load_onestep(path: Path | None = None, teacher_path: Path | None = None) -> OneStep:
    """A student file (its UNet, fp16, plus metadata) on top of its tiny-sd teacher, in eval mode. The teacher is
    ``teacher_path``, else the shipped tiny-sd the student's metadata names (by sha256), else the shipped one."""
    from edgesdk.runtime.errors import EdgeSDKError
    from edgesdk.zoo.weights import load_weights

    path = path or default_onestep_path()
    tensors, metadata = load_weights(path)
    if metadata.get("family") != "onestep":
        raise EdgeSDKError(f"{path} holds '{metadata.get('family')}' weights, not a onestep student")
    teacher = load_tiny_sd(teacher_path or shipped_teacher(metadata.get("teacher_sha256")))
    generator = OneStepGenerator(copy.deepcopy(teacher.unet), teacher.alphas_cumprod, int(metadata["timestep"]))
    generator.unet.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return OneStep(teacher, generator, metadata).eval()
