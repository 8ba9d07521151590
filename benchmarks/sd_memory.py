"""Peak memory and time of one personalization step at Stable Diffusion 1.5's size, each method in its own process.

    python benchmarks/sd_memory.py [--sizes 256,512] [--methods zo-onnx,zo-executorch,zo-cpp,ti,ft]
                                   [--workdir build/sd-memory] [--steps 2] [--reuse] [--query-batch 1]

Model: a diffusers folder with SD-1.5's architecture and random weights (``write_random_pipeline(.., "sd-1.5")``:
UNet 860 M parameters, CLIP ViT-L text encoder, the SD VAE); weights do not change memory. Batch 1 (one image per
step), 5 concept images ("pink-star", resized bicubic to the size), placeholder "<c>" initialised from "star".
Graphs are static in spatial size, so each resolution gets its own w8 bundle, and each backend its own bundle (an
ExecuTorch export that fails or times out then costs nothing on the ONNX Runtime side).

Methods:
- ``zo-onnx`` / ``zo-executorch``: one Subspace-Gradient zeroth-order step as `edgesdk personalize --query-batch 1`
  runs it (lean sessions, 2 threads, ``fit_config(ZOConfig(mu=default_mu(bundle)))``: n = 2, so n+1 = 3 queries,
  forwarded ``--query-batch`` at a time: 1 by default, the memory mode; 3 is one batch-3 forward) on the int8-weight
  (w8) bundle, through ``TokenLoss``/``ZOTrainer``. The images are encoded once, one at a time, by the bundle's VAE
  encoder before the first step, their latents cached and the encoder's session closed, as the runtime does. The
  export computes attention as bmm + softmax, one head at a time where the fp32 scores pass 64 MB per row
  (``zoo.diffusers_sd.ExportAttention``: at 512 px the first level's self-attention; nothing at 256 px), each piece
  waiting for the previous one's output so that XNNPACK holds one piece's scores at a time, and keeps
  convolutions whose im2col patches would pass 64 MB as convolutions.
  With --reuse a bundle already in --workdir is used as it is: delete it after a change to the export. The ONNX
  Runtime process imports no torch; the ExecuTorch binding imports torch (a phone linking the C++ runtime does
  not: the `after imports` column shows that floor). On ExecuTorch the diffusers import's w8 rewrites convolutions
  as im2col + linear to quantize them (``W8Config.convolutions_as_linear``), within that 64 MB patch budget.
- ``zo-cpp``: the same step on the same ExecuTorch bundle through the C++ runtime, as an app without Python runs it:
  ``edgesdk-run personalize BUNDLE --images DIR --query-batch Q --threads T --json`` (build it with ``make cpp``),
  the concept images written as PNG at the size first. Its peak is the process's own VmHWM; the steps-only peak and
  the import floor do not apply (nothing is imported; the C++ runtime reports no mid-run reset).
- ``ti``: one backprop Textual-Inversion step, fp32 eager torch (diffusers UNet + CLIP text encoder of the same
  folder through ``load_diffusers_sd``, so both sides compute the same loss). Only the new token's row is trained: a
  separate (1, 768) parameter spliced into the caption's input embeddings, autograd through the frozen text encoder
  and UNet, AdamW on that row (lr 5e-3).
- ``ft``: one full fine-tune step of the UNet, fp32 torch: AdamW (for-loop form, no foreach temporaries) over every
  UNet parameter (lr 1e-4), text encoder frozen, captions with the initializer word, same loss.
Loss, all methods: mean((unet(z_t, t, text_encoder(embeddings with the token row)) - eps)^2), PUTS t in [500, 900).
The torch baselines also precompute the latents before the step (fp32 VAE encoder, one image at a time, no grad) and
then drop the VAE, so their peaks carry no VAE weights; the ZO side keeps its VAE-encoder session open, as the runtime
does. Each step draws image, flip, caption, noise and t from one numpy generator, as the runtime does.

Memory: peak RSS is VmHWM of the child process (``peak_rss_mb``), read after the steps: the whole process, from
loading through latent caching to the last step. `steps-only peak` is VmHWM again after resetting it
(/proc/self/clear_refs) once the model is loaded and the latents cached: the peak of the steps themselves (it starts
from the resident weights). `after imports` is VmRSS once the child has imported its libraries, before any model
loads. Time: median seconds per step over --steps steps after one warm-up step (the warm-up allocates optimizer state
and lets the backends plan their memory). A parent watchdog kills a child whose RSS passes --mem-cap-gb (or when the
machine's available memory runs out) or that runs past --timeout; such a child, or one the OOM killer ends, is
recorded as did not fit / failed with the reason, and the run goes on. FT at a larger size is skipped when the
smaller size's FT peak extrapolates above the cap (static part + 4x activations per doubling of the side).
Writes benchmarks/results/sd_memory.json after every row (atomically; `complete` marks a finished size). Sizes and
methods from earlier runs are kept: a later run replaces only the rows of the methods it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from edgesdk.reporting import write_json

METHODS = ("zo-onnx", "zo-executorch", "zo-cpp", "ti", "ft")
ZO_METHODS = ("zo-onnx", "zo-executorch", "zo-cpp")
BACKEND = {"zo-onnx": "onnx", "zo-executorch": "executorch", "zo-cpp": "executorch"}  # the bundle each one runs
EDGESDK_RUN = Path(__file__).resolve().parent.parent / "runtime" / "cpp" / "build" / "edgesdk-run"
NAMES = {"zo-onnx": "ZO, int8, ONNX Runtime", "zo-executorch": "ZO, int8, ExecuTorch",
         "zo-cpp": "ZO, int8, ExecuTorch, C++",
         "ti": "backprop TI, fp32", "ft": "full UNet fine-tune, fp32"}
TOKEN, INIT_WORD, CONCEPT, IMAGES = "<c>", "star", "pink-star", 5
RESULT_MARK = "SD_MEMORY_RESULT "  # prefix of the child's one result line, so library prints cannot be mistaken for it

CHILD = r"""
import json, statistics, sys, time
method, folder, bundle, size, steps, threads, concept, count, token, init_word, mark, query_batch = sys.argv[1:13]
size, steps, threads, count, query_batch = int(size), int(steps), int(threads), int(count), int(query_batch)
from edgesdk.runtime.bench import peak_rss_mb, resident_mb
from edgesdk.data.concepts import concept_images
import numpy as np
from PIL import Image


def reset_peak():
    # VmHWM restarts from the current RSS, so the next read is the peak of what follows (Linux >= 4.0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def timed(step, count):
    step()  # warm-up: optimizer state, backend memory plans
    seconds = []
    for _ in range(count):
        start = time.perf_counter(); step(); seconds.append(time.perf_counter() - start)
    return seconds


images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                   for im in concept_images(concept, count)])
result = {"images": int(len(images))}
if method.startswith("zo-"):
    from edgesdk.runtime.personalize import TokenLoss, default_mu, fit_config
    from edgesdk.runtime.pipeline import TextToImage
    from edgesdk.runtime.zo import ZOConfig, ZOTrainer
    if method == "zo-executorch":
        import executorch.runtime, torch  # noqa: F401  (the binding's own floor, before any model loads)
    result["after_imports_mb"] = resident_mb()
    pipe = TextToImage(bundle, backend=method[3:], threads=threads, lean_memory=True)  # as `edgesdk personalize`
    problem = TokenLoss(pipe, images, token, query_batch=query_batch)
    config, notes = fit_config(ZOConfig(mu=default_mu(pipe.bundle)), problem.dim)
    trainer = ZOTrainer(problem, config, problem.initial_vector(init_word))
    result.update(config={"n": config.n, "mu": config.mu, "sg": config.sg, "sg_tau": config.sg_tau,
                          "query_batch": query_batch}, notes=notes)
    result["rss_before_steps_mb"] = resident_mb()
    result["setup_peak_mb"] = peak_rss_mb()
    result["steps_peak_measured"] = reset_peak()
    losses = []
    seconds = timed(lambda: losses.append(float(trainer.step().loss)), steps)
else:
    import torch
    from edgesdk.runtime.clip_tokenizer import ClipTokenizer
    from edgesdk.runtime.personalize import TEMPLATES, placeholder_slots
    from edgesdk.zoo.diffusers_sd import load_diffusers_sd, require_diffusers
    require_diffusers()
    import diffusers, transformers  # noqa: F401  (imported here so the floor counts them)
    torch.set_num_threads(threads)  # the same 2 threads the runtime sessions get
    result["after_imports_mb"] = resident_mb()
    model = load_diffusers_sd(folder, image_size=size)
    result["rss_after_load_mb"] = resident_mb()
    unet, text_encoder = model.unet, model.text_encoder
    result["unet_params"] = sum(p.numel() for p in unet.parameters())
    result["text_params"] = sum(p.numel() for p in text_encoder.parameters())
    for module in (unet, text_encoder, model.vae_encoder, model.vae_decoder):
        module.requires_grad_(False)
    pixels = torch.from_numpy(np.concatenate([images, images[:, :, ::-1]]).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():  # cached once, as the runtime does; one image at a time keeps the VAE's peak small
        latents = torch.cat([model.vae_encoder(p[None] / 127.5 - 1.0) for p in pixels]).numpy()
    latents = latents.reshape(2, len(images), *latents.shape[1:])
    model.vae_encoder = model.vae_decoder = None  # the baselines then hold no VAE weights at all
    del pixels
    import gc; gc.collect()
    tokenizer, table = ClipTokenizer(model.tokenizer), model.token_embedding
    rng = np.random.default_rng(0)

    def draw(captions):
        # the runtime's order of draws: image, flip, template, noise, t (TokenLoss.draw)
        image = int(rng.integers(latents.shape[1]))
        flip = bool(rng.random() < 0.5)
        caption = captions[int(rng.integers(len(captions)))]
        noise = rng.standard_normal(latents.shape[2:]).astype(np.float32)
        return latents[int(flip), image], caption, noise, int(rng.integers(500, 900))

    def loss_of(z0, noise, t, text):
        alpha_bar = float(model.alphas_cumprod[t])
        noisy = torch.from_numpy((np.sqrt(alpha_bar) * z0 + np.sqrt(1 - alpha_bar) * noise).astype(np.float32))
        predicted = unet(noisy[None], torch.tensor([float(t)]), text)
        return ((predicted - torch.from_numpy(noise)[None]) ** 2).mean()

    losses = []
    if method == "ti":
        captions = [t.format(token) for t in TEMPLATES]
        vector = torch.nn.Parameter(torch.from_numpy(table[tokenizer.index[init_word]].copy())[None])  # (1, 768)
        optimizer = torch.optim.AdamW([vector], lr=5e-3)

        def step():
            z0, caption, noise, t = draw(captions)
            base, slots = placeholder_slots(tokenizer, table, caption, token, 1)
            embeddings = torch.from_numpy(base).index_copy(0, torch.from_numpy(slots), vector)
            loss = loss_of(z0, noise, t, text_encoder(embeddings[None]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    else:
        captions = [t.format(init_word) for t in TEMPLATES]
        unet.requires_grad_(True)
        unet.train()
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, foreach=False)

        def step():
            z0, caption, noise, t = draw(captions)
            with torch.no_grad():  # frozen text encoder
                text = text_encoder(torch.from_numpy(tokenizer.embed(caption, table))[None])
            loss = loss_of(z0, noise, t, text)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))

    result["rss_before_steps_mb"] = resident_mb()
    result["setup_peak_mb"] = peak_rss_mb()
    result["steps_peak_measured"] = reset_peak()
    seconds = timed(step, steps)
result["peak_rss_mb"] = peak_rss_mb()
result["steps_peak_mb"] = result["peak_rss_mb"] if result["steps_peak_measured"] else None
result["peak_rss_mb"] = max(result["peak_rss_mb"], result["setup_peak_mb"])
result["step_s"] = statistics.median(seconds)
result["step_s_all"] = seconds
result["losses"] = losses
result["torch_imported"] = "torch" in sys.modules
print(mark + json.dumps(result), flush=True)
"""

FOLDER_CHILD = r"""
import sys
from pathlib import Path
from edgesdk.zoo.diffusers_sd import write_random_pipeline
write_random_pipeline(Path(sys.argv[1]), sys.argv[2], seed=0)
"""

EXPORT_CHILD = r"""
import json, sys, time
from pathlib import Path
folder, output, target, size, result_path, zo_batch = sys.argv[1:7]
from edgesdk.exporting import export_diffusers
from edgesdk.runtime.bench import peak_rss_mb
start = time.perf_counter()
export_diffusers(Path(folder), Path(output), targets=target, quant="w8", image_size=int(size), overwrite=True,
                 zo_batch=int(zo_batch), log=lambda m: print(f"[{time.perf_counter() - start:7.0f} s] {m}", flush=True))
Path(result_path).write_text(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))
"""


# ------------------------------------------------------------------------------------------ child processes


def _proc_kb(path: str, field: str) -> int | None:
    """A kB line of a /proc status-style file, or None once the process is gone."""
    try:
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def watched(command: list[str], log: Path, timeout_s: float, cap_mb: float) -> tuple[int, str | None, float]:
    """Run ``command`` with stdout and stderr to ``log``; kill it past the time limit, past ``cap_mb`` of RSS, or
    when the machine's available memory nearly runs out (other jobs share it: better our child than theirs).
    Returns (exit status, why it was killed or None, the largest RSS seen in MB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout_s
        reason, largest = None, 0.0
        while process.poll() is None:
            rss = (_proc_kb(f"/proc/{process.pid}/status", "VmRSS") or 0) / 1024
            available = _proc_kb("/proc/meminfo", "MemAvailable")
            largest = max(largest, rss)
            if time.monotonic() > deadline:
                reason = f"timed out after {timeout_s:.0f} s"
            elif rss > cap_mb:
                reason = f"did not fit: RSS passed the {cap_mb / 1024:.0f} GB cap (killed at {rss:.0f} MB)"
            elif available is not None and available < 400 * 1024:
                reason = f"did not fit: machine memory nearly exhausted (killed at {rss:.0f} MB RSS)"
            if reason:
                process.kill()
                break
            time.sleep(0.5)
        code = process.wait()
    return code, reason, largest


def failure(code: int, reason: str | None, log: Path) -> str:
    """One line saying why a child did not finish: the watchdog's reason, a signal, or its last error line."""
    if reason:
        return reason
    if code < 0:
        return f"killed by signal {-code}" + (" (SIGKILL: most likely the kernel's OOM killer)" if code == -9 else "")
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"failed: {lines[-1].strip() if lines else f'exit status {code}, no output'}"  # a traceback ends with it


def concept_folder(workdir: Path, size: int) -> Path:
    """The benchmark's concept images at ``size`` as PNG (lossless: the C++ runtime reads the pixels the Python
    child resizes to), written once."""
    import numpy as np
    from PIL import Image

    from edgesdk.data.concepts import concept_images

    folder = workdir / f"concept-{CONCEPT}-{size}"
    if not (folder / f"{IMAGES - 1}.png").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(concept_images(CONCEPT, IMAGES)):
            resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
            Image.fromarray(resized).save(folder / f"{i}.tmp.png")
            (folder / f"{i}.tmp.png").replace(folder / f"{i}.png")
    return folder


def run_cpp(bundle: Path, size: int, args: argparse.Namespace) -> dict:
    """One edgesdk-run personalize process: 1 warm-up + --steps steps; the median of the timed ones."""
    log = args.workdir / "logs" / f"zo-cpp-{size}.log"
    if not EDGESDK_RUN.exists():
        return {"status": f"not run: {EDGESDK_RUN} is not built (make cpp)"}
    token = args.workdir / f"cpp-token-{size}.safetensors"
    command = [str(EDGESDK_RUN), "personalize", str(bundle), "--images", str(concept_folder(args.workdir, size)),
               "--token", TOKEN, "--init-word", INIT_WORD, "-o", str(token), "--steps", str(args.steps + 1),
               "--query-batch", str(args.query_batch), "--threads", str(args.threads), "--checkpoint-every",
               str(10**6), "--overwrite", "--json"]
    start = time.perf_counter()
    code, reason, largest = watched(command, log, args.timeout, args.mem_cap_gb * 1024)
    wall = time.perf_counter() - start
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith('{"output"')]
    if code != 0 or reason is not None or not lines:
        return {"status": failure(code, reason, log), "wall_s": wall, "largest_rss_seen_mb": largest, "log": str(log)}
    out = json.loads(lines[-1])
    timed_steps = out["step_s"][1:] or out["step_s"]
    return {"status": "ok", "wall_s": wall, "peak_rss_mb": out["peak_rss_mb"], "steps_peak_mb": None,
            "after_imports_mb": None, "step_s": sorted(timed_steps)[len(timed_steps) // 2],
            "step_s_all": timed_steps, "final_loss": out["final_loss"], "torch_imported": False,
            "config": {"query_batch": args.query_batch}, "command": shlex.join(command)}


def run_method(method: str, folder: Path, bundle: Path | None, size: int, args: argparse.Namespace) -> dict:
    if method == "zo-cpp":
        assert bundle is not None
        return run_cpp(bundle, size, args)
    log = args.workdir / "logs" / f"{method}-{size}.log"
    command = [sys.executable, "-c", CHILD, method, str(folder), str(bundle or "-"), str(size), str(args.steps),
               str(args.threads), CONCEPT, str(IMAGES), TOKEN, INIT_WORD, RESULT_MARK, str(args.query_batch)]
    start = time.perf_counter()
    code, reason, largest = watched(command, log, args.timeout, args.mem_cap_gb * 1024)
    wall = time.perf_counter() - start
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(RESULT_MARK)]
    if code == 0 and reason is None and lines:
        return {"status": "ok", "wall_s": wall, **json.loads(lines[-1][len(RESULT_MARK):])}
    return {"status": failure(code, reason, log), "wall_s": wall, "largest_rss_seen_mb": largest, "log": str(log)}


def ensure_folder(workdir: Path, architecture: str, reuse: bool, timeout_s: float) -> tuple[Path, dict]:
    """The random diffusers folder, written once into a temporary name and renamed, so a half-written one is never
    reused."""
    folder = workdir / architecture
    if reuse and (folder / "model_index.json").exists():
        return folder, {"status": "reused"}
    temp = workdir / f".{architecture}.partial"
    for stale in (temp, folder):
        if stale.exists():
            subprocess.run(["rm", "-rf", "--", str(stale)], check=True)  # only inside the workdir
    print(f"writing the random {architecture} folder to {folder} ...", flush=True)
    start = time.perf_counter()
    log = workdir / "logs" / f"folder-{architecture}.log"
    code, reason, _ = watched([sys.executable, "-c", FOLDER_CHILD, str(temp), architecture], log, timeout_s, 1e9)
    if code != 0 or reason:
        raise SystemExit(f"writing the random folder {failure(code, reason, log)} (log: {log})")
    temp.rename(folder)
    seconds = time.perf_counter() - start
    print(f"  done in {seconds:.0f} s", flush=True)
    return folder, {"status": "written", "seconds": seconds}


def ensure_bundle(folder: Path, out: Path, backend: str, size: int, args: argparse.Namespace) -> dict:
    """A w8 bundle for one backend at one size, exported in a child process under the export time limit."""
    if args.reuse and (out / "manifest.json").exists():
        return {"status": "reused", "path": str(out), "bytes": folder_bytes(out)}
    log = args.workdir / "logs" / f"export-{size}-{backend}.log"
    result_file = args.workdir / "logs" / f"export-{size}-{backend}.json"
    result_file.unlink(missing_ok=True)
    print(f"exporting {out.name} (w8, {backend}, {size} px; log: {log}) ...", flush=True)
    # the ExecuTorch method for the ZO queries at the batch they are forwarded in (ONNX takes any batch)
    command = [sys.executable, "-c", EXPORT_CHILD, str(folder), str(out), backend, str(size), str(result_file),
               str(args.query_batch if args.query_batch < 3 else 3)]
    start = time.perf_counter()
    code, reason, largest = watched(command, log, args.export_timeout, args.mem_cap_gb * 1024)
    seconds = time.perf_counter() - start
    if code == 0 and reason is None and result_file.exists():
        info = {"status": "ok", "path": str(out), "bytes": folder_bytes(out), **json.loads(result_file.read_text())}
        print(f"  done in {seconds:.0f} s, {info['bytes'] / 2**20:.0f} MB, peak {info['peak_rss_mb']:.0f} MB",
              flush=True)
        return info
    status = failure(code, reason, log)
    print(f"  export FAILED after {seconds:.0f} s: {status}", flush=True)
    return {"status": status, "seconds": seconds, "largest_rss_seen_mb": largest, "log": str(log)}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------ the report


def ft_estimate_mb(smaller: dict, side_ratio: float) -> float | None:
    """FT peak at a larger size from a smaller one. What does not grow with the image stays: the import floor, the
    fp32 weights of the UNet and text encoder, and the gradient and two AdamW moments of every UNet weight. (Not
    ``rss_before_steps_mb``: diffusers maps the weight files, so they only become resident when the first step
    touches them.) The rest, activations, grows with the pixel count."""
    if smaller.get("status") != "ok" or "unet_params" not in smaller:
        return None
    static = smaller["after_imports_mb"] + (4 * smaller["unet_params"] + smaller.get("text_params", 0)) * 4 / 2**20
    return static + max(0.0, smaller["peak_rss_mb"] - static) * side_ratio**2


def checks_for(rows: list[dict]) -> list[dict]:
    """The targets, on the whole-process peak and on the steps-only peak, for every ZO backend that ran."""
    peaks = {r["method"]: r for r in rows if r["status"] == "ok"}
    checks = []
    for zo in (m for m in ZO_METHODS if m in peaks):
        for baseline, target in (("ti", 3.0), ("ft", 10.0)):
            for field in ("peak_rss_mb", "steps_peak_mb"):
                name = f"{NAMES[zo]} >= {target:.0f}x below {NAMES[baseline]} ({field.replace('_mb', '')})"
                if not peaks[zo].get(field):
                    checks.append({"name": name, "value": None, "target": target, "met": None,
                                   "why": f"{NAMES[zo]} reports the whole-process peak only"})
                    continue
                if baseline not in peaks or not peaks[baseline].get(field):
                    baseline_row = next((r for r in rows if r["method"] == baseline), None)
                    why = baseline_row["status"] if baseline_row else "not run"
                    checks.append({"name": name, "value": None, "target": target, "met": None, "why": why})
                    continue
                value = peaks[baseline][field] / peaks[zo][field]
                checks.append({"name": name, "value": value, "target": target, "met": value >= target})
    return checks


def print_table(results: dict, sizes: list[str]) -> None:
    print(f"\n{'size':>5s} {'method':27s} {'peak RSS MB':>11s} {'steps-only MB':>13s} {'after imports':>13s} "
          f"{'s / step':>9s} {'vs ZO-onnx':>10s}")
    for size in sizes:
        rows = results["sizes"][size]["rows"]
        zo = next((r for r in rows if r["method"] == "zo-onnx" and r["status"] == "ok"), None)
        for r in rows:
            if r["status"] != "ok":
                print(f"{size:>5s} {NAMES[r['method']]:27s} {r['status']}")
                continue
            steps_only = f"{r['steps_peak_mb']:13.0f}" if r.get("steps_peak_mb") else f"{'-':>13s}"
            ratio = f"{r['peak_rss_mb'] / zo['peak_rss_mb']:9.2f}x" if zo else f"{'-':>10s}"
            floor = f"{r['after_imports_mb']:13.0f}" if r.get("after_imports_mb") else f"{'-':>13s}"
            print(f"{size:>5s} {NAMES[r['method']]:27s} {r['peak_rss_mb']:11.0f} {steps_only} "
                  f"{floor} {r['step_s']:9.1f} {ratio}")
    print()
    for size in sizes:
        for c in results["sizes"][size]["checks"]:
            verdict = (f"not measured ({c['why']})" if c["met"] is None else
                       f"{c['value']:.2f} (target {c['target']:.0f}) -> " +
                       ("met" if c["met"] else f"MISSED by {c['target'] - c['value']:.2f}"))
            print(f"{size} px  {c['name']}: {verdict}")


def machine() -> dict:
    total = _proc_kb("/proc/meminfo", "MemTotal")
    return {"cpu_cores": os.cpu_count(), "ram_gb": round(total / 2**20, 1) if total else None,
            "load_average_at_start": os.getloadavg(), "platform": sys.platform}


def versions() -> dict:
    found = {}
    for name in ("torch", "onnxruntime", "executorch", "diffusers", "transformers", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return {"python": sys.version.split()[0], **found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256", help="image sides in px, comma-separated (e.g. 256,512)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path, default=Path("build/sd-memory"))
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method, after one warm-up step")
    parser.add_argument("--reuse", action="store_true", help="reuse the random folder and bundles in --workdir")
    parser.add_argument("--architecture", default="sd-1.5", help="random pipeline ('tiny' for a smoke test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--query-batch", type=int, default=1,
                        help="ZO methods: queries per forward (1: lowest peak; 3: the n+1 queries as one batch)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per method child")
    parser.add_argument("--export-timeout", type=float, default=2400.0, help="seconds per bundle export")
    parser.add_argument("--retry-exports", action="store_true",
                        help="export a backend again though it failed (an error, not a timeout) at a smaller size")
    parser.add_argument("--mem-cap-gb", type=float, default=22.0, help="a child past this RSS is killed")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "sd_memory.json")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        raise SystemExit(f"--methods: some of {', '.join(METHODS)}, got {args.methods!r}")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: comma-separated integers, got {args.sizes!r}") from None
    if not sizes or args.steps < 1:
        raise SystemExit("need at least one size and --steps >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/sd_memory.py " + shlex.join(sys.argv[1:])

    # sizes from earlier runs are kept (a 512 run with --reuse adds to the 256 results), as long as the model matches
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    if results.get("architecture") != args.architecture:
        results = {}
    results.update({"architecture": args.architecture, "machine": machine(), "versions": versions(),
                    "steps": args.steps, "threads": args.threads, "mem_cap_gb": args.mem_cap_gb})
    results.setdefault("sizes", {})
    results.setdefault("commands", []).append(command)
    start = time.perf_counter()
    folder, results["folder"] = ensure_folder(args.workdir, args.architecture, args.reuse, args.export_timeout)

    for size in sizes:
        size_start = time.perf_counter()
        # rows of methods not run now are kept: a run of one method (say zo-executorch after a fix) adds to the rest
        previous = results["sizes"].get(str(size), {})
        kept = [r for r in previous.get("rows", []) if r["method"] not in methods]
        earlier_commands = previous.get("commands") or ([previous["command"]] if "command" in previous else [])
        exports: dict[str, dict] = dict(previous.get("exports", {}))
        rows: list[dict] = []
        exported_now: set[str] = set()
        for method in methods:
            row: dict = {"method": method, "size": size}
            if method.startswith("zo-"):  # exported just before its row: an export that fails costs the others nothing
                out = args.workdir / f"{args.architecture}-w8-{size}-{BACKEND[method]}.edge"
                failed = [(s, entry["exports"][BACKEND[method]]["status"]) for s, entry in results["sizes"].items()
                          if int(s) < size and entry.get("exports", {}).get(BACKEND[method], {}).get("status", "")
                          .startswith("failed:")]
                backend = BACKEND[method]
                if backend in exported_now:
                    pass  # zo-executorch and zo-cpp run the same bundle: exported (or found) once per run
                elif failed and not args.retry_exports and not (args.reuse and (out / "manifest.json").exists()):
                    # a lowering error is a property of the graph, not of its spatial size: do not pay for it again
                    exports[backend] = {"status": f"not attempted: the {failed[-1][0]} px export of the same graph "
                                                  f"{failed[-1][1]} (--retry-exports tries again)"}
                else:
                    exports[backend] = ensure_bundle(folder, out, backend, size, args)
                exported_now.add(backend)
            smaller = max((r for s, entry in results["sizes"].items() if int(s) < size
                           for r in entry["rows"] if r["method"] == "ft"), key=lambda r: r["size"], default=None)
            estimate = ft_estimate_mb(smaller, size / smaller["size"]) if smaller else None
            if method.startswith("zo-") and exports[BACKEND[method]]["status"] not in ("ok", "reused"):
                row["status"] = f"not run: {BACKEND[method]} export {exports[BACKEND[method]]['status']}"
            elif method == "ft" and estimate is not None and estimate > args.mem_cap_gb * 1024:
                row.update(status=f"skipped: {smaller['size']} px FT extrapolates to {estimate / 1024:.1f} GB "
                                  f"> the {args.mem_cap_gb:.0f} GB cap", estimated_peak_mb=estimate)
            elif method == "ft" and smaller and smaller["status"].startswith(("did not fit", "killed", "skipped")):
                row["status"] = f"skipped: {smaller['size']} px FT already {smaller['status']}"
            else:
                print(f"{size} px  {method} ...", flush=True)
                bundle = Path(exports[BACKEND[method]]["path"]) if method.startswith("zo-") else None
                row.update(run_method(method, folder, bundle, size, args))
                if estimate is not None:
                    row["estimated_peak_mb"] = estimate
            rows.append(row)
            if row["status"] == "ok":
                print(f"{size} px  {method:13s} peak {row['peak_rss_mb']:7.0f} MB  step {row['step_s']:7.1f} s  "
                      f"(child {row['wall_s']:.0f} s)", flush=True)
            else:
                print(f"{size} px  {method:13s} {row['status']}", flush=True)
            # after every row, so a later method that takes the whole machine down leaves these behind
            merged = sorted(kept + rows, key=lambda r: METHODS.index(r["method"]))
            results["sizes"][str(size)] = {"rows": merged, "exports": exports, "checks": checks_for(merged),
                                           "complete": method == methods[-1],
                                           "commands": [*earlier_commands, command],
                                           "seconds": previous.get("seconds", 0.0) + time.perf_counter() - size_start}
            write_json(args.output, results)
        print(f"wrote {args.output} ({size} px took {time.perf_counter() - size_start:.0f} s)", flush=True)

    print_table(results, [str(s) for s in sizes])
    print(f"\ntotal {time.perf_counter() - start:.0f} s; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
