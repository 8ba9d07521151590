"""Prompt accuracy: generate from prompts, let the attribute classifier read the images back, count matches."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesdk.data import ATTRIBUTES, parse_prompt, random_spec


def evaluation_prompts(count: int, seed: int = 123) -> list[str]:
    """Deterministic prompts naming kind, colour, size and background (position in half of them)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(count):
        spec = random_spec(rng)
        prompts.append(spec.caption(size=True, position=bool(i % 2), background=True))
    return prompts


@dataclass
class AccuracyReport:
    samples: int
    accuracy: dict[str, float]  # attribute -> share of samples (that name it) whose image shows it
    counted: dict[str, int]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "accuracy": self.accuracy, "counted": self.counted,
                "seconds": round(self.seconds, 2), **self.extra}


def score_images(images: np.ndarray, prompts: list[str], evaluator_path: Path | None = None) -> AccuracyReport:
    """images (N,H,W,3) uint8, one prompt each."""
    from edgesdk.zoo.evaluator import load_evaluator

    predicted = load_evaluator(evaluator_path).predict(images)
    hits: dict[str, int] = {name: 0 for name in ATTRIBUTES}
    counted: dict[str, int] = {name: 0 for name in ATTRIBUTES}
    for i, prompt in enumerate(prompts):
        for name, value in parse_prompt(prompt).items():
            counted[name] += 1
            hits[name] += int(predicted[name][i] == ATTRIBUTES[name].index(value))
    accuracy = {name: hits[name] / counted[name] for name in ATTRIBUTES if counted[name]}
    return AccuracyReport(samples=len(prompts), accuracy=accuracy, counted={k: v for k, v in counted.items() if v})


def prompt_accuracy(bundle_path: Path, backend: str = "onnx", samples: int = 100, steps: int | None = None,
                    sampler: str | None = None, seed: int = 0, batch: int = 25, guidance_scale: float | None = None,
                    session_factory: Callable | None = None) -> tuple[AccuracyReport, np.ndarray, list[str]]:
    """Sample ``samples`` images from a text-to-image bundle on a backend and score them. Sampler options (None: the
    bundle's defaults) are refused by a one-step bundle, which samples in one generator evaluation."""
    from edgesdk.runtime.tasks import open_text_to_image

    prompts = evaluation_prompts(samples)
    pipe = open_text_to_image(bundle_path, backend=backend, session_factory=session_factory)

    def generate(chunk: list[str], chunk_seed: int) -> np.ndarray:
        return pipe.sample(chunk, seed=chunk_seed, steps=steps, sampler=sampler, guidance_scale=guidance_scale)

    start = time.perf_counter()
    images = np.concatenate([generate(prompts[i : i + batch], seed + i) for i in range(0, samples, batch)])
    report = score_images(images, prompts)
    report.seconds = time.perf_counter() - start
    report.extra = {"backend": backend, **pipe.sampling(steps, sampler)}
    return report, images, prompts
