"""What `pip install edgesdk` gives: the runtime and its CLI commands without torch; the PyTorch side behind extras.

Two checks: the runtime commands run in this environment with torch blocked (every import of torch is recorded, in
the command's child processes too), and a fresh virtual environment with the core alone samples and personalizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli_without_torch

ROOT = Path(__file__).resolve().parent.parent
# what `pip install <checkout>` reads: the packaging files and the package folders (not .venv, build/, runtime/cpp)
SOURCES = ("pyproject.toml", "README.md", "sdk", "runtime", "export", "quant")
# pip output that means the package registry could not be reached (then the core-install test skips, saying so).
# "from versions: none": no version at all of a dependency, which a reachable registry always has (pip prints only
# that when it does not retry).
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
               "Network is unreachable", "Max retries exceeded", "ConnectTimeoutError", "Read timed out",
               "(from versions: none)")


def _write_images(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = (np.random.default_rng(i).random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def restore_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A viws-family bundle on ONNX Runtime only: a probe that returns the window's centre frame."""
    import torch

    from edgesdk.export.capture import ComponentSpec
    from edgesdk.export.pipeline import export_bundle

    class CentreFrame(torch.nn.Module):
        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            return frames[:, 2] * 1.0

    meta = {"task": "restore", "frames": 5, "tile": 32, "tile_overlap": 8, "weathers": ["rain", "haze", "snow"]}
    spec = ComponentSpec("restorer", CentreFrame().eval(), (torch.rand(1, 5, 3, 32, 32),), ["frames"], ["restored"],
                         static_batch=1, max_batch=4)
    out = tmp_path_factory.mktemp("torch-free") / "restore.edge"
    return export_bundle([spec], family="viws", model_meta=meta, assets={}, targets=["onnx"], output=out,
                         log=lambda _m: None)


def test_runtime_commands_never_import_torch(shared: Callable[[str], Path], restore_bundle: Path, tmp_path: Path):
    tiny_sd, digits = shared("tiny-sd"), shared("bnn-digits")
    images = _write_images(tmp_path / "concept", 3, 32)

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = run_cli_without_torch(*args, tmp_path=tmp_path)
        assert done.returncode == 0, (args[0], done.stderr[-2000:])
        return done

    assert json.loads(cli("inspect", str(tiny_sd), "--json").stdout)["family"] == "tiny-sd"
    cli("sample", str(tiny_sd), "-p", "a red star", "--steps", "2", "-o", str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size == (32, 32)
    token = tmp_path / "token.safetensors"
    done = cli("personalize", str(tiny_sd), "--images", str(images), "--token", "<thing>", "--init-word", "star",
               "--steps", "2", "-o", str(token), "--json")
    assert json.loads(done.stdout)["steps"] == 2 and token.is_file()
    cli("sample", str(tiny_sd), "-p", "a <thing>", "--embedding", str(token), "--steps", "2",
        "-o", str(tmp_path / "learned.png"))
    np.save(tmp_path / "latent.npy", np.zeros((1, 4, 8, 8), np.float32))
    done = cli("run", str(tiny_sd), "--component", "vae_decoder", "-i", str(tmp_path / "latent.npy"),
               "-o", str(tmp_path / "out.npz"))
    assert np.load(tmp_path / "out.npz")["image"].shape == (1, 3, 32, 32)
    bench = json.loads(cli("bench", str(tiny_sd), "--backend", "onnx", "--steps", "1", "--runs", "1", "--json").stdout)
    assert set(bench["backends"]) == {"onnx"} and bench["backends"]["onnx"]["sample"]["p50_ms"] > 0
    top = json.loads(cli("classify", str(digits), str(images / "0.png"), "-k", "2", "--json").stdout)
    assert len(top[0]["top"]) == 2
    done = cli("restore", str(restore_bundle), str(images), "-o", str(tmp_path / "restored"), "--json")
    assert json.loads(done.stdout)["frames"] == 3 and len(list((tmp_path / "restored").iterdir())) == 3


def test_the_torch_blocker_sees_an_import(tmp_path: Path):
    """The check above can fail: a command that needs torch is caught importing it."""
    with pytest.raises(AssertionError, match="edgesdk export tried to import torch"):
        run_cli_without_torch("export", "tiny-sd", "-o", str(tmp_path / "x.edge"), tmp_path=tmp_path)


def test_onnx_graphs_are_read_as_the_onnx_package_reads_them(shared: Callable[[str], Path]):
    """`bench` checks weight residency without the onnx package (not in the core install): its protobuf reader
    must see the operators and weight bytes that onnx does, for every dtype and for real bundle files."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.runtime.memory import read_graph

    def with_onnx(model: onnx.ModelProto) -> tuple[list[str], dict[str, int]]:
        totals: dict[str, int] = {}
        for tensor in model.graph.initializer:
            array = numpy_helper.to_array(tensor)
            totals[str(array.dtype)] = totals.get(str(array.dtype), 0) + int(np.asarray(array).nbytes)
        return [node.op_type for node in model.graph.node], totals

    weights = [helper.make_tensor("i4", TensorProto.INT4, [3, 5], np.arange(15) % 8 - 4),
               helper.make_tensor("u4", TensorProto.UINT4, [7], np.arange(7)),
               helper.make_tensor("i8", TensorProto.INT8, [2, 3], np.arange(6)),
               helper.make_tensor("u8", TensorProto.UINT8, [130], np.arange(130)),
               helper.make_tensor("f16", TensorProto.FLOAT16, [4], np.ones(4, np.float16)),
               helper.make_tensor("bf16", TensorProto.BFLOAT16, [4], np.ones(4)),
               helper.make_tensor("f8", TensorProto.FLOAT8E4M3FN, [4], np.ones(4)),
               numpy_helper.from_array(np.zeros((300, 200), np.int64), "i64"),  # dims past one varint byte
               numpy_helper.from_array(np.zeros((), np.float32), "scalar")]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]),
         helper.make_node("MatMulNBits", ["x"], ["z"], domain="com.microsoft")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], weights)
    model = helper.make_model(graph)
    summary = read_graph(model.SerializeToString())
    assert (summary.op_types, summary.initializer_bytes) == with_onnx(model)
    assert summary.initializer_bytes["int64"] == 480_000
    files = sorted(shared("tiny-sd").rglob("*.onnx"))
    assert files
    for path in files:
        summary = read_graph(path)
        assert (summary.op_types, summary.initializer_bytes) == with_onnx(onnx.load(str(path))), path.name


def _copy_sources(target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "cpp")
    target.mkdir(parents=True)
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def test_core_install_samples_and_personalizes_without_torch(tmp_path: Path):
    """`pip install edgesdk` without extras, in a fresh virtual environment: no torch there, and the CLI samples,
    personalizes and benchmarks an ONNX Runtime bundle; a command that needs an extra names it."""
    from edgesdk.runtime.testing import write_synthetic_bundle

    started = time.perf_counter()
    venv = tmp_path / "core-venv"
    # no pip inside: this process's pip installs into it (--python), which saves seeding one
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile",
         "--disable-pip-version-check", str(_copy_sources(tmp_path / "src"))],
        capture_output=True, text=True, timeout=900, env=env, check=False)
    if install.returncode != 0:
        output = install.stdout + install.stderr
        signs = [line.strip() for line in output.splitlines() if any(sign in line for sign in UNREACHABLE)]
        if signs:
            pytest.skip(f"pip cannot reach the package registry, so no core install could be made: {signs[-1]}")
        pytest.fail(f"pip install of the core failed:\n{output[-3000:]}")
    installed = time.perf_counter()

    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in ('torch', 'onnx', "
                            "'executorch', 'sklearn') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stdout  # not installed, not only unimported

    bundle = write_synthetic_bundle(tmp_path / "synthetic.edge")
    images = _write_images(tmp_path / "concept", 3, 8)

    def edgesdk(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run([str(venv / "bin" / "edgesdk"), *args], capture_output=True, text=True, timeout=300,
                              env=env, cwd=tmp_path, check=False)
        assert done.returncode == code, (args[0], done.stderr[-2000:])
        return done

    edgesdk("sample", str(bundle), "-p", "a red circle", "-p", "a blue square", "--steps", "3",
            "-o", str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size == (8, 16)
    token = tmp_path / "token.safetensors"
    done = edgesdk("personalize", str(bundle), "--images", str(images), "--token", "<thing>", "--init-word",
                   "circle", "--caption", "a {}", "--steps", "3", "-o", str(token), "--json")
    assert json.loads(done.stdout)["steps"] == 3 and token.is_file()
    edgesdk("sample", str(bundle), "-p", "a <thing>", "--embedding", str(token), "--steps", "2",
            "-o", str(tmp_path / "learned.png"))
    bench = json.loads(edgesdk("bench", str(bundle), "--steps", "1", "--runs", "1", "--json").stdout)
    assert bench["backends"]["onnx"]["weight_residency"]["unet"]["file_bytes"]["float32"] > 0
    refused = edgesdk("export", "tiny-sd", "-o", str(tmp_path / "x.edge"), code=2)
    assert refused.stderr.strip() == ("error: 'edgesdk export' needs the export extra (torch, executorch, torchao, "
                                      "onnx, onnxscript not installed): pip install 'edgesdk[export]'")
    print(f"core install {installed - started:.1f} s, commands {time.perf_counter() - installed:.1f} s")


CPP_LIBRARY = os.environ.get("EDGESDK_CPP_LIB")
needs_cpp_library = pytest.mark.skipif(
    not CPP_LIBRARY, reason="needs the C++ runtime's C library (runtime/cpp/build/libedgesdk_c.so): ctest runs this "
                            "test with EDGESDK_CPP_LIB set, after `make cpp` has built it")


@needs_cpp_library
def test_cpp_runtime_sessions_match_the_python_binding(shared: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch):
    """The ctypes session over the C++ runtime gives what the executorch Python binding gives, on every component
    (batch methods and the 1-bit container included)."""
    from edgesdk.runtime.backends import open_session
    from edgesdk.runtime.bundle import Bundle

    rng = np.random.default_rng(0)
    for name in ("tiny-sd", "bnn-digits"):
        bundle = Bundle.open(shared(name))
        for component, info in bundle.components.items():
            # tiny-sd: 1 is padded to the static batch 2, 3 runs the personalization method, 4 runs in two chunks
            for batch in (1, 3, 4):
                feeds = {spec.name: (np.full([batch], 500.0, np.float32) if spec.name == "timestep" else
                                     rng.standard_normal([batch if isinstance(d, str) else d for d in spec.shape])
                                     .astype(np.float32)) for spec in info.inputs}
                results, exact = {}, {}
                for runtime in ("cpp", "python"):
                    monkeypatch.setenv("EDGESDK_EXECUTORCH_RUNTIME", runtime)
                    session = open_session(bundle, component, "executorch")
                    results[runtime] = session.run(feeds)
                    exact[runtime] = getattr(session, "inner", session).exact_batches  # under the static-batch wrapper
                assert exact["cpp"] == exact["python"], (name, component)
                for output, value in results["python"].items():
                    np.testing.assert_allclose(results["cpp"][output], value, rtol=0, atol=1e-5,
                                               err_msg=f"{name} {component} batch {batch}")


@needs_cpp_library
def test_executorch_commands_run_without_torch_on_the_cpp_runtime(shared: Callable[[str], Path], tmp_path: Path):
    tiny_sd = shared("tiny-sd")
    cpp = {"EDGESDK_EXECUTORCH_RUNTIME": "cpp", "EDGESDK_CPP_LIB": str(CPP_LIBRARY)}
    done = run_cli_without_torch("sample", str(tiny_sd), "-p", "a red star", "--steps", "3", "--backend", "executorch",
                                 "-o", str(tmp_path / "cpp.png"), tmp_path=tmp_path, env=cpp)
    assert done.returncode == 0, done.stderr[-2000:]
    # the same sample through the Python binding, in this process (it has torch already): what `sample` writes
    from edgesdk.runtime import TextToImage, save_grid

    save_grid(TextToImage(tiny_sd, backend="executorch").sample(["a red star"], seed=0, steps=3), tmp_path / "py.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cpp.png")), np.asarray(Image.open(tmp_path / "py.png")))
    images = _write_images(tmp_path / "concept", 3, 32)
    done = run_cli_without_torch("personalize", str(tiny_sd), "--images", str(images), "--token", "<thing>",
                                 "--init-word", "star", "--steps", "2", "--backend", "executorch",
                                 "-o", str(tmp_path / "token.safetensors"), "--json", tmp_path=tmp_path, env=cpp)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["steps"] == 2
    done = run_cli_without_torch("bench", str(tiny_sd), "--steps", "1", "--runs", "1", "--json", tmp_path=tmp_path,
                                 env=cpp)
    assert done.returncode == 0, done.stderr[-2000:]
    bench = json.loads(done.stdout)["backends"]
    assert set(bench) == {"executorch", "onnx"} and bench["executorch"]["sample"]["p50_ms"] > 0
