"""onestep: a one-step student generator distilled from tiny-sd (edgesdk.zoo.onestep), exported over its teacher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch

from edgesdk.export.capture import ComponentSpec
from edgesdk.families import ExportOptions, Family, Log
from edgesdk.families.tiny_sd import latent_space_metadata, prompt_accuracy_check, text_assets
from edgesdk.quant.configs import QuantConfig
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.pipeline import initial_noise
from edgesdk.zoo.onestep import OneStep, default_onestep_path, default_onestep_w4_path, load_onestep

# A one-step generator returns x0 = (z - sigma_T eps) / alpha_T: at the last timestep sigma_T / alpha_T is ~15, so
# its UNet's quantization error reaches the latent ~23 dB louder than a diffusion UNet's eps output, and the recipes'
# floors (set on eps) do not fit it. Measured on the teacher-initialised student, latent SQNR vs fp32 and prompt
# accuracy (50 samples): w8 15.9 dB ONNX / 27.2 dB ExecuTorch and w8a8 11.8-12.4 dB on all three targets, accuracy
# within 2 points of fp32; w4 1.1-1.5 dB, accuracy halved. Quantized onestep bundles hold every component to at
# most this floor (the text encoder and VAE stay above 25 dB). 4-bit weights need a student fine-tuned on the
# 4-bit grid (`edgesdk train onestep-w4`, edgesdk.train.quant_aware), which `--quant w4` exports by default.
ONESTEP_SQNR_FLOOR_DB = 10.0


def onestep_components(model: OneStep) -> list[ComponentSpec]:
    """A one-step student's components, batch 1 on ExecuTorch (one prompt per image, no guidance pair; ONNX keeps
    the dynamic batch). Example inputs: a real prompt, noise drawn as the runtime draws it, and the latent the
    generator makes of them (used for parity too)."""
    cfg = model.config
    with torch.no_grad():
        embeddings = model.token_embedding[model.token_ids(["a large red star on a blue background"])]
        text = model.text_encoder(embeddings)
        noise = torch.from_numpy(initial_noise(0, 1, (cfg.latent_channels, cfg.latent_size, cfg.latent_size)))
        latent = model.generator(noise, text)
    return [
        ComponentSpec("text_encoder", model.text_encoder, (embeddings.contiguous(),), ["input_embeddings"], ["text"],
                      static_batch=1),
        ComponentSpec("generator", model.generator, (noise, text), ["noise", "text"], ["latent"], static_batch=1),
        ComponentSpec("vae_decoder", model.vae.decoder, (latent,), ["latent"], ["image"], static_batch=1),
    ]


def onestep_metadata(model: OneStep) -> dict:
    """The teacher's sizes plus the student's own record (divergence, timestep, and whatever else its file says)."""
    student = {k: v for k, v in model.info.items() if k not in ("family", "divergence", "timestep")}
    return {**latent_space_metadata(model.config), "prediction": "sample", "steps": 1,
            "timestep": model.generator.timestep, "divergence": model.info.get("divergence"), "teacher": "tiny-sd",
            "student": student}


class OneStepFamily(Family):
    name: ClassVar[str] = "onestep"
    runtime_task: ClassVar[str] = "one-step-text-to-image"
    recipe_names: ClassVar[tuple[str, ...]] = ("fp32", "w8a8", "w8", "w4")

    def check_options(self, options: ExportOptions, config: QuantConfig) -> ExportOptions:
        if options.zo_batch:
            raise EdgeSDKError(f"--zo-batch {options.zo_batch}: onestep bundles carry no personalization methods; "
                               "drop the option (personalize a tiny-sd bundle instead)")
        return super().check_options(options, config)

    def variant(self, config: QuantConfig) -> QuantConfig:
        return config if config.lossless else config.with_floor(min(config.sqnr_floor_db, ONESTEP_SQNR_FLOOR_DB))

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> OneStep:
        weights = options.weights
        if weights is None and not default_onestep_path().exists():
            raise EdgeSDKError(f"no distilled onestep student at {default_onestep_path()} yet; pass one with "
                               "--weights STUDENT.safetensors")
        if config.weight_bits == 4 and weights is None:
            weights = default_onestep_w4_path()
            if not weights.exists():
                raise EdgeSDKError(f"--quant w4 exports a quantization-aware student and {weights} is missing; make "
                                   "it with `edgesdk train onestep-w4`")
        model = load_onestep(weights)
        if config.weight_bits == 4 and not model.info.get("quant_aware"):
            raise EdgeSDKError(f"{weights or default_onestep_path()} is not quantization-aware: 4-bit weights put a "
                               "one-step student's output near 6 dB SQNR. Fine-tune it first with `edgesdk train "
                               "onestep-w4 --student FILE -o FILE-w4.safetensors` and export that")
        return model

    def components(self, model: OneStep, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        return onestep_components(model)

    def calibration(self, model: OneStep, config: QuantConfig, log: Log) -> dict[str, list[tuple]] | None:
        from edgesdk.calibration import onestep_calibration

        log(f"recording {config.calibration.samples} calibration inputs per component (noise + prompt, as sampled)")
        return onestep_calibration(model, config.calibration)

    def assets(self, model: OneStep) -> dict[str, object]:
        return text_assets(model)  # no schedule: the generator runs once, at the timestep it was distilled for

    def metadata(self, model: OneStep) -> dict:
        return onestep_metadata(model)

    def quality(self, model: OneStep, targets: list[str], log: Log) -> Callable[[Path], dict] | None:
        return prompt_accuracy_check(model, targets, log)
