"""One-step text-to-image over a `onestep` bundle: tokenizer -> text_encoder -> generator -> vae_decoder.

The generator maps noise and the encoded prompt to a clean latent in one evaluation: no sampler, no
schedule, no classifier-free guidance. Noise, prompt checks, sessions and timings are `TextToImage`'s
(`edgesdk.runtime.pipeline`), so a prompt and seed give the same noise on either pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.pipeline import (
    ComponentFactory,
    ComponentPipeline,
    check_prompts_and_seed,
    initial_noise,
    to_uint8,
)

FAMILY = "onestep"
COMPONENTS = ("text_encoder", "generator", "vae_decoder")


class OneStepTextToImage(ComponentPipeline):
    def __init__(self, bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None,
                 session_factory: ComponentFactory | None = None, lean_memory: bool = False) -> None:
        super().__init__(bundle, backend, threads, session_factory, lean_memory)
        if self.bundle.family != FAMILY:
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r} is a {self.bundle.family or 'unnamed'!r} bundle, "
                               "not a one-step generator (family onestep); sample it with TextToImage")

    sample_components = COMPONENTS

    def sample(self, prompts: list[str] | str, seed: int = 0, learned: dict[str, np.ndarray] | None = None,
               steps: int | None = None, sampler: str | None = None,
               guidance_scale: float | None = None) -> np.ndarray:
        """``generate``; sampler options are refused, never silently ignored."""
        self.check_sampling(steps, sampler, guidance_scale)
        return self.generate(prompts, seed=seed, learned=learned)

    def check_sampling(self, steps: int | None = None, sampler: str | None = None,
                       guidance_scale: float | None = None) -> None:
        given = [f"--{name} {value}" for name, value in (("steps", steps), ("sampler", sampler),
                                                         ("guidance", guidance_scale)) if value is not None]
        if given:
            them = "it" if len(given) == 1 else "them"
            raise EdgeSDKError(f"{', '.join(given)}: a one-step bundle (family onestep) samples in one generator "
                               f"evaluation, with no steps, sampler or guidance; drop {them}")

    def sampling(self, steps: int | None = None, sampler: str | None = None) -> dict[str, int | str]:
        return {"steps": 1, "sampler": "onestep"}

    def generate(self, prompts: list[str] | str, seed: int = 0, learned: dict[str, np.ndarray] | None = None,
                 return_float: bool = False) -> np.ndarray:
        """uint8 images (B, H, W, 3), one per prompt, from one generator evaluation each. `learned` maps
        `<placeholder>` words to (k, width) vectors. With `return_float`, the decoder's float32 (B, 3, H, W)."""
        prompts = check_prompts_and_seed(prompts, seed)
        self.timings = {}
        embeddings = self.embed_prompts(prompts, learned)  # a typo fails before any network runs
        text = self.run_component("text_encoder", embeddings)
        noise = initial_noise(seed, len(prompts), self.latent_shape)
        latents = self.run_component("generator", noise, text)
        images = self.run_component("vae_decoder", latents.astype(np.float32))
        return images if return_float else to_uint8(images)
