"""The `edgesdk` command: thin typer functions over library functions that tests call directly."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import typer

try:  # typer >= 0.22 parses with its own copy of click; older ones with click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from edgesdk.extras import require_extra
from edgesdk.families import FAMILIES
from edgesdk.runtime.errors import EdgeSDKError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="edgesdk: PyTorch models to phones and edge boards.")
train_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Train the shipped models (PyTorch; torchrun-ready).")
app.add_typer(train_app, name="train")

CHECKPOINTS = Path("checkpoints")


def _version(value: bool) -> None:
    if value:
        from edgesdk import __version__

        typer.echo(f"edgesdk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """edgesdk: PyTorch models to phones and edge boards."""


@train_app.command("tiny-sd")
def train_tiny_sd_cmd(
    output: Path = typer.Option(Path("sdk/weights/tiny_sd.safetensors"), "-o", "--output", help="Weights to write."),
    checkpoint_dir: Path = typer.Option(CHECKPOINTS / "tiny-sd", help="Checkpoints; rerun to resume."),
    vae_steps: int = typer.Option(1_200, min=1),
    unet_steps: int = typer.Option(6_000, min=1),
    dataset_size: int = typer.Option(40_000, min=16),
    batch: int = typer.Option(128, min=2, help="Global UNet batch (split across torchrun processes)."),
    checkpoint_every: int = typer.Option(250, min=1, help="Steps between checkpoints."),
    seed: int = typer.Option(0),
    palette: str = typer.Option("continuous", help="Shape colours: continuous (any shade; captions name only "
                                                   "near-named ones) | named (the eight named colours only)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train tiny-sd (VAE, then text encoder + UNet). Under torchrun, runs DDP across the processes."""
    require_extra("train tiny-sd", "train")
    from edgesdk.train.tiny_sd import TinySDTrainConfig, train_tiny_sd

    if palette not in ("continuous", "named"):
        raise EdgeSDKError(f"--palette must be continuous or named, got {palette!r}")
    cfg = TinySDTrainConfig(dataset_size=dataset_size, vae_steps=vae_steps, unet_steps=unet_steps, seed=seed,
                            unet_batch=batch, vae_batch=min(64, batch), checkpoint_every=checkpoint_every,
                            palette=palette)
    path = train_tiny_sd(output, checkpoint_dir, cfg, show_progress=not quiet)
    typer.echo(f"wrote {path}")


@train_app.command("onestep")
def train_onestep_cmd(
    divergence: str = typer.Option("js", help="f-divergence: rkl (= DMD2) | srkl | js | hellinger | fkl | jeffreys."),
    output: Path = typer.Option(Path("sdk/weights/onestep.safetensors"), "-o", "--output",
                                help="Student weights to write (its UNet; the rest comes from the teacher)."),
    checkpoint_dir: Path = typer.Option(CHECKPOINTS / "onestep", help="Checkpoints; rerun to resume."),
    teacher: Path | None = typer.Option(None, help="tiny-sd teacher weights (default: the shipped ones)."),
    iterations: int = typer.Option(2_000, min=1, help="Critic and generator iterations together."),
    update_freq: int = typer.Option(5, min=2, help="Generator on every N-th iteration, the critic otherwise."),
    batch: int = typer.Option(32, min=2, help="Global batch (split across torchrun processes)."),
    lr: float = typer.Option(1e-4, min=0.0, help="AdamW learning rate of G, the fake network and the head."),
    gan_weight: float = typer.Option(1e-3, min=0.0, help="Weight of the GAN term in the generator loss."),
    guidance: float = typer.Option(4.0, min=1.0, help="Teacher guidance distilled into the student."),
    dataset_size: int = typer.Option(4_000, min=8, help="Real images for the discriminator."),
    checkpoint_every: int = typer.Option(100, min=1),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Distil tiny-sd into a one-step generator with f-distill. Under torchrun, averages over the processes."""
    require_extra("train onestep", "train")
    from edgesdk.train.onestep import OneStepTrainConfig, train_onestep

    cfg = OneStepTrainConfig(divergence=divergence, iterations=iterations, update_freq=update_freq, batch=batch,
                             lr=lr, gan_weight=gan_weight, guidance=guidance, dataset_size=dataset_size,
                             checkpoint_every=checkpoint_every, seed=seed)
    path = train_onestep(output, checkpoint_dir, cfg, teacher_path=teacher, show_progress=not quiet)
    typer.echo(f"wrote {path}")


@train_app.command("onestep-w4")
def train_onestep_w4_cmd(
    student: Path | None = typer.Option(None, help="fp32 student to start from (default: the shipped "
                                                   "sdk/weights/onestep.safetensors)."),
    output: Path = typer.Option(Path("sdk/weights/onestep-w4.safetensors"), "-o", "--output",
                                help="Quantization-aware student to write (what `export onestep --quant w4` uses)."),
    checkpoint_dir: Path = typer.Option(CHECKPOINTS / "onestep", help="Checkpoints; rerun to resume."),
    iterations: int = typer.Option(1_000, min=1),
    batch: int = typer.Option(32, min=1),
    lr: float = typer.Option(2e-4, min=0.0, help="Adam learning rate (cosine to 0)."),
    group: int = typer.Option(64, help="4-bit group size (the w4 recipe's)."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Fine-tune a one-step student with 4-bit weights to match its fp32 self, so `--quant w4` exports keep it."""
    require_extra("train onestep-w4", "train")
    from edgesdk.train.quant_aware import QuantAwareConfig, train_quant_aware

    cfg = QuantAwareConfig(iterations=iterations, batch=batch, lr=lr, group=group, seed=seed)
    result = train_quant_aware(output, checkpoint_dir, student, cfg, show_progress=not quiet)
    typer.echo(f"wrote {output}; x0 SQNR vs the fp32 student with 4-bit weights: {result['before_db']:.1f} dB "
               f"before, {result['after_db']:.1f} dB after ({int(result['layers'])} layers)")


@train_app.command("bnn")
def train_bnn_cmd(
    estimator: str = typer.Option("reste", help="reste | ste (clipped STE baseline) | fp (full-precision twin)."),
    dataset: str = typer.Option("digits", help="digits (8x8, scikit-learn) | shapes (32x32 procedural, by kind)."),
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Weights to write (default sdk/weights/bnn-DATASET.safetensors)."),
    checkpoint_dir: Path = typer.Option(CHECKPOINTS / "bnn", help="Checkpoints (every epoch); rerun to resume."),
    preset: str | None = typer.Option(None, help="Network: digits (ResNet-20 layout, 1 block per stage) | resnet20 "
                                                 "(3 blocks). Default by dataset."),
    epochs: int | None = typer.Option(None, min=1, help="Default: digits 60, shapes 40."),
    batch: int = typer.Option(128, min=2, help="Global batch (split across torchrun processes)."),
    optimizer: str | None = typer.Option(None, help="sgd (the paper's) | adam. Default: digits sgd, shapes adam."),
    lr: float | None = typer.Option(None, min=0.0, help="Peak learning rate (warm-up, then cosine to 0). Default: "
                                                        "sgd 0.1, adam 1e-3."),
    o_end: float = typer.Option(3.0, min=1.0, help="ReSTE's final o (cosine ramp from 1)."),
    ste_clip: float = typer.Option(1.0, min=0.0, help="Clip of the STE baseline (1.5 = ReSTE's t)."),
    a32: bool = typer.Option(False, "--a32", help="Binary weights only; activations stay 32-bit."),
    no_indicators: bool = typer.Option(False, "--no-indicators", help="Skip the estimating-error and gradient-"
                                                                      "instability indicators (a little faster)."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train a binary ResNet with ReSTE (or the STE baseline). Under torchrun, runs DDP across the processes."""
    require_extra("train bnn", "train")
    from edgesdk.train.bnn import BNNTrainConfig, train_bnn
    from edgesdk.zoo.bnn import default_bnn_path

    cfg = BNNTrainConfig(dataset=dataset, estimator=estimator, preset=preset, epochs=epochs, batch=batch,
                         optimizer=optimizer, lr=lr,
                         o_end=o_end, ste_clip=ste_clip, binary_activations=not a32, indicators=not no_indicators,
                         seed=seed)
    path = output or default_bnn_path(dataset)
    result = train_bnn(path, checkpoint_dir, cfg, show_progress=not quiet)
    typer.echo(f"wrote {path}; test accuracy {result['test_accuracy']:.1%} ({result['parameters']:,} parameters, "
               f"{result['binary_share']:.1%} binary)")


@train_app.command("viws")
def train_viws_cmd(
    output: Path = typer.Option(Path("sdk/weights/viws.safetensors"), "-o", "--output", help="Weights to write."),
    checkpoint_dir: Path = typer.Option(CHECKPOINTS / "viws", help="Checkpoints; rerun to resume."),
    steps: int = typer.Option(2_000, min=1),
    batch: int = typer.Option(2, min=1, help="Items per step (each is a rain, a haze and a snow clip; split "
                                             "across torchrun processes)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (halved after every fifth of the run)."),
    clips_per_weather: int = typer.Option(240, min=1, help="Training clips generated per weather."),
    size: int = typer.Option(64, min=32, help="Training crop (a multiple of 32); also the exported tile."),
    no_discriminator: bool = typer.Option(False, "--no-discriminator", help="Ablation: no weather discriminator."),
    single_frame: bool = typer.Option(False, "--single-frame", help="Ablation: the centre frame repeated (no "
                                                                    "temporal information)."),
    no_refiner: bool = typer.Option(False, "--no-refiner", help="Ablation: no refiner."),
    preset: str = typer.Option("default", help="Network size: default (shipped) | tiny (tests)."),
    checkpoint_every: int = typer.Option(100, min=1),
    seed: int = typer.Option(19),
    init: Path | None = typer.Option(None, "--init", help="Start from these viws weights (a second stage) instead of "
                                                          "random initialisation."),
    device: str = typer.Option("auto", help="auto (a GPU when torch sees one) | cpu | cuda."),
    workers: int = typer.Option(1, min=1, help="Processes that render the training clips."),
    pool_cache: Path | None = typer.Option(None, help="Keep the rendered clip pool in this folder (default: "
                                                      "CHECKPOINT_DIR/pools); reruns and ablations reuse it."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train ViWS-Net on synthetic rain / haze / snow clips. Under torchrun, runs DDP across the processes."""
    require_extra("train viws", "train")
    from edgesdk.train.viws import ViWSTrainConfig, train_viws

    cfg = ViWSTrainConfig(steps=steps, batch=batch, lr=lr, clips_per_weather=clips_per_weather, size=size,
                          discriminator=not no_discriminator, single_frame=single_frame, refiner=not no_refiner,
                          checkpoint_every=checkpoint_every, seed=seed, preset=preset,
                          init=str(init) if init else None)
    result = train_viws(output, checkpoint_dir, cfg, show_progress=not quiet, device=device, workers=workers,
                        pool_cache=pool_cache or checkpoint_dir / "pools")
    last = result["history"][-1] if result["history"] else {}
    typer.echo(f"wrote {output}; {result['variant']}, {result['inference_parameters']:,} parameters at inference, "
               f"last reconstruction loss {last.get('reconstruction', float('nan')):.4f}")


@train_app.command("evaluator")
def train_evaluator_cmd(
    output: Path = typer.Option(Path("sdk/weights/evaluator.safetensors"), "-o", "--output"),
    checkpoint_dir: Path = typer.Option(CHECKPOINTS / "evaluator"),
    steps: int = typer.Option(1_500, min=1),
    seed: int = typer.Option(1000),
    quiet: bool = typer.Option(False),
) -> None:
    """Train the attribute classifier that scores generated images (never sees generated images)."""
    require_extra("train evaluator", "train")
    from edgesdk.train.evaluator import EvaluatorTrainConfig, train_evaluator

    report = train_evaluator(output, checkpoint_dir, EvaluatorTrainConfig(steps=steps, seed=seed),
                             show_progress=not quiet)
    typer.echo(f"wrote {output}; held-out accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in report.items()))


@train_app.command("standard")
def train_standard_cmd(
    archs: list[str] = typer.Argument(..., help="resnet18, mobilenet_v2, mobilenet_v3_small, efficientnet_b0, "
                                                "deit_tiny, or all."),
    steps: int | None = typer.Option(None, min=1, help="Default per architecture (300; 900 for "
                                                               "mobilenet_v2 and mobilenet_v3_small, 600 for "
                                                               "efficientnet_b0, 2650 for deit_tiny: the last "
                                                               "400 at 224 px, the others at 112)."),
    retrain: bool = typer.Option(False, help="Train even when the cache holds weights made with these settings."),
    threads: int = typer.Option(1, min=1, help="Compute threads (results are reproducible at a given count)."),
) -> None:
    """Brief training of standard torchvision / timm architectures on the photo image set, into the cache
    ($EDGESDK_CACHE/standard, default ~/.cache/edgesdk): weights that behave like trained ones, for
    `edgesdk export --model edgesdk.zoo.standard:ARCH`."""
    require_extra("train standard", "train")
    import torch

    from edgesdk.train.standard import config_for, ensure_trained
    from edgesdk.zoo.standard import ARCHITECTURES

    names = list(ARCHITECTURES) if archs == ["all"] else archs
    unknown = [a for a in names if a not in ARCHITECTURES]
    if unknown:
        raise EdgeSDKError(f"unknown standard architecture(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(ARCHITECTURES)} or all")
    torch.set_num_threads(threads)
    for arch in names:
        cfg = config_for(arch, **({"steps": steps} if steps else {}))
        path = ensure_trained(arch, cfg, log=typer.echo, retrain=retrain)
        typer.echo(f"{arch}: {path}")


# ------------------------------------------------------------------------------------------------ export

FACTORY_FORM = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # package.module:factory


def positional_model(name: str | None, families: tuple[str, ...]) -> str | None:
    """The user's model when `edgesdk export NAME` names one rather than a family: an existing file, a .pt2 path
    or package.module:factory (what --model takes). None for a family or no name; an error for anything else."""
    if name is None or name in families:
        return None
    if name.endswith(".pt2") or FACTORY_FORM.fullmatch(name) or Path(name).is_file():
        return name
    raise EdgeSDKError(f"unknown model family '{name}'; available: {', '.join(families)}; to export your own model "
                       "give its path (model.pt2) or package.module:factory")


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EdgeSDKError(f"{option} takes comma-separated numbers, got {text!r}") from None


@app.command("export")
def export_cmd(
    family: str | None = typer.Argument(None, help=f"Model family: {' | '.join(FAMILIES)} (edgesdk.families). Or "
                                                    "your own model, as --model takes it: model.pt2 or "
                                                    "package.module:factory."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle directory to write (NAME.edge)."),
    model: str | None = typer.Option(None, "--model", help="Your own model: model.pt2 (torch.export.save) or "
                                                          "package.module:factory returning (module, inputs)."),
    calibration: Path | None = typer.Option(None, "--calibration", help="Your own model: FILE.npz (arrays named "
                                            "after the inputs) or a folder of them: a static recipe's calibration "
                                            "data, whose last fifth is held out to judge parity on."),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="Your own model: FILE.npz (or a folder) to "
                                          "judge parity and the recipe's floor on instead of the held-out rows."),
    image_resize: int | None = typer.Option(None, "--image-resize", help="Your own model, a folder of images as "
                                            "data: the shorter side in px before the centre crop to the input's size "
                                            "(default: crop / 0.875)."),
    image_mean: str = typer.Option("0", "--image-mean", help="Folder of images: per-channel mean of [0, 1] pixels, "
                                   "e.g. 0.485,0.456,0.406."),
    image_std: str = typer.Option("1", "--image-std", help="Folder of images: per-channel std, e.g. "
                                  "0.229,0.224,0.225."),
    target: str = typer.Option("", "--target", "-t",
                               help="Comma-separated: executorch, onnx, tensorrt (TensorRT-ready ONNX; engines "
                                    "only where tensorrt imports). Default: every target the recipe supports."),
    weights: Path | None = typer.Option(None, help="Weights file (default: the shipped ones). onestep: the student "
                                                   "file (default sdk/weights/onestep.safetensors); bnn: default "
                                                   "sdk/weights/bnn-digits.safetensors; viws: "
                                                   "sdk/weights/viws.safetensors."),
    quant: str | None = typer.Option(None, help="Quantization recipe: fp32 | w8a8 (static int8) | w8 (int8 weights, "
                                                "dynamic activations) | w4 (4-bit weights in groups of 64, 8da4w) | "
                                                "binary (bnn: 1 bit per binary weight). Default: fp32; bnn: binary."),
    calibration_samples: int = typer.Option(32, help="w8a8: calibration inputs per component (your own model: "
                                                     "batches of --calibration at most)."),
    calibration_trajectory: str = typer.Option("sampling", help="w8a8: sampling (DDIM trajectories) | uniform-t."),
    fallback: str = typer.Option("none", "--fallback", help="Your own model, w8a8: auto keeps the fewest, most "
                                 "sensitive layers in fp32 until the SQNR floor is met on every target; or "
                                 "comma-separated layer names (as edgesdk inspect lists them) to keep in fp32; "
                                 "none quantizes every layer."),
    min_top1: float | None = typer.Option(None, "--min-top1", help="Your own model: a classifier output (N, classes) "
                                          "must also keep this top-1 agreement with fp32 on the evaluation rows, "
                                          "e.g. 0.98 (--fallback auto works to it too)."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle (only once the new one is complete)."),
    zo_batch: int | None = typer.Option(None, help="tiny-sd, --from-diffusers: ExecuTorch batch for on-device "
                                                   "personalization's n+1 queries in one forward (an extra method; 0: "
                                                   "none; 1 for personalize --query-batch 1). Default: 3 "
                                                   "for fp32 and w8 bundles, 0 for w8a8 and w4 (and onestep)."),
    from_diffusers: Path | None = typer.Option(None, "--from-diffusers", help="A local Stable Diffusion 1.x/2.x "
                                               "diffusers folder (model_index.json, unet/, vae/, text_encoder/, "
                                               "tokenizer/, scheduler/); needs pip install 'edgesdk[diffusers]'."),
    image_size: int | None = typer.Option(None, "--image-size", help="--from-diffusers: the resolution the graphs "
                                          "are fixed at (default: the UNet's native size, 512 for SD-1.5)."),
    json_out: bool = typer.Option(False, "--json", help="Print the bundle summary as JSON."),
) -> None:
    """Export a model: capture with torch.export, quantize, lower per target, write a verified bundle, check parity."""
    require_extra("export", "export")
    from edgesdk.exporting import export_model
    from edgesdk.quant.configs import Calibration

    log = (lambda _msg: None) if json_out else (lambda msg: typer.echo(msg, err=True))
    named_model = positional_model(family, tuple(FAMILIES))
    if named_model is not None:
        if model is not None:
            raise EdgeSDKError(f"give the model once: '{named_model}' or --model '{model}', not both")
        family, model = None, named_model
    if model is not None:
        from edgesdk.user_model import export_user_model

        if family is not None or from_diffusers is not None:
            raise EdgeSDKError(f"give either a model family ('{family or 'stable-diffusion'}') or --model, not both")
        if image_size is not None:
            raise EdgeSDKError("--image-size applies to --from-diffusers only")
        from edgesdk.user_model import ImagePreprocess

        preprocess = ImagePreprocess(image_resize, _floats(image_mean, "--image-mean"),
                                     _floats(image_std, "--image-std"))
        path = export_user_model(model, output, target, quant=quant or "fp32", calibration=calibration,
                                 overwrite=overwrite, log=log, eval_data=eval_data,
                                 calibration_samples=calibration_samples, preprocess=preprocess, fallback=fallback,
                                 min_top1=min_top1)
        _print_summary(path, json_out)
        return
    if eval_data is not None:
        raise EdgeSDKError("--eval-data applies to your own model (model.pt2 or package.module:factory) only")
    if fallback.strip().lower() != "none" or min_top1 is not None:
        raise EdgeSDKError("--fallback and --min-top1 apply to your own model (model.pt2 or package.module:factory); "
                           "the families ship recipes that meet their floors")
    if from_diffusers is not None:  # the folder names the model: family stable-diffusion, the folder its weights
        if family is not None or weights is not None:
            raise EdgeSDKError("--from-diffusers names the model itself; drop the family / --weights")
        family, weights = "stable-diffusion", from_diffusers
    if family is None:
        raise EdgeSDKError(f"name a model family ({' | '.join(FAMILIES)}) or pass --model "
                           "model.pt2|package.module:factory")
    recipe_calibration = Calibration(samples=calibration_samples, trajectory=calibration_trajectory)
    path = export_model(family, output, target, weights=weights, overwrite=overwrite, quant=quant,
                        calibration=recipe_calibration, log=log, zo_batch=zo_batch, image_size=image_size)
    _print_summary(path, json_out)


# --------------------------------------------------------------------------------------------- runtime


def _print_summary(bundle_path: Path, json_out: bool) -> None:
    import json

    from edgesdk.reporting import bundle_summary, summary_tables

    summary = bundle_summary(bundle_path)
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        summary_tables(summary)


@app.command("inspect")
def inspect_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (NAME.edge)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Components, files, sizes, parity figures and delegation of a bundle (verifies it first)."""
    _print_summary(bundle, json_out)


@app.command("run")
def run_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (NAME.edge)."),
    inputs: list[str] = typer.Option(..., "--input", "-i", help="x.npy, or name=x.npy; repeat per input."),
    component: str | None = typer.Option(None, help="Component to run (default: the bundle's only one)."),
    backend: str = typer.Option("onnx", help="onnx | executorch | tensorrt"),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the outputs to this .npz."),
) -> None:
    """Run one component of any bundle on .npy inputs (the generic path for your own models)."""
    from edgesdk.runtime.generic import run_component
    from edgesdk.runtime.limits import check_output

    if output is not None:
        check_output(output, "--output", inputs=[bundle, *(item.rpartition("=")[2] for item in inputs)])
    outputs = run_component(bundle, inputs, component=component, backend=backend, output=output)
    for name, value in outputs.items():
        typer.echo(f"{name}: shape {tuple(value.shape)} {value.dtype}  min {value.min():.4g}  max {value.max():.4g}  "
                   f"mean {value.mean():.4g}")
    if output:
        typer.echo(f"wrote {output}")


@app.command("sample")
def sample_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (NAME.edge)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt; repeat for several."),
    backend: str = typer.Option("onnx", help="onnx | executorch | tensorrt"),
    steps: int | None = typer.Option(None, help="Denoising steps (default 25; not for one-step bundles)."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    guidance: float | None = typer.Option(None, help="Classifier-free guidance scale (default: the bundle's; not "
                                                     "for one-step bundles)."),
    sampler: str | None = typer.Option(None, help="ddim (default) | dpmpp-2m (not for one-step bundles)"),
    per_prompt: int = typer.Option(1, help="Images per prompt."),
    output: Path = typer.Option(Path("samples.png"), "-o", "--output", help="PNG grid to write."),
    threads: int | None = typer.Option(None, help="CPU threads for the backend."),
    embedding: list[Path] = typer.Option([], "--embedding", help="A learned token (.safetensors from `edgesdk "
                                                                  "personalize`); its <name> works in prompts."),
) -> None:
    """Generate images with the torch-free runtime and save them as a PNG grid (one row per prompt).
    A one-step bundle (family onestep) runs its generator once per image: no steps, sampler or guidance."""
    import time

    from edgesdk.runtime import limits
    from edgesdk.runtime.image import save_grid
    from edgesdk.runtime.personalize import load_tokens
    from edgesdk.runtime.tasks import open_text_to_image

    limits.check_count("--per-prompt", per_prompt, limits.MAX_IMAGES, why="images one command makes")
    limits.check_count("images (prompts x --per-prompt)", len(prompt) * per_prompt, limits.MAX_IMAGES)
    if steps is not None:
        limits.check_count("--steps", steps, limits.MAX_DENOISE_STEPS, why="a schedule's training timesteps")
    limits.check_finite("--guidance", guidance, low=0.0, high=limits.MAX_GUIDANCE)
    limits.check_count("--seed", seed, limits.MAX_SEED, low=0, why="2^53, as edgesdk-run")
    limits.check_threads(threads)
    for words in prompt:
        if len(words) > limits.MAX_PROMPT_CHARS:
            raise EdgeSDKError(f"a prompt of {len(words):,} characters is above the limit of "
                               f"{limits.MAX_PROMPT_CHARS:,}")
    limits.check_output(output, "--output", inputs=[bundle, *embedding])
    start = time.perf_counter()
    pipe = open_text_to_image(bundle, backend=backend, threads=threads)
    size = int(pipe.bundle.model.get("image_size", 0) or 0)
    # the decoded float32 batch and the uint8 grid; the per-image network activations are the backend's
    limits.check_allocation(f"{len(prompt) * per_prompt} images of {size}x{size}", len(prompt) * per_prompt,
                            max(size, 1) ** 2 * 3 * (4 + 1))
    learned: dict = {}
    for path in embedding:
        learned.update(load_tokens(path))
    prompts = [p for p in prompt for _ in range(per_prompt)]
    for words in prompts:
        pipe.tokenizer.embed(words, pipe.token_table, learned)  # a typo fails before any model loads
    pipe.check_sampling(steps, sampler, guidance)  # a one-step bundle refuses them before any model loads
    how = pipe.describe(steps, sampler)
    for component in pipe.sample_components:
        pipe.session(component)
    loaded = time.perf_counter()
    images = pipe.sample(prompts, seed=seed, learned=learned or None, steps=steps, sampler=sampler,
                         guidance_scale=guidance)
    done = time.perf_counter()
    path = save_grid(images, output, columns=per_prompt)
    typer.echo(f"wrote {path}: {len(images)} images, {backend}, {how}; "
               f"loaded in {loaded - start:.2f} s, generated in {done - loaded:.2f} s")


@app.command("personalize")
def personalize_cmd(
    bundle: Path = typer.Argument(..., help="A text-to-image bundle directory (NAME.edge): tiny-sd, or Stable "
                                            "Diffusion from --from-diffusers; w8 is the tested regime."),
    images: Path = typer.Option(..., "--images", help="Folder of the concept's images (read in place, never copied)."),
    token: str = typer.Option(..., "--token", help="The new word, e.g. \"<mything>\"."),
    init_word: str = typer.Option(..., "--init-word", help="A vocabulary word to start from (the concept's class)."),
    steps: int = typer.Option(3000, help="Optimizer steps in total (a resumed run counts its done steps); the lr "
                                         "decays over them. 3000 carry a colour concept on tiny-sd (~14 s)."),
    backend: str = typer.Option("onnx", help="onnx | executorch"),
    output: Path = typer.Option(..., "-o", "--output", help="Learned token file (.safetensors)."),
    resume: bool = typer.Option(False, help="Continue the run whose checkpoint sits next to --output."),
    overwrite: bool = typer.Option(False, help="Start over, replacing --output and its checkpoint."),
    vectors: int = typer.Option(1, help="Embedding vectors for the token (all are trained)."),
    directions: int | None = typer.Option(None, help="Random directions n per step (one-sided: n+1 forwards, "
                                                      "two-sided: 2n; batched). Default: the chosen estimator's."),
    mu: float | None = typer.Option(None, help="Perturbation scale of the gradient estimate. Default: 1e-1 "
                                               "(runtime/personalize.py default_mu says why)."),
    lr: float | None = typer.Option(None, help="ZO-Adam learning rate (peak, with --cosine-lr). Default: the chosen "
                                               "estimator's (the paper's plain recipe: 5e-3)."),
    two_sided: bool | None = typer.Option(None, "--two-sided/--one-sided", help="Antithetic θ ± μu pairs, or the "
                                          "paper's L(θ + μu) − L(θ). Default: the chosen estimator's."),
    draws: int | None = typer.Option(None, help="Samples (image, noise, t) per step sharing the directions. "
                                                "Default: the chosen estimator's."),
    cosine_lr: bool | None = typer.Option(None, "--cosine-lr/--constant-lr", help="Decay the lr to 0 over --steps "
                                          "(cosine). Default: the chosen estimator's."),
    word_directions: bool | None = typer.Option(None, "--word-directions/--all-directions", help="Perturb along the "
                                                "model's word embeddings (word-level vocabularies such as tiny-sd's) "
                                                "or isotropically in the whole space. Default: the chosen "
                                                "estimator's."),
    caption: list[str] | None = typer.Option(None, "--caption", help="A caption template with {} (or the token) "
                                             "where the new word goes; repeat for several. Default: the bundle's "
                                             "language (\"a photo of a {}\", ... for Stable Diffusion; \"a {}\", "
                                             "... for tiny-sd)."),
    seed: int = typer.Option(0, help="Seed of every random draw; the same seed gives the same token."),
    no_sg: bool = typer.Option(False, "--no-sg", help="Ablation: switch Subspace Gradient off."),
    no_puts: bool = typer.Option(False, "--no-puts", help="Ablation: sample t over the whole range, not [0.5T, 0.9T)."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints."),
    time_budget: float | None = typer.Option(None, help="Stop after this many seconds (checkpointed; --resume "
                                                        "goes on)."),
    threads: int | None = typer.Option(None, help="CPU threads for the backend."),
    query_batch: int | None = typer.Option(None, "--query-batch", help="Forward the n+1 queries of a step this "
                                           "many at a time (default: all at once). 1 keeps peak memory lowest "
                                           "(Stable Diffusion at 512 px); on executorch, export with --zo-batch 1 "
                                           "so that no padding row is computed."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Learn a new word from a few images on the device: forward passes of the exported model only, no torch."""
    from edgesdk.progress import TrainProgress
    from edgesdk.runtime import limits
    from edgesdk.runtime.personalize import checkpoint_path_for, personalize
    from edgesdk.runtime.zo import checkpoint_step

    if backend not in ("onnx", "executorch"):
        raise EdgeSDKError(f"--backend {backend!r}: personalization runs on onnx or executorch")
    limits.check_count("--steps", steps, limits.MAX_STEPS)
    limits.check_count("--checkpoint-every", checkpoint_every, limits.MAX_STEPS)
    limits.check_count("--vectors", vectors, limits.MAX_VECTORS)
    if directions is not None:
        limits.check_count("--directions", directions, limits.MAX_DIRECTIONS, why="forwards per step")
    if draws is not None:
        limits.check_count("--draws", draws, limits.MAX_DRAWS)
    limits.check_finite("--mu", mu, low=0.0, high=limits.MAX_STEP_SIZE, low_open=True)
    limits.check_finite("--lr", lr, low=0.0, high=limits.MAX_STEP_SIZE, low_open=True)
    limits.check_count("--seed", seed, limits.MAX_SEED, low=0, why="2^53, as edgesdk-run")
    limits.check_finite("--time-budget", time_budget, low=0.0, high=limits.MAX_TIME_BUDGET_S, low_open=True)
    limits.check_threads(threads)
    if query_batch is not None:
        limits.check_count("--query-batch", query_batch, 2 * limits.MAX_DIRECTIONS + 1)
    limits.check_output(output, "--output", inputs=[bundle, images])
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.runtime.personalize import default_config

    defaults = default_config(Bundle.open(bundle))
    chosen = {"n": directions, "mu": mu, "lr": lr, "two_sided": two_sided, "draws": draws, "cosine_lr": cosine_lr,
              "word_directions": word_directions}
    config = dataclasses.replace(defaults, seed=seed, sg=not no_sg, puts=not no_puts, checkpoint_every=checkpoint_every,
                                 steps=steps, **{k: v for k, v in chosen.items() if v is not None})
    start = checkpoint_step(checkpoint_path_for(output)) if resume else 0
    with TrainProgress(f"personalize {token}", total=steps, start=start) as progress:
        result = personalize(bundle, images, token, init_word, output, steps=steps, backend=backend, config=config,
                             num_vectors=vectors, resume=resume, overwrite=overwrite, threads=threads,
                             time_budget_s=time_budget, on_step=lambda log: progress.update(log.step, log.loss),
                             query_batch=query_batch, captions=caption or None)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if json_out:
        typer.echo(json.dumps({"output": str(output), "token": result.token, "vectors": list(result.vectors.shape),
                               "steps": result.steps, "done": result.steps >= steps, "final_loss": result.final_loss,
                               "images": [str(p) for p in result.images], "checkpoint": str(result.checkpoint),
                               "mu": config.mu, "config": json.loads(config.to_json()), "notes": result.notes}))
        return
    state = "done" if result.steps >= steps else f"stopped at step {result.steps} (time budget; --resume continues)"
    typer.echo(f"wrote {output}: {result.token} ({len(result.vectors)} x {result.vectors.shape[1]}) from "
               f"{len(result.images)} images, {state}; final loss {result.final_loss:.4f}; "
               f"checkpoint {result.checkpoint}")


@app.command("classify")
def classify_cmd(
    bundle: Path = typer.Argument(..., help="A classifier bundle (family bnn)."),
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...); converted and resized as needed."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="Classes to print per image."),
    backend: str = typer.Option("onnx", help="onnx | executorch."),
    json_out: bool = typer.Option(False, "--json", help="Print the predictions as JSON."),
) -> None:
    """Classify images with a bundle (torch-free runtime); prints the top-k classes per image."""
    import json

    from edgesdk.runtime import limits
    from edgesdk.runtime.classify import ImageClassifier

    limits.check_count("images", len(images), limits.MAX_IMAGES)
    limits.check_count("--top-k", top_k, 100_000)
    classifier = ImageClassifier(bundle, backend=backend)
    predictions = classifier.classify(list(images), top_k=top_k)
    # after classifying: a refused image stays a one-line error
    if classifier.kernel_note:
        typer.echo(f"note: {classifier.kernel_note}", err=True)
    if classifier.kernel:
        typer.echo(f"note: convolution kernel: {classifier.kernel}", err=True)
    for p in predictions:
        for note in p.notes:
            typer.echo(f"note: {p.source}: {note}", err=True)
    if json_out:
        typer.echo(json.dumps([{"image": p.source, "top": [{"class": c, "probability": round(q, 6)} for c, q in p.top],
                                "notes": p.notes, "kernel": classifier.kernel} for p in predictions], indent=2))
        return
    for p in predictions:
        typer.echo(f"{p.source}: " + ", ".join(f"{c} {q:.1%}" for c, q in p.top))


@app.command("restore")
def restore_cmd(
    bundle: Path = typer.Argument(..., help="A video-restoration bundle (family viws)."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A video (.mp4, .avi, .mov, .mkv, .webm, .gif) or "
                                                                 "a folder of frames (PNG, JPEG, BMP, TIFF)."),
    output: Path = typer.Option(..., "-o", "--output", help="A video (.mp4, .avi, .mov, .mkv, .webm, .gif) or a "
                                                             "folder name for PNG frames."),
    backend: str = typer.Option("onnx", help="onnx | executorch."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for the backend."),
    side_by_side: Path | None = typer.Option(None, "--side-by-side", help="Also save input | restored of the middle "
                                                                          "frame as a PNG."),
    fps: float | None = typer.Option(None, help="Output frame rate (default: the input's; 25 for a folder)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Remove rain, haze and snow from a video, streaming over a frame window (torch-free runtime)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgesdk.runtime import limits
    from edgesdk.runtime.video import restore_video

    limits.check_threads(threads)
    limits.check_finite("--fps", fps, low=0.0, high=1000.0, low_open=True)
    bar = Progress(TextColumn("restore"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task: list[int] = []

    def progress(done: int, total: int | None) -> None:
        if total is None:
            return  # no total, no bar: the summary line still gives frames/s
        if not task:
            bar.start()
            task.append(bar.add_task("restore", total=total))
        bar.update(task[0], completed=min(done, total))

    try:
        result = restore_video(bundle, input_path, output, backend=backend, threads=threads,
                               side_by_side=side_by_side, fps=fps, progress=progress,
                               log=lambda line: typer.echo(f"note: {line}", err=True))
    finally:
        bar.stop()
    for note in result["notes"]:
        typer.echo(f"note: {note}", err=True)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"wrote {result['output']}: {result['frames']} frames, {result['width']}x{result['height']} at "
               f"{result['fps']:g} fps; {result['frames_per_second']:.1f} frames/s on {result['backend']}")
    if result["side_by_side"]:
        typer.echo(f"wrote {result['side_by_side']}: input | restored, frame {result['side_by_side_frame']}")


@app.command("bench")
def bench_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (NAME.edge)."),
    backend: str = typer.Option("", help="Comma-separated backends (default: every one the bundle has that runs "
                                         "here)."),
    steps: int = typer.Option(25, help="Denoising steps per sample."),
    runs: int = typer.Option(5, help="Full samples timed per backend."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for every backend (default: each backend's "
                                                         "own; set it to compare backends at equal threads)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the JSON here."),
) -> None:
    """Latency p50/p90 per component and per sample, peak RSS and file sizes, each backend in its own process."""
    import json

    from edgesdk.reporting import bench_bundle, bench_tables, write_json
    from edgesdk.runtime import limits

    limits.check_count("--steps", steps, limits.MAX_DENOISE_STEPS)
    limits.check_count("--runs", runs, 10_000)
    limits.check_threads(threads)
    if output:
        limits.check_output(output, "--output", inputs=[bundle])
    results = bench_bundle(bundle, backend, steps=steps, runs=runs, threads=threads)
    if output:
        write_json(output, results)
    if json_out:
        typer.echo(json.dumps(results, indent=2))
    else:
        bench_tables(results)


@app.command("evaluate")
def evaluate_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory (NAME.edge)."),
    backend: str = typer.Option("onnx", help="onnx | executorch | tensorrt"),
    samples: int = typer.Option(100, help="Images to generate and score."),
    steps: int | None = typer.Option(None, help="Denoising steps (default 25; not for one-step bundles)."),
    sampler: str | None = typer.Option(None, help="ddim (default) | dpmpp-2m (not for one-step bundles)"),
    seed: int = typer.Option(0),
    grid: Path | None = typer.Option(None, help="Also save the first 50 images as a PNG grid."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Prompt accuracy: share of samples whose kind/colour/size/background the evaluator reads back."""
    import json

    require_extra("evaluate", "export", modules=("torch",))  # the evaluator network is PyTorch
    from edgesdk.evaluate import prompt_accuracy
    from edgesdk.runtime import limits
    from edgesdk.runtime.image import save_grid

    limits.check_count("--samples", samples, 100_000)
    if steps is not None:
        limits.check_count("--steps", steps, limits.MAX_DENOISE_STEPS)
    if grid:
        limits.check_output(grid, "--grid", inputs=[bundle])
    report, images, _ = prompt_accuracy(bundle, backend=backend, samples=samples, steps=steps, sampler=sampler,
                                        seed=seed)
    if grid:
        save_grid(images[:50], grid, columns=10)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        acc = ", ".join(f"{k} {v:.1%}" for k, v in report.accuracy.items())
        how = "one step" if report.extra["sampler"] == "onestep" else \
            f"{report.extra['sampler']} {report.extra['steps']} steps"
        typer.echo(f"prompt accuracy on {report.samples} samples ({backend}, {how}): {acc}")


def _usage_error(exc: click_exceptions.ClickException) -> str:
    """A typer/click parsing error (an unknown option, ``--steps 2.5``) as one line, like every other user error."""
    message = " ".join(exc.format_message().split())
    context = getattr(exc, "ctx", None)
    where = f" ({context.command_path} --help shows the options)" if context is not None else ""
    return f"error: {message}{where}"


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        # the program's own name in messages ("edgesdk sample --help"), not how Python was started (click would say
        # "python -m edgesdk.cli", or name whatever module imported the CLI)
        code = app(prog_name="edgesdk", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # bare `edgesdk` / `edgesdk train`: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        typer.echo(_usage_error(exc), err=True)
        sys.exit(2 if isinstance(exc, click_exceptions.UsageError) else exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except EdgeSDKError as exc:
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except MemoryError:
        typer.echo("error: out of memory; ask for less (fewer images, smaller inputs, --query-batch 1)", err=True)
        sys.exit(2)
    except OSError as exc:  # the file system said no (disk full, permission, read-only): the user's to fix
        import errno

        if exc.errno == errno.EPIPE:  # `edgesdk ... | head`: the reader left; nothing to report
            sys.exit(1)
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug of ours, not bad input: still one line, with a way to see more
        import os

        if os.environ.get("EDGESDK_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        typer.echo(f"error: internal error ({type(exc).__name__}: {first}); rerun with EDGESDK_DEBUG=1 for the "
                   "traceback and please report it", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
