"""tiny-sd: the latent text-to-image diffusion model (edgesdk.zoo.tiny_sd), its export and its quality check.

What tiny-sd shares with its one-step students (text assets, latent sizes, prompt accuracy against fp32) lives here
too; `edgesdk.families.onestep` reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from edgesdk.export.capture import ComponentSpec
from edgesdk.export.parity import EagerSession
from edgesdk.families import MAX_ZO_BATCH, ZO_BATCH, ExportOptions, Family, Log
from edgesdk.quant.configs import QuantConfig
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.onestep import OneStep
from edgesdk.zoo.tiny_sd import TinySD, TinySDConfig, ddpm_schedule, load_tiny_sd

DEFAULT_GUIDANCE = 4.0
# A shape batch of 2 is one classifier-free-guidance pair (unconditional + conditional row).
CFG_BATCH = 2


def check_zo_batch(zo_batch: int) -> int:
    if zo_batch < 0 or zo_batch > MAX_ZO_BATCH:
        raise EdgeSDKError(f"--zo-batch must be between 0 (none) and {MAX_ZO_BATCH}, got {zo_batch}")
    return zo_batch


def tiny_sd_components(model: TinySD, zo_batch: int = ZO_BATCH) -> list[ComponentSpec]:
    """Components with realistic example inputs (real prompts, mid-schedule noise), used for parity too.
    ``zo_batch`` (0: none) adds an ExecuTorch method at that batch to the text encoder and the UNet."""
    from edgesdk.zoo.tiny_sd import LatentMean

    extra = (zo_batch,) if zo_batch and zo_batch != CFG_BATCH else ()
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embeddings = model.token_embedding[model.token_ids(["", "a large red star on a blue background"])]
        text = model.text_encoder(embeddings)
        latent = torch.randn(CFG_BATCH, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=generator)
        image = torch.rand(1, cfg.image_channels, cfg.image_size, cfg.image_size, generator=generator) * 2 - 1
    return [
        ComponentSpec("text_encoder", model.text_encoder, (embeddings.contiguous(),), ["input_embeddings"], ["text"],
                      static_batch=CFG_BATCH, extra_batches=extra),
        ComponentSpec("unet", model.unet, (latent, torch.tensor([500.0, 500.0]), text), ["latent", "timestep", "text"],
                      ["noise"], static_batch=CFG_BATCH, extra_batches=extra),
        ComponentSpec("vae_decoder", model.vae.decoder, (latent[:1].contiguous(),), ["latent"], ["image"],
                      static_batch=1),
        ComponentSpec("vae_encoder", LatentMean(model.vae.encoder, cfg), (image,), ["image"], ["latent"],
                      static_batch=1),
    ]


def eager_session_factory(model: TinySD | OneStep | None = None) -> Callable[[object, str], EagerSession]:
    """Sessions over the eager PyTorch modules, for the runtime's pipelines: the reference exports must match."""
    from edgesdk.families.onestep import onestep_components

    model = model or load_tiny_sd()
    components = onestep_components(model) if isinstance(model, OneStep) else tiny_sd_components(model)
    specs = {s.name: s for s in components}

    def factory(_bundle: object, component: str) -> EagerSession:
        spec = specs[component]
        return EagerSession(spec.module, spec.input_names, spec.output_names)

    return factory


def text_assets(model: TinySD | OneStep) -> dict[str, object]:
    """The tokenizer's assets: token-embedding table and vocabulary (a onestep student shares its teacher's)."""
    return {
        "token_embedding": model.token_embedding.detach().numpy().astype(np.float32),
        "vocabulary": {"tokens": model.vocabulary.tokens, "pad": "<pad>", "bos": "<bos>", "eos": "<eos>",
                       "max_tokens": model.config.max_tokens, "lowercase": True},
    }


def tiny_sd_assets(model: TinySD) -> dict[str, object]:
    return {**text_assets(model), "alphas_cumprod": ddpm_schedule(model.config)}


def latent_space_metadata(cfg: TinySDConfig) -> dict:
    """Image, latent and prompt sizes: what every tiny-sd-derived runtime pipeline reads."""
    return {"image_size": cfg.image_size, "image_channels": cfg.image_channels,
            "latent_channels": cfg.latent_channels, "latent_size": cfg.latent_size, "max_tokens": cfg.max_tokens,
            "text_width": cfg.text_width, "train_timesteps": cfg.train_timesteps}


def tiny_sd_metadata(model: TinySD) -> dict:
    cfg = model.config
    return {**latent_space_metadata(cfg), "prediction": "epsilon", "guidance_scale": DEFAULT_GUIDANCE,
            "schedule": "scaled-linear", "beta_start": cfg.beta_start, "beta_end": cfg.beta_end}


def quantized_vs_fp32_accuracy(bundle_dir: Path, model: TinySD | OneStep, backends: list[str], log: Log,
                               samples: int = 50, steps: int = 20) -> dict:
    """End-to-end prompt accuracy of the quantized files against the fp32 eager model, same prompts and seeds.
    A onestep model is sampled in its one generator evaluation (``steps`` does not apply)."""
    from edgesdk.evaluate import prompt_accuracy

    sampler_steps = None if isinstance(model, OneStep) else steps  # a one-step generator takes no sampler options
    steps = 1 if sampler_steps is None else steps
    log(f"prompt accuracy, quantized vs fp32 ({samples} samples, {steps} step{'s' if steps > 1 else ''})")
    figures = {"samples": samples, "steps": steps, "prompt_accuracy": {}}
    reference, _, _ = prompt_accuracy(bundle_dir, backend="eager", samples=samples, steps=sampler_steps,
                                      session_factory=eager_session_factory(model))
    figures["prompt_accuracy"]["fp32_eager"] = reference.accuracy
    for backend in backends:
        report, _, _ = prompt_accuracy(bundle_dir, backend=backend, samples=samples, steps=sampler_steps)
        figures["prompt_accuracy"][backend] = report.accuracy
        log(f"  {backend:10s} kind {report.accuracy['kind']:.0%} colour {report.accuracy['colour']:.0%}  "
            f"(fp32 eager: kind {reference.accuracy['kind']:.0%} colour {reference.accuracy['colour']:.0%})")
    return figures


def prompt_accuracy_check(model: TinySD | OneStep, targets: list[str], log: Log) -> Callable[[Path], dict]:
    """The quality check of a quantized text-to-image bundle: prompt accuracy on each target's runtime vs fp32."""
    backends = [t for t in targets if t != "tensorrt"]  # TensorRT engines are built and judged where they run

    def check(staging: Path) -> dict:
        return quantized_vs_fp32_accuracy(staging, model, backends, log)

    return check


class TinySDFamily(Family):
    name: ClassVar[str] = "tiny-sd"
    runtime_task: ClassVar[str] = "text-to-image"
    recipe_names: ClassVar[tuple[str, ...]] = ("fp32", "w8a8", "w8", "w4")
    options: ClassVar[frozenset[str]] = frozenset({"zo_batch"})

    def check_options(self, options: ExportOptions, config: QuantConfig) -> ExportOptions:
        options = super().check_options(options, config)
        # bundles of the recipes that keep the zeroth-order signal carry the personalization method by default
        # (~0.2 MB in quantized files, whose weights pack per method)
        zo_batch = options.zo_batch if options.zo_batch is not None else \
            (ZO_BATCH if config.keeps_zeroth_order_signal else 0)
        return ExportOptions(options.weights, check_zo_batch(zo_batch), options.image_size, options.calibration)

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> TinySD:
        return load_tiny_sd(options.weights)

    def components(self, model: TinySD, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        return tiny_sd_components(model, options.zo_batch or 0)

    def calibration(self, model: TinySD, config: QuantConfig, log: Log) -> dict[str, list[tuple]] | None:
        from edgesdk.calibration import tiny_sd_calibration

        log(f"recording {config.calibration.samples} calibration inputs per component "
            f"({config.calibration.trajectory} trajectories)")
        return tiny_sd_calibration(model, config.calibration)

    def assets(self, model: TinySD) -> dict[str, object]:
        return tiny_sd_assets(model)

    def metadata(self, model: TinySD) -> dict:
        return tiny_sd_metadata(model)

    def quality(self, model: TinySD, targets: list[str], log: Log) -> Callable[[Path], dict] | None:
        return prompt_accuracy_check(model, targets, log)
