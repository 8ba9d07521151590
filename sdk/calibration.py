"""Calibration inputs for tiny-sd's and onestep's components, per `edgesdk.quant.Calibration`.

"sampling" records the UNet's real inputs along DDIM trajectories (classifier-free guidance pairs, every
timestep of the schedule the sampler visits, many prompts); "uniform-t" noises encoded training-style images
to uniformly random t. Both give every component a list of input tuples at its static batch. A one-step
generator has a single "trajectory": the noise and prompt encoding it is sampled from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from edgesdk.data import ShapesDataset
from edgesdk.evaluate import evaluation_prompts
from edgesdk.quant.configs import Calibration
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.pipeline import initial_noise
from edgesdk.runtime.samplers import sample_ddim
from edgesdk.zoo.onestep import OneStep
from edgesdk.zoo.tiny_sd import TinySD


def _evenly(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


@torch.no_grad()
def tiny_sd_calibration(model: TinySD, cal: Calibration) -> dict[str, list[tuple[Tensor, ...]]]:
    cfg = model.config
    prompts = evaluation_prompts(cal.prompts, seed=cal.seed)
    embeddings = [model.token_embedding[model.token_ids(["", p])] for p in prompts]  # CFG pairs
    texts = [model.text_encoder(e) for e in embeddings]
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    rng = np.random.default_rng(cal.seed)
    images = torch.from_numpy(ShapesDataset.generate(cal.samples, seed=cal.seed).images)

    unet_inputs: list[tuple[Tensor, ...]] = []
    decoder_inputs: list[tuple[Tensor, ...]] = []
    if cal.trajectory == "sampling":
        abar = model.alphas_cumprod.double().numpy()
        for text in texts:
            def denoise(x: np.ndarray, t: float, text: Tensor = text) -> np.ndarray:
                latent = torch.from_numpy(np.concatenate([x, x])).float()
                timestep = torch.full((2,), float(t))
                unet_inputs.append((latent, timestep, text))
                eps = model.unet(latent, timestep, text).numpy()
                return eps[:1] + cal.guidance * (eps[1:] - eps[:1])

            final = sample_ddim(denoise, rng.standard_normal((1, *shape)).astype(np.float32), abar, cal.steps)
            decoder_inputs.append((torch.from_numpy(final).float(),))
    else:
        latents = model.vae.encoder(images)[:, : cfg.latent_channels] * cfg.latent_scale
        for i in range(cal.samples):
            t = int(rng.integers(0, cfg.train_timesteps))
            a = float(model.alphas_cumprod[t])
            z0 = latents[i % len(latents)].unsqueeze(0)
            noisy = a**0.5 * z0 + (1 - a) ** 0.5 * torch.from_numpy(rng.standard_normal((1, *shape)).astype(np.float32))
            unet_inputs.append((torch.cat([noisy, noisy]), torch.full((2,), float(t)), texts[i % len(texts)]))
            decoder_inputs.append((z0,))
    return {
        "text_encoder": [(e,) for e in _evenly(embeddings, cal.samples)],
        "unet": _evenly(unet_inputs, cal.samples),
        "vae_decoder": _evenly(decoder_inputs, cal.samples),
        "vae_encoder": [(images[i : i + 1],) for i in range(len(images))],
    }


@torch.no_grad()
def onestep_calibration(model: OneStep, cal: Calibration) -> dict[str, list[tuple[Tensor, ...]]]:
    """What the one-step sampler really feeds each component, one prompt and one noise draw per sample (drawn
    as the runtime draws them): a prompt's embeddings, (noise, its encoding), and the latent made of them."""
    if cal.trajectory != "sampling":
        raise EdgeSDKError(f"calibration trajectory '{cal.trajectory}' does not apply to a one-step generator "
                           "(its only inputs are pure noise and a prompt); use sampling")
    cfg = model.config
    prompts = evaluation_prompts(cal.samples, seed=cal.seed)
    embeddings = model.token_embedding[model.token_ids(prompts)]
    texts = model.text_encoder(embeddings)
    noise = torch.from_numpy(initial_noise(cal.seed, cal.samples, (cfg.latent_channels, cfg.latent_size,
                                                                   cfg.latent_size)))
    latents = model.generator(noise, texts)
    rows = range(cal.samples)
    return {
        "text_encoder": [(embeddings[i : i + 1],) for i in rows],
        "generator": [(noise[i : i + 1], texts[i : i + 1]) for i in rows],
        "vae_decoder": [(latents[i : i + 1],) for i in rows],
    }
