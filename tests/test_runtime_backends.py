"""Backend registry, error messages, and the static-batch chunking wrapper."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.runtime import (
    BACKENDS,
    Bundle,
    EdgeSDKError,
    OnnxSession,
    StaticBatchSession,
    open_session,
    register_backend,
)
from edgesdk.runtime.bundle import ComponentInfo, TensorSpec
from edgesdk.runtime.testing import finalize_bundle, write_synthetic_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.open(write_synthetic_bundle(tmp_path_factory.mktemp("b") / "tiny.edge"))


def _static_graph(path: Path, batch: int) -> ComponentInfo:
    """y = 2x + bias, with x of fixed shape (batch, 3): ONNX Runtime refuses any other batch."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "bias"], ["y"])], "static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return ComponentInfo("static", [TensorSpec("x", "float32", ("batch", 3)), TensorSpec("bias", "float32", (3,))],
                         [TensorSpec("y", "float32", ("batch", 3))], {"onnx": path.name})


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_static_batch_chunks_and_drops_padding(tmp_path: Path, rows: int) -> None:
    info = _static_graph(tmp_path / "static.onnx", batch=2)
    inner = OnnxSession(tmp_path / "static.onnx", info)
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    bias = np.array([1, 2, 3], dtype=np.float32)
    if rows != 2:
        with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own shape error: the graph really is static
            inner.run({"x": x, "bias": bias})
    out = StaticBatchSession(inner, 2, info.inputs).run({"x": x, "bias": bias})
    np.testing.assert_allclose(out["y"], 2 * x + bias)


def test_static_batch_rejects_mismatched_batches() -> None:
    class Echo:
        input_names = ["a", "b"]
        output_names = ["a"]

        def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"a": inputs["a"]}

    with pytest.raises(EdgeSDKError, match="batch size"):
        StaticBatchSession(Echo(), 2).run({"a": np.zeros((3, 1)), "b": np.zeros((2, 1))})


def test_onnx_session_runs_and_threads(bundle: Bundle) -> None:
    session = open_session(bundle, "text_encoder", "onnx", threads=1)
    assert session.input_names == ["input_embeddings"] and session.output_names == ["text"]
    out = session.run({"input_embeddings": np.zeros((3, 8, 8), dtype=np.float64)})  # cast to the manifest dtype
    assert out["text"].shape == (3, 8, 8) and out["text"].dtype == np.float32
    with pytest.raises(EdgeSDKError, match=r"needs inputs \['input_embeddings'\]"):
        session.run({"wrong": np.zeros((1, 8, 8))})


def test_unknown_backend_lists_known(bundle: Bundle) -> None:
    with pytest.raises(EdgeSDKError, match="unknown backend 'coreml'.*onnx, executorch, tensorrt"):
        open_session(bundle, "unet", "coreml")


def test_backend_without_file_names_available(bundle: Bundle) -> None:
    with pytest.raises(EdgeSDKError, match="no 'executorch' file for component 'unet'; it has: onnx"):
        open_session(bundle, "unet", "executorch")


def test_tensorrt_without_package_explains() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    from edgesdk.runtime.backends import _tensorrt_factory

    with pytest.raises(EdgeSDKError, match="needs the tensorrt package and an NVIDIA GPU.*build_engines.sh"):
        _tensorrt_factory(None, "unet", None, False)  # type: ignore[arg-type]


def test_register_backend_without_file(bundle: Bundle) -> None:
    class Zeros:
        input_names = ["input_embeddings"]
        output_names = ["text"]

        def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"text": np.zeros_like(inputs["input_embeddings"])}

    register_backend("test-reference", lambda b, name, threads, lean: Zeros(), needs_file=False)
    try:
        session = open_session(bundle, "text_encoder", "test-reference")
        assert session.run({"input_embeddings": np.ones((1, 8, 8))})["text"].sum() == 0
    finally:  # keep the global registry as other tests expect it
        BACKENDS.remove("test-reference")
        from edgesdk.runtime import backends

        del backends._REGISTRY["test-reference"]


def test_lean_memory_session_drops_the_arena_and_matches(bundle: Bundle) -> None:
    from edgesdk.runtime.backends import onnx_session_options

    lean, default = onnx_session_options(lean_memory=True), onnx_session_options()
    assert not lean.enable_cpu_mem_arena and not lean.enable_mem_pattern
    assert default.enable_cpu_mem_arena and default.enable_mem_pattern
    x = np.random.default_rng(1).standard_normal((3, 8, 8)).astype(np.float32)
    outputs = [open_session(bundle, "text_encoder", "onnx", lean_memory=flag).run({"input_embeddings": x})["text"]
               for flag in (True, False)]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_dynamic_max_batch_is_split_without_padding(bundle: Bundle) -> None:
    session = open_session(bundle, "text_encoder", "onnx")  # manifest: dynamic batch max 8
    assert isinstance(session, StaticBatchSession) and session.batch == 8 and not session.pad
    x = np.random.default_rng(0).standard_normal((11, 8, 8)).astype(np.float32)
    raw = OnnxSession(bundle.path_of("onnx/text_encoder.onnx"), bundle.components["text_encoder"])
    np.testing.assert_allclose(session.run({"input_embeddings": x})["text"],
                               raw.run({"input_embeddings": x})["text"], rtol=1e-6, atol=1e-6)


def _rewritten(tmp_path: Path, change: Callable[[dict, Path], None]) -> Bundle:
    root = write_synthetic_bundle(tmp_path / "b.edge")
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest, root)
    finalize_bundle(root, manifest)
    return Bundle.open(root)


def test_a_model_file_must_match_its_manifest_entry(tmp_path: Path) -> None:
    def other_components_file(_manifest: dict, root: Path) -> None:
        shutil.copyfile(root / "onnx/text_encoder.onnx", root / "onnx/unet.onnx")

    bundle = _rewritten(tmp_path / "a", other_components_file)
    with pytest.raises(EdgeSDKError, match=r"components.unet.inputs: lists \['latent', 'text', 'timestep'\], the "
                                           r"model takes \['input_embeddings'\]"):
        open_session(bundle, "unet", "onnx")

    def wrong_output_shape(manifest: dict, _root: Path) -> None:
        manifest["components"]["unet"]["outputs"][0]["shape"] = ["batch", 3, 2, 2]

    bundle = _rewritten(tmp_path / "b", wrong_output_shape)
    with pytest.raises(EdgeSDKError, match=r"components.unet.outputs\[0\].shape: \[batch, 3, 2, 2\], the model's is "
                                           r"\[batch, 4, 4, 4\]"):
        open_session(bundle, "unet", "onnx")

    def wrong_dtype(manifest: dict, _root: Path) -> None:
        manifest["components"]["unet"]["inputs"][1]["dtype"] = "int64"

    bundle = _rewritten(tmp_path / "c", wrong_dtype)
    with pytest.raises(EdgeSDKError, match=r"components.unet.inputs\[1\].dtype: int64, the model's is float32"):
        open_session(bundle, "unet", "onnx")


@pytest.mark.parametrize("change, refusal", [
    (lambda c: c["outputs"][0].update(shape=["batch", 11]),
     r"components.classifier.outputs\[0\].shape: \[batch, 11\], the model's is \[1, 10\]"),
    (lambda c: c["inputs"][0].update(shape=["batch", 1, 9, 9]),
     r"components.classifier.inputs\[0\].shape: \[batch, 1, 9, 9\], the model's is \[1, 1, 8, 8\]"),
    (lambda c: c["inputs"][0].update(dtype="int64"), r"components.classifier.inputs\[0\].dtype: int64, the model's "
                                                     r"is float32"),
    (lambda c: c["outputs"].append({"name": "extra", "dtype": "float32", "shape": ["batch", 10]}),
     r"lists 1 inputs and 2 outputs, but method 'forward' of .* takes 1 and returns 1"),
])
def test_an_executorch_program_must_match_its_manifest_entry(shared: Callable[[str], Path], tmp_path: Path,
                                                            change: Callable[[dict], None], refusal: str) -> None:
    """The Python runtime checks a .pte's methods against the manifest as the C++ runtime does, at open."""
    from tests.bundles import link_bundle

    root = link_bundle(shared("bnn-digits"), tmp_path / "b.edge")
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest["components"]["classifier"])
    (root / "manifest.json").unlink()  # a hard link to the shared bundle's: never written through
    finalize_bundle(root, manifest)
    with pytest.raises(EdgeSDKError, match=refusal):
        open_session(Bundle.open(root), "classifier", "executorch")


def test_run_checks_input_dtype_and_dynamic_range(tmp_path: Path) -> None:
    from edgesdk.runtime.generic import run_component

    root = write_synthetic_bundle(tmp_path / "b.edge")
    path = tmp_path / "x.npy"
    run = lambda: run_component(root, [f"input_embeddings={path}"], component="text_encoder")  # noqa: E731
    np.save(path, np.ones((2, 8, 8), np.int64))
    with pytest.raises(EdgeSDKError, match="holds int64 values; the component takes float32"):
        run()
    for rows in (0, 9):  # the synthetic text encoder takes batch 1..8
        np.save(path, np.ones((rows, 8, 8), np.float32))
        with pytest.raises(EdgeSDKError, match=f"has batch {rows}; the component takes batch 1..8"):
            run()
    np.save(path, np.full((2, 8, 8), 1e300))  # float64 is converted, and must stay finite as float32
    with pytest.raises(EdgeSDKError, match="as float32"):
        run()
    np.save(path, np.ones((2, 8, 8)))
    assert run()["text"].shape == (2, 8, 8)


def test_executorch_binding_import_leaves_no_torch_cache_in_tmpdir(tmp_path: Path) -> None:
    """Importing the binding imports torch._dynamo, which creates $TMPDIR/torchinductor_<user> (a runtime writes
    nothing but its output); checked in a fresh interpreter, since this one may have imported torch already."""
    pytest.importorskip("executorch")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    probe = ("import os; from edgesdk.runtime.executorch_backend import import_bindings; import_bindings(); "
             "import torch._dynamo; print(os.environ.get('TORCHINDUCTOR_CACHE_DIR'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "None"
    assert list(temp.iterdir()) == []
