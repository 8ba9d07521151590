"""Export the model families: which components each has, their example inputs, assets and metadata."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgesdk.calibration import onestep_calibration, tiny_sd_calibration
from edgesdk.export.capture import ComponentSpec
from edgesdk.export.parity import EagerSession
from edgesdk.export.pipeline import Log, export_bundle, parse_targets
from edgesdk.quant.binary import BinaryConv2d
from edgesdk.quant.recipes import Calibration, check_targets, recipe_from_name
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.pipeline import initial_noise
from edgesdk.zoo.bnn import BNN, BNNConfig, binary_share, parameter_count
from edgesdk.zoo.onestep import OneStep, default_onestep_path, default_onestep_w4_path, load_onestep
from edgesdk.zoo.tiny_sd import TinySD, TinySDConfig, ddpm_schedule, load_tiny_sd
from edgesdk.zoo.viws import ViWSNet

if TYPE_CHECKING:
    from edgesdk.zoo.diffusers_sd import DiffusersSD

FAMILIES = ("tiny-sd", "onestep", "bnn", "viws")
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
# A one-step generator returns x0 = (z - sigma_T eps) / alpha_T: at the last timestep sigma_T / alpha_T is ~15, so
# its UNet's quantization error reaches the latent ~23 dB louder than a diffusion UNet's eps output, and the recipes'
# floors (set on eps) do not fit it. Measured on the teacher-initialised student, latent SQNR vs fp32 and prompt
# accuracy (50 samples): w8 15.9 dB ONNX / 27.2 dB ExecuTorch and w8a8 11.8-12.4 dB on all three targets, accuracy
# within 2 points of fp32; w4 1.1-1.5 dB, accuracy halved. Quantized onestep bundles hold every component to at
# most this floor (the text encoder and VAE stay above 25 dB). 4-bit weights need a student fine-tuned on the
# 4-bit grid (`edgesdk train onestep-w4`, edgesdk.train.quant_aware), which `--quant w4` exports by default.
ONESTEP_SQNR_FLOOR_DB = 10.0


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


def eager_session_factory(model: TinySD | OneStep | None = None) -> Callable[[object, str], EagerSession]:
    """Sessions over the eager PyTorch modules, for the runtime's pipelines: the reference exports must match."""
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


def onestep_assets(model: OneStep) -> dict[str, object]:
    return text_assets(model)  # no schedule: the generator runs once, at the timestep it was distilled for


def latent_space_metadata(cfg: TinySDConfig) -> dict:
    """Image, latent and prompt sizes: what every tiny-sd-derived runtime pipeline reads."""
    return {"image_size": cfg.image_size, "image_channels": cfg.image_channels,
            "latent_channels": cfg.latent_channels, "latent_size": cfg.latent_size, "max_tokens": cfg.max_tokens,
            "text_width": cfg.text_width, "train_timesteps": cfg.train_timesteps}


def tiny_sd_metadata(model: TinySD) -> dict:
    cfg = model.config
    return {**latent_space_metadata(cfg), "prediction": "epsilon", "guidance_scale": DEFAULT_GUIDANCE,
            "schedule": "scaled-linear", "beta_start": cfg.beta_start, "beta_end": cfg.beta_end}


def onestep_metadata(model: OneStep) -> dict:
    """The teacher's sizes plus the student's own record (divergence, timestep, and whatever else its file says)."""
    student = {k: v for k, v in model.info.items() if k not in ("family", "divergence", "timestep")}
    return {**latent_space_metadata(model.config), "prediction": "sample", "steps": 1,
            "timestep": model.generator.timestep, "divergence": model.info.get("divergence"), "teacher": "tiny-sd",
            "student": student}


def export_model(family: str, output: Path, targets: str | list[str] = "executorch,onnx",
                 weights: Path | None = None, overwrite: bool = False, quant: str | None = None,
                 calibration: Calibration | None = None, log: Log = print, zo_batch: int | None = None,
                 check_quality: bool = True) -> Path:
    """`edgesdk export FAMILY`: the shipped (or given) weights to a verified bundle, quantized per `quant`.

    For onestep, ``weights`` is a distilled student file (default: sdk/weights/onestep.safetensors) over the shipped
    tiny-sd teacher; its bundle carries no personalization methods (``zo_batch`` must be 0 or None)."""
    if family not in FAMILIES:
        raise EdgeSDKError(f"unknown model family '{family}'; available: {', '.join(FAMILIES)}")
    if family == "bnn":
        if zo_batch:
            raise EdgeSDKError(f"--zo-batch {zo_batch}: bnn bundles carry no personalization methods")
        return export_bnn(output, targets, weights, overwrite, quant or "binary", log)
    if family == "viws":
        if zo_batch:
            raise EdgeSDKError(f"--zo-batch {zo_batch}: viws bundles carry no personalization methods")
        return export_viws(output, targets, weights, overwrite, quant or "fp32", calibration, log)
    quant = quant or "fp32"
    if quant.strip().lower() == "binary":
        raise EdgeSDKError(f"recipe 'binary' stores the weights of a network trained binary; {family} is not "
                           "(export family bnn, or choose fp32 | w8a8 | w8 | w4)")
    if family == "onestep":
        if zo_batch:
            raise EdgeSDKError(f"--zo-batch {zo_batch}: onestep bundles carry no personalization methods; drop the "
                               "option (personalize a tiny-sd bundle instead)")
        zo_batch = 0
    elif zo_batch is None:
        zo_batch = ZO_BATCH if quant.strip().lower() in PERSONALIZATION_RECIPES else 0
    if zo_batch < 0 or zo_batch > 8:
        raise EdgeSDKError(f"--zo-batch must be between 0 (none) and 8, got {zo_batch}")
    recipe = recipe_from_name(quant, calibration)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    check_targets(recipe, target_list)
    if weights is not None and not weights.exists():
        raise EdgeSDKError(f"weights file not found: {weights}")
    if family == "onestep":
        if weights is None and not default_onestep_path().exists():
            raise EdgeSDKError(f"no distilled onestep student at {default_onestep_path()} yet; pass one with "
                               "--weights STUDENT.safetensors")
        if recipe.weight_bits == 4 and weights is None:
            weights = default_onestep_w4_path()
            if not weights.exists():
                raise EdgeSDKError(f"--quant w4 exports a quantization-aware student and {weights} is missing; make "
                                   "it with `edgesdk train onestep-w4`")
        model = load_onestep(weights)
        if recipe.weight_bits == 4 and not model.info.get("quant_aware"):
            raise EdgeSDKError(f"{weights or default_onestep_path()} is not quantization-aware: 4-bit weights put a "
                               "one-step student's output near 6 dB SQNR. Fine-tune it first with `edgesdk train "
                               "onestep-w4 --student FILE -o FILE-w4.safetensors` and export that")
        if recipe.name != "fp32":
            recipe = dataclasses.replace(recipe, sqnr_floor_db=min(recipe.sqnr_floor_db, ONESTEP_SQNR_FLOOR_DB))
        specs, meta, assets = onestep_components(model), onestep_metadata(model), onestep_assets(model)
        record, source = onestep_calibration, "noise + prompt, as sampled"
    else:
        model = load_tiny_sd(weights)
        specs, meta, assets = tiny_sd_components(model, zo_batch), tiny_sd_metadata(model), tiny_sd_assets(model)
        record = tiny_sd_calibration
        source = f"{recipe.calibration.trajectory} trajectories" if recipe.calibration else ""
    calibration_inputs = None
    if recipe.calibration is not None:
        log(f"recording {recipe.calibration.samples} calibration inputs per component ({source})")
        calibration_inputs = record(model, recipe.calibration)
    quality = None
    if recipe.name != "fp32" and check_quality:
        def quality(staging: Path) -> dict:
            return quantized_vs_fp32_accuracy(staging, model, [t for t in target_list if t != "tensorrt"], log)

    return export_bundle(specs, family=family, model_meta=meta, assets=assets, targets=target_list, output=output,
                         overwrite=overwrite, recipe=recipe, calibration=calibration_inputs, quality=quality, log=log)


def quantized_vs_fp32_accuracy(bundle_dir: Path, model: TinySD | OneStep, backends: list[str], log: Log,
                               samples: int = 50, steps: int = 20) -> dict:
    """End-to-end prompt accuracy of the quantized files against the fp32 eager model, same prompts and seeds.
    A onestep model is sampled in its one generator evaluation (``steps`` does not apply)."""
    from edgesdk.evaluate import prompt_accuracy

    if isinstance(model, OneStep):
        steps = 1
    log(f"prompt accuracy, quantized vs fp32 ({samples} samples, {steps} step{'s' if steps > 1 else ''})")
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


# ------------------------------------------------------------------------------------------------------ bnn

BNN_RECIPES = ("binary", "fp32")


def bnn_example_images(config: BNNConfig, count: int = 8) -> torch.Tensor:
    """Real test images of the network's dataset, normalised: parity on realistic batch-norm inputs."""
    from edgesdk.data.classification import load_classification, normalise

    dataset = "digits" if config.in_channels == 1 else "shapes"
    split = load_classification(dataset, shapes_train=0, shapes_test=count)
    return torch.from_numpy(normalise(split.test_images[:count], config.mean, config.std))


def bnn_metadata(model: BNN) -> dict:
    cfg, info = model.config, getattr(model, "info", {})
    layers = [{"name": name, "shape": list(m.weight.shape), "alpha": float(m.weight.detach().abs().mean()),
               "zero_weights": int((m.weight == 0).sum())}
              for name, m in model.named_modules() if isinstance(m, BinaryConv2d)]
    return {"task": "classify", "classes": list(cfg.classes), "image_size": cfg.image_size,
            "channels": cfg.in_channels, "mean": list(cfg.mean), "std": list(cfg.std), "estimator": cfg.estimator,
            "binary_activations": cfg.binary_activations, "dataset": info.get("dataset"),
            "test_accuracy": info.get("test_accuracy"), "parameters": parameter_count(model),
            "binary_share": binary_share(model), "alpha_folded_into_batch_norm": True, "binary_layers": layers}


def export_bnn(output: Path, targets: str | list[str], weights: Path | None, overwrite: bool, quant: str,
               log: Log) -> Path:
    """`edgesdk export bnn`: a trained binary network, alpha folded into its batch norms and its +-1 weights
    stored one bit each (recipe ``binary``; ``fp32`` keeps them as float32, for comparison)."""
    from edgesdk.zoo.bnn import default_bnn_path, folded_for_inference, load_bnn

    if quant.strip().lower() not in BNN_RECIPES:
        raise EdgeSDKError(f"a bnn bundle takes --quant {' or '.join(BNN_RECIPES)}, not '{quant}'")
    recipe = recipe_from_name(quant)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    check_targets(recipe, target_list)
    path = weights or default_bnn_path("digits")
    model = load_bnn(path)
    if model.config.estimator == "fp":
        raise EdgeSDKError(f"{path} is a full-precision twin (estimator fp), not a binary network")
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, BinaryConv2d))
    if zeros:  # sign(0) = 0 in training; the +-1 file stores +1 (spec §8)
        log(f"note: {zeros} binary weight(s) are exactly 0 and are stored as +1")
    folded = folded_for_inference(model)
    spec = ComponentSpec("classifier", folded, (bnn_example_images(model.config)[:1],), ["image"], ["logits"],
                         static_batch=1, max_batch=256)
    return export_bundle([spec], family="bnn", model_meta=bnn_metadata(model), assets={}, targets=target_list,
                         output=output, overwrite=overwrite, recipe=recipe, log=log)


# ------------------------------------------------------------------------------------------------------ viws

VIWS_RECIPES = ("fp32", "w8", "w8a8")
VIWS_TILE_OVERLAP = 16  # px; the runtime blends overlapping tiles linearly (the reference uses 16 px at 512)


def viws_example_clips(model: ViWSNet, count: int, split: str = "test", seed: int = 0) -> list[torch.Tensor]:
    """Real degraded windows (1, T, 3, H, W) of every weather, cycled: parity and calibration on the inputs the
    network meets (random noise would leave activation ranges and attention patterns unlike real frames)."""
    from edgesdk.data.weather import make_clip_set

    cfg = model.config
    clips = make_clip_set(split, -(-count // 3), frames=cfg.frames, size=cfg.image_size, seed=seed)[:count]
    return [torch.from_numpy(c.degraded).permute(0, 3, 1, 2).unsqueeze(0).contiguous() for c in clips]


def viws_metadata(model: ViWSNet) -> dict:
    from edgesdk.zoo.viws import WEATHERS, inference_parameter_count

    cfg, info = model.config, getattr(model, "info", {})
    return {"task": "restore", "frames": cfg.frames, "tile": cfg.image_size, "tile_overlap": VIWS_TILE_OVERLAP,
            "weathers": list(WEATHERS), "centre_frame_only": True, "edge_frames": "replicated",
            "stitching": "linear blend in tile overlaps", "parameters": inference_parameter_count(model),
            "variant": info.get("variant"), "config": json.loads(cfg.to_json()),
            "train_steps": (info.get("train_config") or {}).get("steps")}


def export_viws(output: Path, targets: str | list[str], weights: Path | None, overwrite: bool, quant: str,
                calibration: Calibration | None, log: Log) -> Path:
    """`edgesdk export viws`: the restorer over one tile (static T x tile x tile; the runtime tiles larger frames and
    slides the window over a video). Weather discriminator left out; tail as stacked Conv2d."""
    from edgesdk.zoo.viws import default_viws_path, load_viws

    if quant.strip().lower() not in VIWS_RECIPES:
        raise EdgeSDKError(f"a viws bundle takes --quant {' | '.join(VIWS_RECIPES)}, not '{quant}'")
    recipe = recipe_from_name(quant, calibration)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    check_targets(recipe, target_list)
    path = weights or default_viws_path()
    if not path.exists():
        raise EdgeSDKError(f"weights file not found: {path} (train one with `edgesdk train viws`)")
    model = load_viws(path)
    inference = model.inference_copy()
    examples = viws_example_clips(model, 3)
    spec = ComponentSpec("restorer", inference, (examples[0],), ["frames"], ["restored"], static_batch=1,
                         max_batch=8)
    calibration_inputs = None
    if recipe.calibration is not None:
        log(f"recording {recipe.calibration.samples} calibration windows (training clips, every weather)")
        windows = viws_example_clips(model, recipe.calibration.samples, split="train", seed=recipe.calibration.seed)
        calibration_inputs = {"restorer": [(x,) for x in windows]}
    return export_bundle([spec], family="viws", model_meta=viws_metadata(model), assets={}, targets=target_list,
                         output=output, overwrite=overwrite, recipe=recipe, calibration=calibration_inputs, log=log)


# ------------------------------------------------------------------------------------------------ diffusers

DIFFUSERS_RECIPES = ("fp32", "w8")
DIFFUSERS_GUIDANCE = 7.5  # the guidance scale SD-1.x/2.x pipelines default to


def diffusers_components(model: DiffusersSD, zo_batch: int = ZO_BATCH) -> list[ComponentSpec]:
    """The four components tiny-sd has, with the same names, inputs and outputs (the runtime tells no difference).
    Example inputs: a real prompt through the folder's own tokenizer, mid-schedule noise."""
    from edgesdk.runtime.clip_tokenizer import ClipTokenizer

    extra = (zo_batch,) if zo_batch and zo_batch != CFG_BATCH else ()
    tokenizer = ClipTokenizer(model.tokenizer)
    table = model.token_embedding
    embeddings = torch.from_numpy(np.stack([table[tokenizer.unconditional_ids()],
                                            tokenizer.embed("a photo of a red star", table)]))
    generator = torch.Generator().manual_seed(0)
    shape = (model.latent_channels, model.latent_size, model.latent_size)
    with torch.no_grad():
        text = model.text_encoder(embeddings)
        latent = torch.randn(CFG_BATCH, *shape, generator=generator)
        image = torch.rand(1, 3, model.image_size, model.image_size, generator=generator) * 2 - 1
    return [
        ComponentSpec("text_encoder", model.text_encoder, (embeddings,), ["input_embeddings"], ["text"],
                      static_batch=CFG_BATCH, extra_batches=extra),
        ComponentSpec("unet", model.unet, (latent, torch.tensor([500.0, 500.0]), text), ["latent", "timestep", "text"],
                      ["noise"], static_batch=CFG_BATCH, extra_batches=extra),
        ComponentSpec("vae_decoder", model.vae_decoder, (latent[:1].contiguous(),), ["latent"], ["image"],
                      static_batch=1),
        ComponentSpec("vae_encoder", model.vae_encoder, (image,), ["image"], ["latent"], static_batch=1),
    ]


def export_diffusers(folder: Path, output: Path, targets: str | list[str] = "executorch,onnx", quant: str = "fp32",
                     image_size: int | None = None, overwrite: bool = False, zo_batch: int | None = None,
                     log: Log = print) -> Path:
    """`edgesdk export --from-diffusers FOLDER`: a SD-1.x/2.x diffusers folder to a text-to-image bundle that
    `edgesdk sample` and `edgesdk personalize` run as they run tiny-sd. Recipes: fp32, w8 (int8 weights, the
    personalization regime). ``image_size``: the resolution the graphs are fixed at (default: the UNet's own)."""
    from edgesdk.zoo.diffusers_sd import PIECE_BYTES, load_diffusers_sd, require_diffusers

    quant = (quant or "fp32").strip().lower()
    if quant not in DIFFUSERS_RECIPES:
        raise EdgeSDKError(f"a diffusers import takes --quant {' | '.join(DIFFUSERS_RECIPES)}, not '{quant}' "
                           "(static int8 needs calibration trajectories edgesdk records for tiny-sd only)")
    recipe = recipe_from_name(quant)
    if recipe.name == "w8":  # int8 convolutions on ExecuTorch too: they are three quarters of a SD UNet's weights
        # (except the few high-resolution ones whose im2col would dwarf their weights: the VAE's, at 512 px the
        # UNet's widest first-level ones)
        recipe = dataclasses.replace(recipe, convolutions_as_linear=True, im2col_limit_bytes=PIECE_BYTES)
    target_list = parse_targets(targets) if targets else list(recipe.targets)
    check_targets(recipe, target_list)
    zo_batch = ZO_BATCH if zo_batch is None else zo_batch
    if zo_batch < 0 or zo_batch > 8:
        raise EdgeSDKError(f"--zo-batch must be between 0 (none) and 8, got {zo_batch}")
    require_diffusers()
    log(f"loading the diffusers pipeline in {folder}")
    model = load_diffusers_sd(Path(folder), image_size)
    assets = {"token_embedding": model.token_embedding, "clip_tokenizer": model.tokenizer,
              "alphas_cumprod": model.alphas_cumprod}
    return export_bundle(diffusers_components(model, zo_batch), family="stable-diffusion",
                         model_meta=model.metadata(DIFFUSERS_GUIDANCE), assets=assets, targets=target_list,
                         output=output, overwrite=overwrite, recipe=recipe, log=log)
