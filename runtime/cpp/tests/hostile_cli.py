"""edgesdk-run under hostile arguments and files (ctest `hostile_cli`): every refusal is exit 2 with one `error:`
line, in seconds, with no output left behind and the bundle and other inputs untouched; a device given as the
output is written to and stays a device. The Python CLI's twin is tests/test_hostile_inputs.py.

    python hostile_cli.py EDGESDK_RUN FIXTURES_DIR

FIXTURES_DIR is what cpp_fixtures.py wrote (bundles/tiny-sd/tiny-sd.edge, bundles/bnn/bnn.edge). The one-step case
runs when $EDGESDK_TEST_BUNDLES holds onestep.edge (as under `make test`) and says so when it does not.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

TIMEOUT_S = 30


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A few dozen bytes whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def main() -> int:
    run, fixtures = Path(sys.argv[1]), Path(sys.argv[2])
    tiny = fixtures / "bundles" / "tiny-sd" / "tiny-sd.edge"
    bnn = fixtures / "bundles" / "bnn" / "bnn.edge"
    failures: list[str] = []
    count = 0

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(run), *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)

    def refused(says: str, *args: str, untouched: tuple[Path, ...] = (), absent: tuple[Path, ...] = ()) -> None:
        nonlocal count
        count += 1
        before = {path: digest(path) if path.is_dir() else path.read_bytes() for path in untouched}
        try:
            done = call(*args)
        except subprocess.TimeoutExpired:
            failures.append(f"{' '.join(args)}: still running after {TIMEOUT_S} s")
            return
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        problems = []
        if done.returncode != 2:
            problems.append(f"exit {done.returncode}")
        if len(errors) != 1 or says.lower() not in errors[0].lower():
            problems.append(f"expected one error line with {says!r}")
        if "internal" in done.stderr:
            problems.append("internal error")
        for path, was in before.items():
            if (digest(path) if path.is_dir() else path.read_bytes()) != was:
                problems.append(f"{path} changed")
        problems += [f"{path} was written" for path in absent if path.exists() or path.is_symlink()]
        if problems:
            failures.append(f"{' '.join(args)}: {', '.join(problems)}; stderr: {done.stderr.strip()[:400]}")

    with tempfile.TemporaryDirectory(prefix="hostile-cli-") as scratch:
        tmp = Path(scratch)
        out = tmp / "out.png"
        sample = ["sample", str(tiny), "-p", "a red star"]
        refused("unknown option --step", *sample, "--step", "2", "-o", str(out), absent=(out,))
        refused("--steps takes a whole number", *sample, "--steps", "2.5", "-o", str(out), absent=(out,))
        refused("--steps 100000 is above the limit", *sample, "--steps", "100000", "-o", str(out), absent=(out,))
        refused("--backend", *sample, "--backend", "bogus", "-o", str(out), absent=(out,))
        refused("--threads 100000 is above the limit", *sample, "--threads", "100000", "-o", str(out), absent=(out,))
        refused("--guidance takes a finite number", *sample, "--guidance", "nan", "-o", str(out), absent=(out,))
        refused("--seed given 2 times", *sample, "--seed", "1", "--seed", "2", "-o", str(out), absent=(out,))
        refused("--sampler", *sample, "--sampler", "euler", "-o", str(out), absent=(out,))
        refused("inside the bundle", *sample, "-o", str(tiny / "manifest.json"), untouched=(tiny,))
        token = tmp / "me.safetensors"
        save_file({"<me>": np.ones((1, 4), np.float32)}, str(token))
        refused("is the input", *sample, "--embedding", str(token), "-o", str(token), untouched=(token,))
        link = tmp / "link.png"
        link.symlink_to(token)
        refused("is the input", *sample, "--embedding", str(token), "-o", str(link), untouched=(token,))
        fifo = tmp / "fifo.png"
        os.mkfifo(fifo)
        refused("FIFO", *sample, "-o", str(fifo))
        folder = tmp / "folder.png"
        folder.mkdir()
        refused("folder", *sample, "-o", str(folder))
        nan_token = tmp / "nan.safetensors"
        save_file({"<me>": np.full((1, 4), np.nan, np.float32)}, str(nan_token))
        refused("NaN", "sample", str(tiny), "-p", "a <me>", "--embedding", str(nan_token), "-o", str(out),
                absent=(out,))
        fifo_token = tmp / "x.safetensors"
        os.mkfifo(fifo_token)
        refused("FIFO", *sample, "--embedding", str(fifo_token), "-o", str(out), absent=(out,))

        images = tmp / "images"
        images.mkdir()
        Image.new("RGB", (32, 32), (255, 0, 255)).save(images / "good.png")
        png_claiming(images / "bomb.png", 20000, 20000)
        learned = tmp / "run" / "me.safetensors"
        personalize = ["personalize", str(tiny), "--images", str(images), "--token", "<me>", "--init-word", "star"]
        refused("--query-batch 0 is below the minimum", *personalize, "-o", str(learned), "--query-batch", "0",
                absent=(learned,))
        refused("--directions 1000000 is above the limit", *personalize, "-o", str(learned), "--directions",
                "1000000", absent=(learned,))
        refused("--time-budget", *personalize, "-o", str(learned), "--time-budget", "nan", absent=(learned,))
        refused("--lr", *personalize, "-o", str(learned), "--lr", "inf", absent=(learned,))
        refused("inside the input folder", *personalize, "-o", str(images / "me.safetensors"), untouched=(images,))
        refused("device", *personalize, "-o", "/dev/null")

        zero = tmp / "zero.png"
        zero.symlink_to("/dev/zero")
        refused("device", "classify", str(bnn), str(zero))
        refused("FIFO", "classify", str(bnn), str(fifo))
        refused("megapixels", "classify", str(bnn), str(images / "bomb.png"))
        refused("--top-k", "classify", str(bnn), str(images / "good.png"), "--top-k", "0")
        refused("unexpected argument", "verify", str(tiny), "extra")
        refused("unknown command", "frobnicate", str(tiny))

        onestep = Path(os.environ.get("EDGESDK_TEST_BUNDLES", "/nonexistent")) / "onestep.edge"
        if onestep.is_dir():
            refused("one-step bundle", "sample", str(onestep), "-p", "a red star", "--guidance", "3", "-o", str(out),
                    absent=(out,))
        else:
            print(f"not run: --guidance on a one-step bundle (no {onestep})")

        # a device named as the output is written to in place and stays a device; its write error is an error
        count += 2
        done = call(*sample, "--steps", "2", "-o", "/dev/null")
        if done.returncode != 0 or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
            failures.append(f"-o /dev/null: exit {done.returncode}; {done.stderr.strip()[:300]}")
        if Path("/dev/full").exists():
            done = call(*sample, "--steps", "2", "-o", "/dev/full")
            if done.returncode != 2 or "No space" not in done.stderr or not stat.S_ISCHR(os.stat("/dev/full").st_mode):
                failures.append(f"-o /dev/full: exit {done.returncode}; {done.stderr.strip()[:300]}")

        # one image bomb in a concept folder is skipped with a note naming it; the good image beside it is used
        count += 1
        done = call(*personalize, "-o", str(learned), "--steps", "1", "--checkpoint-every", "1")
        notes = [line for line in done.stderr.splitlines() if line.startswith("note:") and "bomb.png" in line]
        if done.returncode != 0 or len(notes) != 1 or not learned.is_file():
            failures.append(f"personalize beside an image bomb: exit {done.returncode}; {done.stderr.strip()[:400]}")

    for failure in failures:
        print("FAIL:", failure)
    print(f"{count - len(failures)} of {count} hostile edgesdk-run cases handled cleanly")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
