"""Backpropagation baselines for on-device personalization, in PyTorch on the fp32 eager model.

- ``textual_inversion``: the same token, data, captions, loss and PUTS timesteps as the zeroth-order runtime
  loop, but the exact gradient by autograd and Adam (the first-order upper reference of the spec, §12).
- ``finetune_unet``: every UNet weight trained on the same data and loss, with the initializer word in the
  captions (DreamBooth without prior preservation): the quality and memory yardstick of full fine-tuning.

Both draw their randomness the way the runtime loop does (one numpy generator: image, flip, template, noise,
t), so the three methods see comparable data streams.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from edgesdk.runtime.personalize import TEMPLATES, placeholder_slots
from edgesdk.zoo.tiny_sd import TinySD, ddpm_schedule


def encode_concept(model: TinySD, images: np.ndarray) -> np.ndarray:
    """(2, N, C, h, w): scaled latent means of the images and of their mirror images."""
    from edgesdk.zoo.tiny_sd import LatentMean

    pixels = torch.from_numpy(np.concatenate([images, images[:, :, ::-1]]).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        latents = LatentMean(model.vae.encoder, model.config)(pixels / 127.5 - 1.0).numpy()
    return latents.reshape(2, len(images), *latents.shape[1:])


def _embedder(model: TinySD, token: str, num_vectors: int) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """caption, vectors -> (max_tokens, width) input embeddings with ``vectors`` at the placeholder, differentiable
    in ``vectors``. Tokenized by the runtime's own tokenizer, so both sides read captions identically."""
    from edgesdk.families.tiny_sd import tiny_sd_assets
    from edgesdk.runtime.tokenizer import Tokenizer

    assets = tiny_sd_assets(model)
    tokenizer, table = Tokenizer(assets["vocabulary"]), assets["token_embedding"]

    def embed(caption: str, vectors: torch.Tensor) -> torch.Tensor:
        if not token:
            return torch.from_numpy(tokenizer.embed(caption, table))
        base, slots = placeholder_slots(tokenizer, table, caption, token, num_vectors)
        return torch.from_numpy(base).index_copy(0, torch.from_numpy(slots), vectors)

    return embed


def _draw(rng: np.random.Generator, latents: np.ndarray, templates: tuple[str, ...], t_range: tuple[int, int],
          flip: bool = True) -> tuple[np.ndarray, str, np.ndarray, int]:
    image = int(rng.integers(latents.shape[1]))
    mirrored = bool(flip and rng.random() < 0.5)
    template = templates[int(rng.integers(len(templates)))]
    noise = rng.standard_normal(latents.shape[2:]).astype(np.float32)
    return latents[int(mirrored), image], template, noise, int(rng.integers(*t_range))


def _loss(model: TinySD, z0: np.ndarray, noise: np.ndarray, t: int, embeddings: torch.Tensor) -> torch.Tensor:
    alpha_bar = float(ddpm_schedule(model.config)[t])  # float64, as the runtime's bundle asset
    noisy = torch.from_numpy((np.sqrt(alpha_bar) * z0 + np.sqrt(1 - alpha_bar) * noise).astype(np.float32))
    text = model.text_encoder(embeddings[None])
    predicted = model.unet(noisy[None], torch.tensor([float(t)]), text)
    return ((predicted - torch.from_numpy(noise)[None]) ** 2).mean()


def textual_inversion(model: TinySD, images: np.ndarray, token: str, init_word: str, steps: int, *,
                      lr: float = 5e-3, seed: int = 0, t_range: tuple[int, int] = (500, 900), num_vectors: int = 1,
                      templates: tuple[str, ...] = TEMPLATES,
                      on_step: Callable[[int, float], None] | None = None,
                      on_vectors: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """Learn ``token`` by backprop through the frozen fp32 model; returns (num_vectors, width) float32.
    ``on_vectors(step, vectors)`` sees a copy of the vectors after each step (snapshots of one run)."""
    for p in model.parameters():
        p.requires_grad_(False)
    latents = encode_concept(model, images)
    start = model.token_embedding[model.vocabulary.tokens.index(init_word)].detach()
    vectors = torch.nn.Parameter(start.repeat(num_vectors, 1).clone())
    optimizer = torch.optim.Adam([vectors], lr=lr)
    rng = np.random.default_rng(seed)
    captions = tuple(t.format(token) for t in templates)
    embed = _embedder(model, token, num_vectors)
    for step in range(1, steps + 1):
        z0, caption, noise, t = _draw(rng, latents, captions, t_range)
        loss = _loss(model, z0, noise, t, embed(caption, vectors))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
        if on_vectors is not None:
            on_vectors(step, vectors.detach().numpy().astype(np.float32).copy())
    return vectors.detach().numpy().astype(np.float32)


def finetune_unet(model: TinySD, images: np.ndarray, init_word: str, steps: int, *, lr: float = 1e-4,
                  seed: int = 0, t_range: tuple[int, int] = (500, 900), templates: tuple[str, ...] = TEMPLATES,
                  on_step: Callable[[int, float], None] | None = None) -> TinySD:
    """Train every UNet weight (Adam) so that captions with ``init_word`` render the concept. In place."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.unet.parameters():
        p.requires_grad_(True)
    latents = encode_concept(model, images)
    optimizer = torch.optim.Adam(model.unet.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    captions = tuple(t.format(init_word) for t in templates)
    embed = _embedder(model, "", 0)
    model.unet.train()
    for step in range(1, steps + 1):
        z0, caption, noise, t = _draw(rng, latents, captions, t_range)
        loss = _loss(model, z0, noise, t, embed(caption, torch.empty(0)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.unet.eval()
    return model
