"""On-device personalization: learn a new word from a few private images with forward passes only.

The loss of one zeroth-order step runs through the bundle's exported text encoder (input embeddings with the
learned vectors spliced in at the placeholder) and UNet, the n+1 queries of a step as one batch or, to keep the
activation peak of a large model down, in chunks of ``query_batch`` rows; the images are encoded once, one at a
time, by the exported VAE encoder, their latents cached and the encoder's session closed. The optimizer (RGE,
ZO-Adam, Subspace Gradient, PUTS) is in ``edgesdk.runtime.zo``. numpy only: no torch here, nothing leaves the
device, and the images are read in place and never copied anywhere.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file
from edgesdk.runtime.image import center_crop, read_picture
from edgesdk.runtime.limits import (
    MAX_ARRAY_FILE_BYTES,
    MAX_DIRECTIONS,
    MAX_DRAWS,
    MAX_IMAGES,
    MAX_STEPS,
    MAX_TIME_BUDGET_S,
    MAX_VECTORS,
    check_allocation,
    check_count,
    check_finite,
    check_finite_array,
    check_input_file,
    check_output,
    check_threads,
)
from edgesdk.runtime.pipeline import ComponentFactory, TextToImage
from edgesdk.runtime.tokenizer import Tokenizer
from edgesdk.runtime.zo import StepLog, ZOConfig, ZOTrainer, word_direction_basis

# Textual-Inversion-style caption templates in the words of the model's vocabulary; "{}" is the placeholder.
# tiny-sd knows only its shape phrases; a Stable Diffusion (CLIP) bundle is trained on photo captions.
TEMPLATES: tuple[str, ...] = ("a {}", "a {} in the center", "a large {}", "a small {}", "the {}")
PHOTO_TEMPLATES: tuple[str, ...] = ("a photo of a {}", "a photo of the {}", "a close-up photo of a {}",
                                   "a cropped photo of the {}", "a good photo of a {}", "a bright photo of the {}",
                                   "a rendering of a {}", "a photo of one {}")


def default_templates(tokenizer: object) -> tuple[str, ...]:
    """The caption templates of a bundle's language: photo captions for CLIP bundles, shape phrases for tiny-sd."""
    from edgesdk.runtime.clip_tokenizer import ClipTokenizer

    return PHOTO_TEMPLATES if isinstance(tokenizer, ClipTokenizer) else TEMPLATES


def load_concept_images(folder: Path, size: int, notes: list[str] | None = None) -> tuple[np.ndarray, list[Path]]:
    """uint8 (N, size, size, 3): every decodable image in ``folder``, resized (short side) and center-cropped.

    Hidden files are ignored; other files that do not decode are skipped with a warning; none usable is an
    error. The files are only read. ``notes``, when given, receives one line per skipped file (else a warning)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeSDKError(f"--images {str(folder)!r} is not a folder of images")
    images, used = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            continue
        if len(images) >= MAX_IMAGES:
            raise EdgeSDKError(f"--images {str(folder)!r} holds more than {MAX_IMAGES} images, the limit; use a few "
                               "images of the concept")
        try:
            picture = read_picture(path).convert("RGB")
        except EdgeSDKError as exc:  # one bad file never sinks the good images beside it
            if notes is None:
                warnings.warn(f"skipping {path.name}: {exc}", stacklevel=2)
            else:
                notes.append(f"skipped {path.name}: {exc}")
            continue
        images.append(center_crop(picture, size))
        used.append(path)
    if not images:
        raise EdgeSDKError(f"no usable images in {str(folder)!r} (every file that PIL decodes is used)")
    return np.stack(images), used


def placeholder_slots(tokenizer: Tokenizer, table: np.ndarray, caption: str, token: str,
                      num_vectors: int) -> tuple[np.ndarray, np.ndarray]:
    """The caption's input embeddings with zeros where ``token``'s vectors go, and the indices of those rows."""
    marker = np.full((num_vectors, table.shape[1]), np.nan, np.float32)
    spliced = tokenizer.embed(caption, table, {token: marker})
    return np.nan_to_num(spliced, nan=0.0), np.flatnonzero(np.isnan(spliced[:, 0]))


@dataclass
class Draw:
    """What the n+1 queries of one step share (common random numbers)."""

    image: int
    flip: bool
    caption: str
    noise: np.ndarray  # (C, h, w) float32
    timestep: int


class TokenLoss:
    """L(θ) = mean((ε̂(z_t, t, TextEnc(caption; θ)) − ε)²) on the exported components, batched over θ rows.

    θ is the concatenation of the placeholder's ``num_vectors`` embedding rows (so every vector is trained)."""

    def __init__(self, pipe: TextToImage, images: np.ndarray, token: str, num_vectors: int = 1,
                 templates: tuple[str, ...] | None = None, captions: list[str] | None = None, flip: bool = True,
                 query_batch: int | None = None) -> None:
        """``templates``: captions with "{}" (or the token itself) where the token goes, one drawn per step; default
        the bundle's language (``default_templates``). ``captions``: one per image instead."""
        if not (token.startswith("<") and token.endswith(">")) or len(token) < 3 or " " in token:
            raise EdgeSDKError(f"token {token!r} must look like <word> (angle brackets, no spaces)")
        # a word-level vocabulary would read <star> and star alike; CLIP bundles tell them apart by the brackets
        if isinstance(pipe.tokenizer, Tokenizer) and token.lower().strip("<>") in pipe.tokenizer.index:
            raise EdgeSDKError(f"token {token!r} names a word the model already knows; pick a new word")
        if num_vectors < 1:
            raise EdgeSDKError(f"num_vectors must be at least 1, got {num_vectors}")
        if query_batch is not None and query_batch < 1:
            raise EdgeSDKError(f"--query-batch must be at least 1 (or unset: all n+1 queries at once), "
                               f"got {query_batch}")
        self.query_batch = query_batch
        self.pipe, self.token, self.num_vectors, self.flip = pipe, token.lower(), num_vectors, flip
        self.width = int(pipe.token_table.shape[1])  # d comes from the embedding table, never a literal
        self.dim = num_vectors * self.width
        self.num_timesteps = len(pipe.alphas_cumprod)
        self.per_image = captions is not None
        self._slots: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.captions = self._check_captions(templates or default_templates(pipe.tokenizer), captions, len(images))
        # every image and its mirror image encoded once: the VAE encoder never runs inside the loop. One image per
        # call (a batch of ten 512-px images multiplies the encoder's activations tenfold), then its session is
        # closed: the loop needs only the text encoder and the UNet in memory.
        # word_directions: the spread of the vocabulary's words (word-level vocabularies; CLIP's spans everything;
        # one vector's width, so a multi-vector token is perturbed in the whole space)
        tok = pipe.tokenizer
        words = [i for i in range(len(tok.tokens)) if i not in (tok.pad, tok.bos, tok.eos)] \
            if isinstance(tok, Tokenizer) and num_vectors == 1 else []
        self.direction_basis = word_direction_basis(pipe.token_table[words]) if words else None
        originals = np.concatenate([images, images[:, :, ::-1]]) if flip else images
        encoded = np.concatenate([pipe.encode_images(image[None]) for image in originals])
        pipe.close_component("vae_encoder")
        self.latents = encoded.astype(np.float32).reshape(2 if flip else 1, len(images), *encoded.shape[1:])
        self.count = len(images)

    def _check_captions(self, templates: tuple[str, ...], captions: list[str] | None, count: int) -> list[str]:
        """Validated up front: a missing placeholder or an unknown word fails before any step runs."""
        if captions is not None:
            if len(captions) != count:
                raise EdgeSDKError(f"{len(captions)} captions for {count} images; give one caption per image")
            texts = [c.replace("{}", self.token) for c in captions]
        else:
            texts = [t.replace("{}", self.token) for t in templates]
        if not texts:
            raise EdgeSDKError("no captions: give at least one --caption with {} or the token where it goes")
        probe = {self.token: np.zeros((self.num_vectors, self.width), np.float32)}
        for text in texts:
            if self.token not in self.pipe.tokenizer.words(text):
                raise EdgeSDKError(f"caption {text!r} does not contain the placeholder {self.token} "
                                   "(write {} or the token where it goes)")
            try:
                self.pipe.tokenizer.embed(text, self.pipe.token_table, probe)  # raises on unknown words
            except EdgeSDKError as e:
                raise EdgeSDKError(f"caption {text!r}: {e}") from None
        return texts

    def initial_vector(self, init_word: str) -> np.ndarray:
        """θ0: the initializer word's embedding, repeated for every vector of the placeholder."""
        word = init_word.strip().lower()
        if word not in self.pipe.tokenizer.index:
            raise EdgeSDKError(f"--init-word {init_word!r} is not in the model's vocabulary; "
                               "`edgesdk inspect BUNDLE` lists it")
        row = self.pipe.token_table[self.pipe.tokenizer.index[word]]
        return np.tile(row, self.num_vectors).astype(np.float32)

    def draw(self, rng: np.random.Generator, t_range: tuple[int, int]) -> Draw:
        image = int(rng.integers(self.count))
        flip = bool(self.flip and rng.random() < 0.5)
        template = int(rng.integers(len(self.captions)))
        caption = self.captions[image] if self.per_image else self.captions[template]
        noise = rng.standard_normal(self.latents.shape[2:]).astype(np.float32)
        return Draw(image, flip, caption, noise, int(rng.integers(t_range[0], t_range[1])))

    def placeholder_slots(self, caption: str) -> tuple[np.ndarray, np.ndarray]:
        """(max_tokens, width) embeddings of ``caption`` with zeros at the placeholder, and the placeholder's rows.
        Tokenized once per caption; each query then only writes its θ into those rows."""
        if caption not in self._slots:
            self._slots[caption] = placeholder_slots(self.pipe.tokenizer, self.pipe.token_table, caption, self.token,
                                                     self.num_vectors)
        return self._slots[caption]

    def losses(self, sample: Draw, thetas: np.ndarray) -> np.ndarray:
        """L for every row of ``thetas`` (n+1, dim): identical z_t, t and caption; all rows in one forward per
        component, or ``query_batch`` rows at a time (the same losses, a smaller activation peak)."""
        chunk = self.query_batch or len(thetas)
        return np.concatenate([self._losses(sample, thetas[start:start + chunk])
                               for start in range(0, len(thetas), chunk)])

    def _losses(self, sample: Draw, thetas: np.ndarray) -> np.ndarray:
        rows = len(thetas)
        base, slots = self.placeholder_slots(sample.caption)
        embeddings = np.repeat(base[None], rows, axis=0)
        embeddings[:, slots] = np.asarray(thetas, dtype=np.float32).reshape(rows, self.num_vectors, self.width)
        text = self.pipe.run_component("text_encoder", embeddings)
        alpha_bar = self.pipe.alphas_cumprod[sample.timestep]
        z0 = self.latents[int(sample.flip), sample.image]
        noisy = (np.sqrt(alpha_bar) * z0 + np.sqrt(1.0 - alpha_bar) * sample.noise).astype(np.float32)
        predicted = self.pipe.run_component("unet", np.repeat(noisy[None], rows, axis=0),
                                            np.full(rows, sample.timestep, dtype=np.float32), text)
        error = predicted.astype(np.float64) - sample.noise.astype(np.float64)[None]
        return (error**2).reshape(rows, -1).mean(axis=1)  # accumulated in float64


def _as_templates(captions: list[str], token: str) -> list[str]:
    """User captions as templates: "{}" stays the slot; the token written out (any case) becomes it."""
    templates = []
    for caption in captions:
        if "{}" not in caption:
            caption = re.sub(re.escape(token), "{}", caption, flags=re.IGNORECASE)
        templates.append(caption)
    return templates


def save_token(path: Path, token: str, vectors: np.ndarray, metadata: dict[str, object]) -> None:
    """A learned token as .safetensors ({token: (num_vectors, width) float32}), written atomically."""
    from safetensors.numpy import save_file

    with atomic_file(path) as temp:
        save_file({token: np.ascontiguousarray(vectors, dtype=np.float32)}, str(temp),
                  metadata={k: json.dumps(v) for k, v in metadata.items()})


def load_tokens(path: Path) -> dict[str, np.ndarray]:
    """{<token>: (num_vectors, width)} from a file written by ``save_token``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = check_input_file(path, "embedding file", MAX_ARRAY_FILE_BYTES)
    try:
        tokens = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, OverflowError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EdgeSDKError(f"{str(path)!r} is not a learned-token .safetensors file ({first})") from None
    if not tokens:
        raise EdgeSDKError(f"{str(path)!r} holds no learned token")
    loaded = {}
    for name, value in tokens.items():
        array = np.asarray(value)
        # what save_token writes (float32), or float64; both runtimes refuse anything else (the C++ one by the
        # same rule): integers or half floats are not a learned token, whatever their shape
        if array.dtype not in (np.float32, np.float64):
            raise EdgeSDKError(f"{str(path)!r}: token {name!r} has dtype {array.dtype}; a learned token is float32 "
                               "vectors")
        if array.ndim not in (1, 2) or array.size == 0 or (array.ndim == 2 and len(array) > MAX_VECTORS):
            raise EdgeSDKError(f"{str(path)!r}: token {name!r} has shape {array.shape}; a learned token is "
                               f"(vectors, width) with 1 to {MAX_VECTORS} vectors")
        check_finite_array(f"{str(path)!r}: token {name!r}", array)
        loaded[name] = array.astype(np.float32)
    return loaded


@dataclass
class PersonalizeResult:
    token: str
    vectors: np.ndarray  # (num_vectors, width) float32
    steps: int
    images: list[Path]
    checkpoint: Path
    final_loss: float
    notes: list[str]


def default_mu(bundle: Bundle) -> float:
    """μ = 1e-1 on every bundle. On int8/int4 files a 1e-3 perturbation drowns in rounding (benchmarks/zo_regime.py:
    w8a8 cosine ~0; w8, w4 ~7 % of the noise-free value), while 1e-1 keeps 59-73 % on every recipe and backend. On
    fp32, 1e-3 keeps the pointwise signal but learned far less per step with word directions (an earlier variant
    of them, pink-star on the shipped fp32 tiny-sd: CIEDE2000 50.1 -> 45.6 in 1000 steps at 1e-3, -> 24.6 in 600
    at 1e-1): the larger perturbation also smooths the loss, whose small-scale wiggles two queries cannot average."""
    del bundle  # one μ for every recipe; kept as a function of the bundle for the CLI and the C++ runtime's mirror
    return 1e-1


def default_config(bundle: Bundle) -> ZOConfig:
    """The defaults of `edgesdk personalize` (and of the C++ runtime's), with μ by the bundle's quantization: the
    estimator benchmarks/personalization.py chose. The paper's one-sided n = 2 (three queries, the bundles' batch-3
    method), perturbed along the model's word embeddings where its vocabulary is smaller than its width, and Adam at
    lr 2e-2 decaying to 0 over the run (cosine)."""
    return ZOConfig(mu=default_mu(bundle), lr=2e-2, cosine_lr=True, word_directions=True)


def checkpoint_path_for(output: Path) -> Path:
    """Where a run's resumable state lives: next to the output, so nothing is written anywhere else."""
    return Path(output).with_name(Path(output).name + ".ckpt.npz")


def fit_config(config: ZOConfig, dim: int) -> tuple[ZOConfig, list[str]]:
    """Adapt the spec's defaults to a narrow token. Subspace Gradient removes up to tau-1 directions; with
    SD 1.5's 768-wide tokens and tau = 128 that is at most 16.5 % of them. A 128-wide token with tau = 128 would
    lose nearly all, so tau is capped to keep that share (dim // 6)."""
    notes = []
    cap = max(2, dim // 6)
    if config.sg and config.sg_tau > cap:
        notes.append(f"Subspace Gradient tau {config.sg_tau} -> {cap} for a {dim}-wide token (removes at most "
                     f"{cap - 1} of {dim} directions, the spec's 16.5 % share)")
        config = replace(config, sg_tau=cap)
    return config, notes


def personalize(bundle: Bundle | str | Path, images_dir: Path, token: str, init_word: str, output: Path, *,
                steps: int, backend: str = "onnx", config: ZOConfig | None = None, num_vectors: int = 1,
                resume: bool = False, overwrite: bool = False, threads: int | None = None,
                time_budget_s: float | None = None, on_step: Callable[[StepLog], None] | None = None,
                session_factory: ComponentFactory | None = None, query_batch: int | None = None,
                captions: list[str] | None = None) -> PersonalizeResult:
    """Learn ``token`` from the images in ``images_dir`` with forward passes of the bundle's exported model only.

    Writes exactly two files: ``output`` (the learned token, .safetensors) and its checkpoint next to it
    (``<output>.ckpt.npz``, every ``config.checkpoint_every`` steps, atomically), from which ``resume`` continues
    bit-exactly after a kill. ``query_batch``: forward the n+1 queries of a step this many at a time (default: all at
    once); 1 gives the lowest peak memory (an SD-1.5 step on a phone), at about the same speed on a CPU. ``captions``:
    caption templates ("{}" or the token where it goes) instead of the bundle's defaults (``default_templates``)."""
    output = Path(output)
    checkpoint = checkpoint_path_for(output)
    check_count("--steps", steps, MAX_STEPS)
    check_count("--vectors", num_vectors, MAX_VECTORS)
    check_threads(threads)
    if query_batch is not None:
        check_count("--query-batch", query_batch, MAX_DIRECTIONS * 2 + 1)
    check_finite("--time-budget", time_budget_s, low=0.0, high=MAX_TIME_BUDGET_S, low_open=True)
    if config is not None:
        check_count("--directions", config.n, MAX_DIRECTIONS)
        check_count("--draws", config.draws, MAX_DRAWS)
        check_finite("--mu", config.mu, low=0.0, low_open=True)
        check_finite("--lr", config.lr, low=0.0, low_open=True)
    bundle_root = bundle.root if isinstance(bundle, Bundle) else Path(bundle)
    check_output(output, "--output", inputs=[bundle_root, images_dir])
    check_output(checkpoint, "checkpoint", inputs=[bundle_root, images_dir])
    if output.exists() and not (overwrite or resume):
        raise EdgeSDKError(f"{str(output)!r} exists; pass --overwrite to replace it or --resume to continue its run")
    if resume and not checkpoint.exists():
        raise EdgeSDKError(f"nothing to resume: no checkpoint at {str(checkpoint)!r}")
    if checkpoint.exists() and not (resume or overwrite):
        raise EdgeSDKError(f"an earlier run left a checkpoint at {str(checkpoint)!r}; pass --resume to continue it "
                           "or --overwrite to start over")
    # lean sessions: personalization is a long job beside the user's other apps; memory counts more than ~5 % speed
    pipe = TextToImage(bundle, backend=backend, threads=threads, session_factory=session_factory, lean_memory=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    image_size = int(pipe.bundle.model.get("image_size", 32))
    check_count("the bundle's image_size", image_size, 16_384)
    image_notes: list[str] = []
    images, used = load_concept_images(images_dir, image_size, image_notes)
    check_allocation(f"{len(used)} concept images (and their mirror images) of {image_size}x{image_size} as float32",
                     2 * len(used), image_size * image_size * 3 * 4)
    problem = TokenLoss(pipe, images, token, num_vectors=num_vectors, query_batch=query_batch,
                        templates=tuple(_as_templates(captions, token)) if captions is not None else None)
    theta0 = problem.initial_vector(init_word)
    # the run's length is the horizon of a decaying lr schedule (ZOConfig.lr_at)
    config, notes = fit_config(replace(config or default_config(pipe.bundle), steps=steps), problem.dim)
    notes = image_notes + notes
    if resume:
        trainer = ZOTrainer.resume(checkpoint, problem, config)
    else:
        trainer = ZOTrainer(problem, config, theta0)
    logs = trainer.run(steps, checkpoint_path=checkpoint, on_step=on_step, time_budget_s=time_budget_s)
    vectors = trainer.token().reshape(num_vectors, problem.width)
    final_loss = logs[-1].loss if logs else float("nan")
    save_token(output, problem.token, vectors, {
        "init_word": init_word, "steps": trainer.s, "backend": backend, "family": pipe.bundle.family,
        "recipe": pipe.bundle.manifest.get("quantization", {}).get("recipe", "fp32"),
        "images": len(used), "config": json.loads(config.to_json()), "captions": problem.captions})
    return PersonalizeResult(problem.token, vectors, trainer.s, used, checkpoint, final_loss, notes)
