"""Files and folders the SDK writes for the user: atomic, and with the permissions a plain open() would give."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesdk.export.bundle_writer import BundleWriter
from edgesdk.quant.onnx_files import save_large
from edgesdk.reporting import write_json
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import atomic_file, atomic_folder, write_bytes
from edgesdk.runtime.image import save_grid
from edgesdk.runtime.personalize import load_tokens, save_token
from edgesdk.runtime.video import write_frames
from edgesdk.runtime.zo import ZOConfig, ZOTrainer
from edgesdk.train.common import atomic_torch_save, save_weights
from tests.test_zo_core import Quadratic


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")))


def assert_plain_file(path: Path, umask: int) -> None:
    assert path.is_file()
    assert mode(path) == 0o666 & ~umask, f"{path.name}: {oct(mode(path))}, expected {oct(0o666 & ~umask)}"


def assert_plain_tree(root: Path, umask: int) -> None:
    """The folder, every folder under it and every file in it."""
    for folder, _, names in os.walk(root):
        assert mode(Path(folder)) == 0o777 & ~umask, f"{folder}: {oct(mode(Path(folder)))}"
        for name in names:
            assert_plain_file(Path(folder, name), umask)


def test_sample_grid_and_json_report(tmp_path: Path, umask: int):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    assert_plain_file(save_grid(images, tmp_path / "out" / "grid.png"), umask)
    assert_plain_file(write_json(tmp_path / "report.json", {"a": 1}), umask)
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "out") == []


def test_personalize_token_and_checkpoint(tmp_path: Path, umask: int):
    token = tmp_path / "me.safetensors"
    save_token(token, "<me>", np.ones((1, 4), np.float32), {"steps": 1})
    assert_plain_file(token, umask)
    trainer = ZOTrainer(Quadratic(d=4), ZOConfig(), np.zeros(4))
    trainer.save(tmp_path / "run.ckpt.npz")
    assert_plain_file(tmp_path / "run.ckpt.npz", umask)
    assert temporaries(tmp_path) == []


def test_train_weights_and_checkpoint(tmp_path: Path, umask: int):
    save_weights({"w": torch.ones(2)}, tmp_path / "weights.safetensors", {"config": {}})
    atomic_torch_save({"step": 1}, tmp_path / "train.ckpt")
    assert_plain_file(tmp_path / "weights.safetensors", umask)
    assert_plain_file(tmp_path / "train.ckpt", umask)
    assert temporaries(tmp_path) == []


def test_video_outputs(tmp_path: Path, umask: int):
    frames = [np.full((8, 8, 3), i * 40, np.uint8) for i in range(3)]
    assert_plain_file(write_frames(tmp_path / "clip.gif", frames, fps=5), umask)
    assert_plain_tree(write_frames(tmp_path / "frames", frames, fps=5), umask)
    assert temporaries(tmp_path) == []


def test_export_bundle_folder(tmp_path: Path, umask: int):
    """The bundle folder, its sub-folders, its files, and ONNX external data moved in from a scratch folder."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    large = save_large(helper.make_model(graph), "model")
    for replacing in (False, True):  # a new bundle, then one replacing it
        writer = BundleWriter(tmp_path / "mine.edge", overwrite=replacing)
        writer.add_onnx("onnx/model.onnx", large if not replacing else helper.make_model(graph).SerializeToString())
        writer.add_array("assets/table.npy", np.zeros(3))
        writer.write_manifest({"family": "custom"})
        bundle = writer.commit()
        assert_plain_tree(bundle, umask)
        assert (bundle / "onnx/model.onnx").exists() and (bundle / "manifest.json").exists()
    assert temporaries(tmp_path) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "out.bin"
    write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_file(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_failed_token_write_keeps_the_old_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import safetensors.numpy

    path = tmp_path / "me.safetensors"
    save_token(path, "<me>", np.ones((1, 4), np.float32), {})

    def half_written(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"garbage")
        raise OSError("no space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_written)
    with pytest.raises(EdgeSDKError, match="cannot write .*no space"):
        save_token(path, "<me>", np.zeros((1, 4), np.float32), {})
    np.testing.assert_array_equal(load_tokens(path)["<me>"], np.ones((1, 4), np.float32))
    assert temporaries(tmp_path) == []


def test_failed_checkpoint_write_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    trainer = ZOTrainer(Quadratic(d=4), ZOConfig(), np.zeros(4))
    path = tmp_path / "run.ckpt.npz"
    trainer.save(path)
    before = path.read_bytes()

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", failing)
    with pytest.raises(EdgeSDKError, match="cannot write checkpoint"):
        trainer.save(path)
    assert path.read_bytes() == before and temporaries(tmp_path) == []


def test_failed_folder_write_keeps_the_old_folder(tmp_path: Path):
    folder = tmp_path / "frames"
    with atomic_folder(folder) as tmp:
        (tmp / "a.png").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_folder(folder) as tmp:
        (tmp / "b.png").write_bytes(b"new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"] and temporaries(tmp_path) == []
    with atomic_folder(folder) as tmp:
        (tmp / "b.png").write_bytes(b"new")
    assert sorted(p.name for p in folder.iterdir()) == ["b.png"] and temporaries(tmp_path) == []


def test_interrupted_bundle_leaves_the_old_one(tmp_path: Path):
    writer = BundleWriter(tmp_path / "mine.edge")
    writer.add_json("config.json", {"v": 1})
    writer.write_manifest({"family": "custom"})
    writer.commit()
    writer = BundleWriter(tmp_path / "mine.edge", overwrite=True)
    writer.add_json("config.json", {"v": 2})
    writer.abort()
    assert json.loads((tmp_path / "mine.edge/config.json").read_text()) == {"v": 1}
    assert temporaries(tmp_path) == []
