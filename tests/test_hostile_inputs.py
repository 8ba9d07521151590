"""The Python CLI under hostile arguments and files: every refusal is exit 2 with one `error:` line, nothing hangs,
no input is touched and no output is left half-written. Micro bundles (edgesdk.runtime.testing), in-process calls
of the CLI's entry point: the whole file runs in seconds. (edgesdk-run's twin is runtime/cpp/tests/hostile_cli.py,
under ctest.)"""

from __future__ import annotations

import os
import stat
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesdk.cli import main
from edgesdk.runtime import limits
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file
from edgesdk.runtime.image import read_picture
from edgesdk.runtime.personalize import load_concept_images, load_tokens, save_token
from edgesdk.runtime.testing import write_synthetic_bundle
from tests.fuzz.cases import png_bytes

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_bundle(tmp_path_factory.mktemp("hostile") / "micro.edge")


def cli(capsys: pytest.CaptureFixture[str], *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run `edgesdk ARGS` in this process (as `python -m edgesdk.cli` would) and return (exit code, stderr). A
    watchdog fails the test instead of letting a hang stall the suite."""
    result: dict[str, object] = {}

    def call() -> None:
        saved = sys.argv
        sys.argv = ["edgesdk", *args]
        try:
            main()
            result["code"] = 0
        except SystemExit as exc:
            result["code"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = saved

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"edgesdk {' '.join(args)} still running after {timeout} s"
    return int(result["code"]), capsys.readouterr().err  # type: ignore[call-overload]


def refused(capsys: pytest.CaptureFixture[str], *args: str, says: str = "") -> str:
    code, err = cli(capsys, *args)
    assert code == 2, (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert says.lower() in errors[0].lower(), errors[0]
    return errors[0]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ arguments

@pytest.mark.parametrize(("extra", "says"), [
    (["--threads", "100000"], "--threads 100000 is above the limit"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--per-prompt", "1000000000000"], "--per-prompt"),
    (["--per-prompt", "1e12"], "--per-prompt"),
    (["--steps", "2.5"], "--steps"),
    (["--steps", "1000000"], "--steps 1000000 is above the limit"),
    (["--step", "2"], "no such option: --step"),
    (["--guidance", "nan"], "--guidance must be a finite number"),
    (["--guidance", "inf"], "--guidance must be a finite number"),
])
def test_sample_refuses_bad_arguments(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      extra: list[str], says: str):
    out = tmp_path / "grid.png"
    refused(capsys, "sample", str(bundle), "-p", PROMPT, "-o", str(out), *extra, says=says)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("extra", "says"), [
    (["--directions", "1000000"], "--directions 1000000 is above the limit"),
    (["--mu", "nan"], "--mu must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--time-budget", "nan"], "--time-budget must be a finite number"),
    (["--time-budget", "-1"], "--time-budget must be >"),
    (["--threads", "100000"], "--threads"),
    (["--query-batch", "0"], "--query-batch must be at least 1"),
    (["--steps", "2.5"], "--steps"),
])
def test_personalize_refuses_bad_arguments(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           extra: list[str], says: str):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(images / "a.png")
    out = tmp_path / "out" / "token.safetensors"
    refused(capsys, "personalize", str(bundle), "--images", str(images), "--token", "<me>", "--init-word", "circle",
            "-o", str(out), *extra, says=says)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


# ------------------------------------------------------------------------------------------------ outputs

def test_sample_to_dev_null_writes_the_device_and_keeps_it(bundle: Path, capsys: pytest.CaptureFixture[str]):
    code, err = cli(capsys, "sample", str(bundle), "-p", PROMPT, "--steps", "2", "-o", "/dev/null")
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_sample_to_dev_full_is_a_write_error(bundle: Path, capsys: pytest.CaptureFixture[str]):
    refused(capsys, "sample", str(bundle), "-p", PROMPT, "--steps", "2", "-o", "/dev/full", says="cannot write")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_output_over_an_input_is_refused(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "copy.edge"
    copy.mkdir()
    for name, data in tree(bundle).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    before = tree(copy)
    refused(capsys, "sample", str(copy), "-p", PROMPT, "--steps", "2", "-o", str(copy / "manifest.json"),
            says="input")
    token = tmp_path / "me.safetensors"
    save_token(token, "<me>", np.ones((1, 8), np.float32), {})
    token_bytes = token.read_bytes()
    refused(capsys, "sample", str(copy), "-p", "a <me>", "--embedding", str(token), "--steps", "2", "-o",
            str(token), says="input")
    link = tmp_path / "link.png"
    link.symlink_to(token)
    refused(capsys, "sample", str(copy), "-p", "a <me>", "--embedding", str(token), "--steps", "2", "-o",
            str(link), says="input")
    assert tree(copy) == before and token.read_bytes() == token_bytes


def test_output_that_is_a_fifo_or_folder_is_refused(bundle: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    refused(capsys, "sample", str(bundle), "-p", PROMPT, "--steps", "2", "-o", str(fifo), says="FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    refused(capsys, "sample", str(bundle), "-p", PROMPT, "--steps", "2", "-o", str(folder), says="folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_a_write_error(bundle: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "grid.png").write_bytes(b"previous")
    locked.chmod(0o500)
    try:
        refused(capsys, "sample", str(bundle), "-p", PROMPT, "--steps", "2", "-o", str(locked / "grid.png"),
                says="cannot write")
        assert (locked / "grid.png").read_bytes() == b"previous"
    finally:
        locked.chmod(0o700)


def test_failed_write_leaves_the_previous_file(tmp_path: Path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"previous")
    with pytest.raises(EdgeSDKError, match="cannot write"), atomic_file(path) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")
    assert path.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


# ------------------------------------------------------------------------------------------------ input files

def test_fifo_and_device_inputs_are_refused_without_blocking(bundle: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]):
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    refused(capsys, "sample", str(bundle), "-p", PROMPT, "--embedding", str(fifo), "-o", str(tmp_path / "o.png"),
            says="FIFO")
    zero = tmp_path / "zero.npy"
    zero.symlink_to("/dev/zero")
    refused(capsys, "run", str(bundle), "--component", "vae_decoder", "-i", str(zero), says="device")
    picture = tmp_path / "x.png"
    os.mkfifo(picture)
    with pytest.raises(EdgeSDKError, match="FIFO"):
        read_picture(picture)


def test_bad_embeddings_are_refused_with_the_token_named(bundle: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    token = tmp_path / "nan.safetensors"
    save_token(token, "<me>", np.array([[np.nan] * 8], np.float32), {})
    refused(capsys, "sample", str(bundle), "-p", "a <me>", "--embedding", str(token), "-o", str(tmp_path / "o.png"),
            says="'<me>' holds 8 NaN or infinite")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    refused(capsys, "sample", str(bundle), "-p", PROMPT, "--embedding", str(garbage), "-o", str(tmp_path / "o.png"),
            says="not a learned-token")
    with pytest.raises(EdgeSDKError, match="NaN"):
        save_token(token, "<me>", np.array([[np.inf] * 8], np.float32), {})
        load_tokens(token)


def test_bad_npy_inputs_are_refused(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    latent = ["--component", "vae_decoder", "-i"]
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((1, 4, 4, 4), np.nan, np.float32))
    refused(capsys, "run", str(bundle), *latent, str(nan), says="NaN")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused(capsys, "run", str(bundle), *latent, str(pickled), says="not a plain .npy")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 3, 4, 4), np.float32))
    refused(capsys, "run", str(bundle), *latent, str(wrong), says="shape")
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((1, 4, 4, 4), np.float32))
    before = good.read_bytes()
    refused(capsys, "run", str(bundle), *latent, str(good), "-o", str(good), says="input")
    assert good.read_bytes() == before


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A few dozen bytes whose header claims width x height pixels (a decompression bomb's calling card)."""
    path.write_bytes(png_bytes(width, height, rows=b"\0" * 64))
    return path


def _bmp_claiming(path: Path, width: int, height: int) -> Path:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16)
    return path


@pytest.mark.parametrize("make", [lambda p: _png_claiming(p.with_suffix(".png"), 20000, 20000),
                                  lambda p: _png_claiming(p.with_suffix(".png"), 2**31 - 1, 2**31 - 1),
                                  lambda p: _bmp_claiming(p.with_suffix(".bmp"), 2**30, 2**30)])
def test_image_bombs_are_one_line_and_do_not_sink_the_good_images(tmp_path: Path, make):
    folder = tmp_path / "concept"
    folder.mkdir()
    bomb = make(folder / "bomb")
    Image.new("RGB", (16, 16), (0, 255, 0)).save(folder / "good.png")
    with pytest.raises(EdgeSDKError, match=bomb.name) as refusal:
        read_picture(bomb)
    assert "\n" not in str(refusal.value)
    notes: list[str] = []
    images, used = load_concept_images(folder, 8, notes)
    assert [p.name for p in used] == ["good.png"] and images.shape == (1, 8, 8, 3)
    assert len(notes) == 1 and bomb.name in notes[0]


def test_only_bad_images_is_an_error(tmp_path: Path):
    folder = tmp_path / "concept"
    folder.mkdir()
    _png_claiming(folder / "bomb.png", 20000, 20000)
    os.mkfifo(folder / "pipe.png")
    with pytest.raises(EdgeSDKError, match="no usable images"):
        load_concept_images(folder, 8, [])


# ------------------------------------------------------------------------------------------------ checkpoints

def test_bad_checkpoint_is_refused_and_left_byte_identical(bundle: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(images / "a.png")
    out = tmp_path / "run" / "token.safetensors"
    args = ["personalize", str(bundle), "--images", str(images), "--token", "<me>", "--init-word", "circle",
            "--caption", "a {}", "-o", str(out), "--steps", "2", "--checkpoint-every", "1"]
    code, err = cli(capsys, *args)
    assert code == 0, err
    checkpoint = out.with_name(out.name + ".ckpt.npz")
    with np.load(checkpoint) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["theta"] = np.full_like(arrays["theta"], np.nan)
    with open(checkpoint, "wb") as handle:
        np.savez(handle, **arrays)
    poisoned = checkpoint.read_bytes()
    refused(capsys, *args[:-4], "--steps", "4", "--resume", says="theta")
    assert checkpoint.read_bytes() == poisoned
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    refused(capsys, *args[:-4], "--steps", "4", "--resume", says="checkpoint")
    assert checkpoint.read_bytes() == b"PK\x03\x04 truncated"


# ------------------------------------------------------------------------------------------------ limits

def test_limits_refuse_before_allocating():
    with pytest.raises(EdgeSDKError, match="above the limit"):
        limits.check_allocation("a test batch", 10**12, 1024)
    with pytest.raises(EdgeSDKError, match="whole number"):
        limits.check_count("--steps", 2.5, 10)
    with pytest.raises(EdgeSDKError, match="whole number"):
        limits.check_count("--steps", True, 10)
    assert limits.check_count("--steps", 3.0, 10) == 3
    assert limits.max_threads() >= limits.MAX_THREADS_PER_CPU


def test_restore_refuses_a_wrong_side_by_side_suffix_and_bounds_its_tiling(bundle: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]):
    from edgesdk.runtime.restore import VideoRestorer

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (8, 8)).save(frames / "00001.png")
    refused(capsys, "restore", str(bundle), str(frames), "-o", str(tmp_path / "out.mp4"), "--side-by-side",
            str(tmp_path / "pair.txt"), says="--side-by-side")
    refused(capsys, "restore", str(bundle), str(frames), "-o", str(frames), says="input")
    restorer = object.__new__(VideoRestorer)  # the tile arithmetic only; no bundle needed
    restorer.tile, restorer.overlap = 64, 16
    assert restorer.tiles_per_frame(4000, 4000) == 83 * 83  # stride 48: 82 starts + the edge-aligned one
    assert restorer.tiles_per_frame(10, 10) == 1


def test_cpp_limits_mirror_the_python_ones():
    """runtime/cpp/src/limits.hpp mirrors runtime/limits.py: every C++ bound has a Python twin of the same value
    (kMaxFooBar <-> MAX_FOO_BAR), so the two CLIs refuse at the same numbers."""
    import re

    from edgesdk.runtime import limits

    header = (Path(__file__).parents[1] / "runtime/cpp/src/limits.hpp").read_text(encoding="utf-8")
    found = re.findall(r"constexpr\s+\w+\s+kMax(\w+)\s*=\s*([^;]+);", header)
    assert len(found) >= 10, found
    for name, expression in found:
        python_name = "MAX_" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()
        value = eval(re.sub(r"int64_t\((\d+)\)", r"\1", expression), {})  # integer/float arithmetic only
        assert hasattr(limits, python_name), f"kMax{name} has no twin {python_name} in runtime/limits.py"
        assert getattr(limits, python_name) == value, (python_name, getattr(limits, python_name), value)
