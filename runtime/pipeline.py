"""Text-to-image over a bundle: tokenizer -> text_encoder -> sampler(unet) -> vae_decoder.

Sessions open lazily (a phone app that only encodes images never loads the UNet). Noise for image i comes
from its own generator seeded `seed + i`, so an image depends only on its prompt and seed, never on what
else is in the batch. `ComponentPipeline` holds what every bundle pipeline shares (sessions, timings,
tokenizer, noise); `TextToImage` adds the sampler loop, `edgesdk.runtime.onestep` a one-step generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgesdk.runtime.backends import Session, open_session, verify_model_files
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.limits import MAX_GUIDANCE, MAX_SEED, check_finite, check_threads
from edgesdk.runtime.samplers import SAMPLERS
from edgesdk.runtime.tokenizer import Tokenizer

# session_factory(bundle, component_name) -> Session; replaces the backend registry (tests, parity references)
ComponentFactory = Callable[[Bundle, str], Session]


def initial_noise(seed: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 (count, *shape) standard normal noise; row i from its own generator seeded ``seed + i``.

    The one noise convention of every sampler here (and of the eager references they are checked against)."""
    return np.stack([np.random.default_rng(seed + i).standard_normal(shape).astype(np.float32)
                     for i in range(count)])


def check_prompts_and_seed(prompts: list[str] | str, seed: int) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise EdgeSDKError("no prompts given; pass at least one prompt")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise EdgeSDKError(f"seed must be a non-negative integer, got {seed!r}")
    if seed > MAX_SEED:
        raise EdgeSDKError(f"seed {seed} is above the limit of 2^53 ({MAX_SEED:,})")
    return prompts


class ComponentPipeline:
    """Lazily opened, timed sessions over a bundle's components, plus its tokenizer and token table."""

    def __init__(self, bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None,
                 session_factory: ComponentFactory | None = None, lean_memory: bool = False) -> None:
        self.threads = check_threads(threads)
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.backend = backend
        self.lean_memory = lean_memory
        self._factory = session_factory
        self._sessions: dict[str, Session] = {}
        if session_factory is None:
            verify_model_files(self.bundle, backend)  # all of them, before the first session loads an engine
        model = self.bundle.model
        if "latent_channels" not in model:
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r} is a {self.bundle.family or 'unnamed'!r} bundle, not "
                               "a text-to-image model" + (" (classify images with `edgesdk classify`)"
                                                          if model.get("task") == "classify" else ""))
        self.latent_channels = int(model["latent_channels"])
        self.latent_size = int(model["latent_size"])
        self.tokenizer = Tokenizer.from_bundle(self.bundle)
        # mapped, not loaded: lookups touch a few rows of a table that is 152 MB for SD-1.5 (float32 as exported;
        # asarray copies only a table of another dtype)
        self.token_table = np.asarray(self.bundle.asset_array("token_embedding", mapped=True), dtype=np.float32)
        # per component {"seconds": total, "calls": n} for the last generate()/encode_images()
        self.timings: dict[str, dict[str, float]] = {}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def session(self, component: str) -> Session:
        if component not in self._sessions:
            if self._factory is not None:
                self._sessions[component] = self._factory(self.bundle, component)
            else:
                self._sessions[component] = open_session(self.bundle, component, self.backend, self.threads,
                                                            self.lean_memory, verified=True)
        return self._sessions[component]

    def close_component(self, component: str) -> None:
        """Drop a component's session (its weights and buffers); it reopens if it is needed again."""
        self._sessions.pop(component, None)  # sessions free their memory when the last reference goes

    def run_component(self, component: str, *arrays: np.ndarray) -> np.ndarray:
        """Positional inputs in the component's input order; returns its first output. Timed."""
        session = self.session(component)
        start = time.perf_counter()
        outputs = session.run(dict(zip(session.input_names, arrays, strict=True)))
        entry = self.timings.setdefault(component, {"seconds": 0.0, "calls": 0})
        entry["seconds"] += time.perf_counter() - start
        entry["calls"] += 1
        return outputs[session.output_names[0]]

    def embed_prompts(self, prompts: list[str], learned: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(B, max_tokens, width) input embeddings; every prompt is checked before any network runs."""
        return np.stack([self.tokenizer.embed(p, self.token_table, learned) for p in prompts])

    # what a text-to-image task offers the CLI and apps alike: the components one sample runs, and one sampling call
    # whose sampler options a task without a sampler refuses (None: the task's default)
    sample_components: tuple[str, ...] = ()

    def sample(self, prompts: list[str] | str, seed: int = 0, learned: dict[str, np.ndarray] | None = None,
               steps: int | None = None, sampler: str | None = None,
               guidance_scale: float | None = None) -> np.ndarray:
        raise NotImplementedError

    def check_sampling(self, steps: int | None = None, sampler: str | None = None,
                       guidance_scale: float | None = None) -> None:
        """Refuse sampler options this task does not take, before any work (``sample`` calls it too)."""

    def sampling(self, steps: int | None = None, sampler: str | None = None) -> dict[str, int | str]:
        """How ``sample`` makes an image with these options: {"steps": network evaluations, "sampler": name}."""
        raise NotImplementedError

    def describe(self, steps: int | None = None, sampler: str | None = None) -> str:
        """``sampling`` in words, for reports ("ddim 25 steps", "one step")."""
        how = self.sampling(steps, sampler)
        return "one step" if how["sampler"] == "onestep" else f"{how['sampler']} {how['steps']} steps"


DEFAULT_STEPS = 25
DEFAULT_SAMPLER = "ddim"


class TextToImage(ComponentPipeline):
    """A diffusion bundle (tiny-sd): prompts -> text encoder -> `steps` UNet evaluations (CFG) -> VAE decoder."""

    sample_components = ("text_encoder", "unet", "vae_decoder")

    def __init__(self, bundle: Bundle | str | Path, backend: str = "onnx", threads: int | None = None,
                 session_factory: ComponentFactory | None = None, lean_memory: bool = False) -> None:
        super().__init__(bundle, backend, threads, session_factory, lean_memory)
        if self.bundle.family == "onestep":
            raise EdgeSDKError(f"bundle {self.bundle.root.name!r} is a one-step generator (family onestep): "
                               "sample it with edgesdk.runtime.OneStepTextToImage")
        self.default_guidance = float(self.bundle.model.get("guidance_scale", 1.0))
        self.alphas_cumprod = self.bundle.asset_array("alphas_cumprod").astype(np.float64)

    def generate(self, prompts: list[str] | str, steps: int = 25, seed: int = 0, guidance_scale: float | None = None,
                 sampler: str = "ddim", learned: dict[str, np.ndarray] | None = None,
                 return_float: bool = False) -> np.ndarray:
        """uint8 images (B, H, W, 3), one per prompt. `learned` maps `<placeholder>` words to (k, width) vectors.

        With `return_float`, the decoder's raw output instead: float32 (B, 3, H, W) in [-1, 1] (parity checks).
        """
        prompts = check_prompts_and_seed(prompts, seed)
        if not isinstance(steps, int | np.integer) or steps <= 0:
            raise EdgeSDKError(f"steps must be a positive integer, got {steps!r}")
        if sampler not in SAMPLERS:
            raise EdgeSDKError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        guidance = check_finite("guidance", self.default_guidance if guidance_scale is None else guidance_scale,
                                low=0.0, high=MAX_GUIDANCE)
        self.timings = {}
        # tokenize everything before any network runs, so a typo fails fast
        cond_embeddings = self.embed_prompts(prompts, learned)
        count = len(prompts)
        use_cfg = guidance != 1.0  # at scale 1 the unconditional branch cancels out: skip half the UNet work
        if use_cfg:
            uncond_ids = self.tokenizer.unconditional_ids()
            embeddings = np.concatenate([self.token_table[uncond_ids][None], cond_embeddings])
            text = self.run_component("text_encoder", embeddings)  # uncond encoded once, in the same call
            text = np.concatenate([np.repeat(text[:1], count, axis=0), text[1:]])  # uncond rows, then cond rows
        else:
            text = self.run_component("text_encoder", cond_embeddings)

        def denoise(x: np.ndarray, t: float) -> np.ndarray:
            latent = np.concatenate([x, x]) if use_cfg else x
            timestep = np.full(len(latent), t, dtype=np.float32)
            eps = self.run_component("unet", latent.astype(np.float32), timestep, text)
            if not use_cfg:
                return eps
            eps_uncond, eps_cond = eps[:count], eps[count:]
            return eps_uncond + guidance * (eps_cond - eps_uncond)

        noise = initial_noise(seed, count, self.latent_shape)
        latents = SAMPLERS[sampler](denoise, noise, self.alphas_cumprod, steps)
        images = self.run_component("vae_decoder", latents.astype(np.float32))
        return images if return_float else to_uint8(images)

    def sample(self, prompts: list[str] | str, seed: int = 0, learned: dict[str, np.ndarray] | None = None,
               steps: int | None = None, sampler: str | None = None,
               guidance_scale: float | None = None) -> np.ndarray:
        return self.generate(prompts, steps=DEFAULT_STEPS if steps is None else steps, seed=seed,
                             guidance_scale=guidance_scale, sampler=sampler or DEFAULT_SAMPLER, learned=learned)

    def sampling(self, steps: int | None = None, sampler: str | None = None) -> dict[str, int | str]:
        return {"steps": DEFAULT_STEPS if steps is None else steps, "sampler": sampler or DEFAULT_SAMPLER}

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> scaled latents (B, C, h, w) via the bundle's vae_encoder."""
        images = np.asarray(images)
        size = int(self.bundle.model.get("image_size", images.shape[1] if images.ndim == 4 else 0))
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise EdgeSDKError(f"expected uint8 images of shape (B, {size}, {size}, 3), "
                               f"got {images.dtype} {images.shape}; resize them first")
        pixels = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        self.timings = {}
        return self.run_component("vae_encoder", pixels)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Decoder output (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    pixels = np.clip(np.round((np.asarray(images, dtype=np.float32) + 1.0) * 127.5), 0, 255)
    return np.ascontiguousarray(pixels.astype(np.uint8).transpose(0, 2, 3, 1))
