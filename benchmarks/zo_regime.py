"""Which quantization recipe and μ keep the zeroth-order gradient estimate pointing the right way?

    python benchmarks/zo_regime.py [--draws 6] [--directions 48]

For each recipe bundle (fp32, w8a8, w8, w4) and backend, and each μ: at a few training draws (image, noise,
t in the PUTS range) of the pink-star concept, the RGE estimate from the exported files
ĝ = Σ c_i u_i / n, c_i = (L(θ+μu_i) − L(θ)) / μ, against the true gradient of the same loss from the fp32 eager
model (autograd). Reported: mean cosine(ĝ, ∇L) and the same with exact directional derivatives u·∇L (what a
noise-free forward would give for these directions), and their ratio, the share of the signal that survives
quantization and float noise. Bundles are taken from build/ (exported when missing). Writes
benchmarks/results/zo_regime.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from edgesdk.data.concepts import concept_images
from edgesdk.exporting import export_model
from edgesdk.reporting import write_json
from edgesdk.runtime.personalize import Draw, TokenLoss
from edgesdk.runtime.pipeline import TextToImage
from edgesdk.runtime.zo import perturbed_batch
from edgesdk.zoo.tiny_sd import load_tiny_sd

RECIPES = ("fp32", "w8a8", "w8", "w4")
MUS = (1e-3, 1e-2, 1e-1)


def eager_gradient(model: torch.nn.Module, problem: TokenLoss, sample: Draw, theta: np.ndarray) -> np.ndarray:
    """∇θ L at the same draw, through the fp32 eager text encoder and UNet."""
    base, slots = problem.placeholder_slots(sample.caption)
    theta_t = torch.tensor(theta, dtype=torch.float32, requires_grad=True)
    embeddings = torch.from_numpy(base).clone()
    embeddings[slots] = theta_t.reshape(problem.num_vectors, problem.width)
    alpha_bar = problem.pipe.alphas_cumprod[sample.timestep]
    z0 = problem.latents[int(sample.flip), sample.image]
    noisy = torch.from_numpy((np.sqrt(alpha_bar) * z0 + np.sqrt(1 - alpha_bar) * sample.noise).astype(np.float32))
    text = model.text_encoder(embeddings[None])
    predicted = model.unet(noisy[None], torch.tensor([float(sample.timestep)]), text)
    loss = ((predicted - torch.from_numpy(sample.noise)[None]) ** 2).mean()
    loss.backward()
    return theta_t.grad.numpy().astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--directions", type=int, default=48)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "zo_regime.json")
    args = parser.parse_args()

    model = load_tiny_sd()
    images = concept_images("pink-star", 5)
    rows = []
    for recipe in RECIPES:
        path = args.workdir / ("tiny-sd.edge" if recipe == "fp32" else f"tiny-sd-{recipe}.edge")
        if not (path / "manifest.json").exists():
            print(f"exporting {recipe} -> {path}")
            export_model("tiny-sd", path, "executorch,onnx", quant=recipe, log=lambda _m: None)
        for backend in ("onnx", "executorch"):
            problem = TokenLoss(TextToImage(path, backend=backend), images, "<concept>")
            theta = problem.initial_vector("star").astype(np.float64)
            rng = np.random.default_rng(0)
            draws = [problem.draw(rng, (500, 900)) for _ in range(args.draws)]
            truths = [eager_gradient(model, problem, d, theta) for d in draws]
            for mu in MUS:
                measured, ideal, jitter, signal = [], [], [], []
                for sample, truth in zip(draws, truths, strict=True):
                    u = np.random.default_rng(1).standard_normal((args.directions, problem.dim))
                    losses = problem.losses(sample, perturbed_batch(theta, u, mu))
                    c = (losses[1:] - losses[0]) / mu
                    measured.append(cosine(c @ u, truth))
                    ideal.append(cosine((u @ truth) @ u, truth))
                    repeat = problem.losses(sample, perturbed_batch(theta, u[:2], mu))
                    jitter.append(float(np.abs(repeat - losses[:3]).max()))
                    signal.append(float(np.median(np.abs(losses[1:] - losses[0]))))
                row = {"recipe": recipe, "backend": backend, "mu": mu, "cosine": float(np.mean(measured)),
                       "ideal_cosine": float(np.mean(ideal)), "jitter": float(np.max(jitter)),
                       "median_loss_change": float(np.median(signal))}
                row["signal_kept"] = row["cosine"] / row["ideal_cosine"]
                rows.append(row)
                print(f"{recipe:5s} {backend:10s} mu {mu:7.0e}  cosine {row['cosine']:.3f} (noise-free "
                      f"{row['ideal_cosine']:.3f}, kept {row['signal_kept']:.0%})  jitter {row['jitter']:.1e} "
                      f"|ΔL| {row['median_loss_change']:.1e}", flush=True)
    best = max(rows, key=lambda r: r["cosine"])
    print(f"\nbest: {best['recipe']} on {best['backend']} at mu {best['mu']:.0e} (cosine {best['cosine']:.3f})")
    write_json(args.output, {"rows": rows, "draws": args.draws, "directions": args.directions,
                             "command": "python benchmarks/zo_regime.py"})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
