"""Export the model families: which components each has, their example inputs, assets and metadata."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgesdk.calibration import tiny_sd_calibration
from edgesdk.export.capture import ComponentSpec
from edgesdk.export.parity import EagerSession
from edgesdk.export.pipeline import Log, export_bundle, parse_targets
from edgesdk.quant.recipes import Calibration, check_targets, recipe_from_name
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.tiny_sd import TinySD, ddpm_schedule, load_tiny_sd

FAMILIES = ("tiny-sd",)
DEFAULT_GUIDANCE = 4.0
# A shape batch of 2 is one classifier-free-guidance pair (unconditional + conditional row).
CFG_BATCH = 2
# On-device personalization runs the n+1 queries of one zeroth-order step (n = 2 directions by default) as one
# forward; ExecuTorch gets a method at that batch too (weights stored once in the .pte).
ZO_BATCH = 3
# Recipes whose bundles carry that method by default. benchmarks/zo_regime.py: static int8 activations (w8a8) leave
# the zeroth-order estimate almost no signal at usable perturbation sizes, and the method costs ~0.2 MB in
# quantized files (their weights pack per method), so w8a8 and w4 bundles are for sampling unless asked
# (--zo-batch 3).
PERSONALIZATION_RECIPES = ("fp32", "w8")


def tiny_sd_components(model: TinySD, zo_batch: int = ZO_BATCH) -> list[ComponentSpec]:
    """Components with realistic example inputs (real prompts, mid-schedule noise), used for parity too.
    ``zo_batch`` (0: none) adds an ExecuTorch method at that batch to the text encoder and the UNet."""
    extra = (zo_batch,) if zo_batch and zo_batch != CFG_BATCH else ()
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embeddings = model.token_embedding[model.token_ids(["", "a large red star on a blue background"])]
        text = model.text_encoder(embeddings)
        latent = torch.randn(CFG_BATCH, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=generator)
        image = torch.rand(1, cfg.image_channels, cfg.image_size, cfg.image_size, generator=generator) * 2 - 1
    from edgesdk.zoo.tiny_sd import LatentMean

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


def eager_session_factory(model: TinySD | None = None) -> Callable[[object, str], EagerSession]:
    """Sessions over the eager PyTorch modules, for the runtime's pipeline: the reference exports must match."""
    specs = {s.name: s for s in tiny_sd_components(model or load_tiny_sd())}

    def factory(_bundle: object, component: str) -> EagerSession:
        spec = specs[component]
        return EagerSession(spec.module, spec.input_names, spec.output_names)

    return factory


def tiny_sd_assets(model: TinySD) -> dict[str, object]:
    cfg = model.config
    return {
        "token_embedding": model.token_embedding.detach().numpy().astype(np.float32),
        "vocabulary": {"tokens": model.vocabulary.tokens, "pad": "<pad>", "bos": "<bos>", "eos": "<eos>",
                       "max_tokens": cfg.max_tokens, "lowercase": True},
        "alphas_cumprod": ddpm_schedule(cfg),
    }


def tiny_sd_metadata(model: TinySD) -> dict:
    cfg = model.config
    return {"image_size": cfg.image_size, "image_channels": cfg.image_channels,
            "latent_channels": cfg.latent_channels, "latent_size": cfg.latent_size, "max_tokens": cfg.max_tokens,
            "text_width": cfg.text_width, "train_timesteps": cfg.train_timesteps, "prediction": "epsilon",
            "guidance_scale": DEFAULT_GUIDANCE, "schedule": "scaled-linear", "beta_start": cfg.beta_start,
            "beta_end": cfg.beta_end}


def export_model(family: str, output: Path, targets: str | list[str] = "executorch,onnx",
                 weights: Path | None = None, overwrite: bool = False, quant: str = "fp32",
                 calibration: Calibration | None = None, log: Log = print, zo_batch: int | None = None,
                 check_quality: bool = True) -> Path:
    """`edgesdk export FAMILY`: the shipped (or given) weights to a verified bundle, quantized per `quant`."""
    if zo_batch is None:
        zo_batch = ZO_BATCH if quant.strip().lower() in PERSONALIZATION_RECIPES else 0
    if zo_batch < 0 or zo_batch > 8:
        raise EdgeSDKError(f"--zo-batch must be between 0 (none) and 8, got {zo_batch}")
    recipe = recipe_from_name(quant, calibration)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    check_targets(recipe, target_list)
    if family != "tiny-sd":
        raise EdgeSDKError(f"unknown model family '{family}'; available: {', '.join(FAMILIES)}")
    if weights is not None and not weights.exists():
        raise EdgeSDKError(f"weights file not found: {weights}")
    model = load_tiny_sd(weights)
    calibration_inputs = None
    if recipe.calibration is not None:
        log(f"recording {recipe.calibration.samples} calibration inputs per component "
            f"({recipe.calibration.trajectory} trajectories)")
        calibration_inputs = tiny_sd_calibration(model, recipe.calibration)
    quality = None
    if recipe.name != "fp32" and check_quality:
        def quality(staging: Path) -> dict:
            return quantized_vs_fp32_accuracy(staging, model, [t for t in target_list if t != "tensorrt"], log)

    return export_bundle(tiny_sd_components(model, zo_batch), family="tiny-sd", model_meta=tiny_sd_metadata(model),
                         assets=tiny_sd_assets(model), targets=target_list, output=output, overwrite=overwrite,
                         recipe=recipe, calibration=calibration_inputs, quality=quality, log=log)


def quantized_vs_fp32_accuracy(bundle_dir: Path, model: TinySD, backends: list[str], log: Log,
                               samples: int = 50, steps: int = 20) -> dict:
    """End-to-end prompt accuracy of the quantized files against the fp32 eager model, same prompts and seeds."""
    from edgesdk.evaluate import prompt_accuracy

    log(f"prompt accuracy, quantized vs fp32 ({samples} samples, {steps} steps)")
    figures = {"samples": samples, "steps": steps, "prompt_accuracy": {}}
    reference, _, _ = prompt_accuracy(bundle_dir, backend="eager", samples=samples, steps=steps,
                                      session_factory=eager_session_factory(model))
    figures["prompt_accuracy"]["fp32_eager"] = reference.accuracy
    for backend in backends:
        report, _, _ = prompt_accuracy(bundle_dir, backend=backend, samples=samples, steps=steps)
        figures["prompt_accuracy"][backend] = report.accuracy
        log(f"  {backend:10s} kind {report.accuracy['kind']:.0%} colour {report.accuracy['colour']:.0%}  "
            f"(fp32 eager: kind {reference.accuracy['kind']:.0%} colour {reference.accuracy['colour']:.0%})")
    return figures
