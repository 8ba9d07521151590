"""stable-diffusion: a local SD-1.x/2.x diffusers folder (edgesdk.zoo.diffusers_sd) to a text-to-image bundle that
the runtime samples and personalizes as it does tiny-sd (`edgesdk export --from-diffusers FOLDER`)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from edgesdk.export.capture import ComponentSpec
from edgesdk.families import ZO_BATCH, ExportOptions, Family, Log
from edgesdk.families.tiny_sd import CFG_BATCH, check_zo_batch
from edgesdk.quant.configs import QuantConfig, W8Config
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.diffusers_sd import DiffusersSD

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


class StableDiffusionFamily(Family):
    """Recipes fp32 and w8 (int8 weights, the personalization regime); ``--weights`` (``--from-diffusers``) is the
    folder; ``image_size`` the resolution the graphs are fixed at (default: the UNet's own)."""

    name: ClassVar[str] = "stable-diffusion"
    runtime_task: ClassVar[str] = "text-to-image"
    recipe_names: ClassVar[tuple[str, ...]] = ("fp32", "w8")
    options: ClassVar[frozenset[str]] = frozenset({"zo_batch", "image_size"})

    def why_not_recipe(self, name: str) -> str:
        if name == "w8a8":
            return " (static int8 needs calibration trajectories edgesdk records for tiny-sd only)"
        return super().why_not_recipe(name)

    def variant(self, config: QuantConfig) -> QuantConfig:
        if isinstance(config, W8Config):
            from edgesdk.zoo.diffusers_sd import PIECE_BYTES

            # int8 convolutions on ExecuTorch too: they are three quarters of a SD UNet's weights (except the few
            # high-resolution ones whose im2col would dwarf their weights: the VAE's, at 512 px the UNet's widest
            # first-level ones)
            return W8Config(sqnr_floor_db=config.sqnr_floor_db, convolutions_as_linear=True,
                            im2col_limit_bytes=PIECE_BYTES)
        return config

    def check_options(self, options: ExportOptions, config: QuantConfig) -> ExportOptions:
        if options.weights is None:
            raise EdgeSDKError("stable-diffusion exports a local diffusers folder: pass it with --from-diffusers "
                               "FOLDER")
        zo_batch = check_zo_batch(ZO_BATCH if options.zo_batch is None else options.zo_batch)
        return ExportOptions(options.weights, zo_batch, options.image_size, options.calibration)

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> DiffusersSD:
        from edgesdk.zoo.diffusers_sd import load_diffusers_sd, require_diffusers

        require_diffusers()
        log(f"loading the diffusers pipeline in {options.weights}")
        return load_diffusers_sd(options.weights, options.image_size)

    def components(self, model: DiffusersSD, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        return diffusers_components(model, options.zo_batch or 0)

    def assets(self, model: DiffusersSD) -> dict[str, object]:
        return {"token_embedding": model.token_embedding, "clip_tokenizer": model.tokenizer,
                "alphas_cumprod": model.alphas_cumprod}

    def metadata(self, model: DiffusersSD) -> dict:
        return model.metadata(DIFFUSERS_GUIDANCE)
