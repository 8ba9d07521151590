"""The standard-architecture zoo: the photo image set, the real torchvision / timm definitions, the brief training
and its cache (micro configurations: a few steps at 32-48 px), and the one-line error without torchvision."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesdk.data.photos as photos
from edgesdk.data.photos import CLASSES, PhotoShapes, make_image, write_image_folder, write_npz
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.train.standard import (
    TRAINING_OPTIONS,
    StandardTrainConfig,
    config_for,
    ensure_trained,
    learning_rate,
    train_standard,
    training_record,
)
from edgesdk.user_model import ImagePreprocess, load_image_folder
from edgesdk.zoo import standard
from edgesdk.zoo.standard import build_architecture, load_standard, vision_libraries

# a few steps at 32 px, the last ones at 48: seconds on one core, every branch of the training loop
MICRO = {"steps": 6, "batch": 4, "image_size": 32, "full_size_steps": 2, "full_size": 48, "warmup_steps": 2,
         "bn_images": 8, "eval_images": 8, "checkpoint_every": 3}


@pytest.fixture(autouse=True)
def one_thread():
    """Training is reproducible at a given thread count; the worker's own count comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_image_set_is_deterministic_labelled_and_split_by_pixels(monkeypatch: pytest.MonkeyPatch):
    first, labels = PhotoShapes("train", seed=3).images(5, 6, 40)
    again, labels_again = PhotoShapes("train", seed=3).images(5, 6, 40)
    assert first.shape == (6, 40, 40, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(labels, labels_again)
    # an image is a function of its index alone, not of where a batch starts
    np.testing.assert_array_equal(make_image("train", 3, 7, 40)[0], first[2])
    assert not np.array_equal(PhotoShapes("held_out", seed=3).images(5, 6, 40)[0], first)
    assert not np.array_equal(PhotoShapes("train", seed=4).images(5, 6, 40)[0], first)
    _, many = PhotoShapes("train").images(0, 120, 16)
    assert len(CLASSES) == 10 and set(many.tolist()) == set(range(10))  # every class is drawn

    # a photo whose brightness is its column: held-out crops come from the right 30 %, training crops from the left
    ramp = np.broadcast_to(np.linspace(0, 255, 640, dtype=np.float32)[None, :, None], (427, 640, 3))
    monkeypatch.setattr(photos, "sample_photos", lambda: (np.ascontiguousarray(ramp).astype(np.uint8),))
    monkeypatch.setattr(photos, "JITTER", 0.0)
    edge = 0.7 * 255
    for index in range(8):
        assert np.median(make_image("train", 0, index, 32)[0][..., 1]) < edge
        assert np.median(make_image("held_out", 0, index, 32)[0][..., 1]) >= edge - 1

    with pytest.raises(EdgeSDKError, match="split must be one of"):
        PhotoShapes("test")


def test_folder_and_npz_writers_give_what_the_export_reads(tmp_path: Path):
    paths = write_image_folder(tmp_path / "photos", 8, size=32)
    assert [p.name for p in sorted((tmp_path / "photos").iterdir())] == [p.name for p in paths]
    assert not list(tmp_path.glob(".*"))  # no temporary left beside it
    images, labels = PhotoShapes("held_out").images(0, 8, 32)
    assert all(CLASSES[label].replace(" ", "-") in p.name for p, label in zip(paths, labels, strict=True))

    spec = type("Spec", (), {"example_inputs": (torch.zeros(8, 3, 32, 32),), "static_batch": 8})()
    preprocess = ImagePreprocess(resize=32, mean=photos.IMAGENET_MEAN, std=photos.IMAGENET_STD)
    (batch,), = load_image_folder(tmp_path / "photos", spec, preprocess)
    np.testing.assert_allclose(batch.numpy(), photos.normalised(images), atol=1e-5)

    with np.load(write_npz(tmp_path / "photos.npz", 8, size=32)) as data:
        np.testing.assert_allclose(data["image"], batch.numpy(), atol=1e-5)
        np.testing.assert_array_equal(data["label"], labels)
    with pytest.raises(EdgeSDKError, match="at least 1"):
        write_image_folder(tmp_path / "none", 0)


def test_architectures_are_the_libraries_own():
    torchvision, timm = vision_libraries()
    expected = {"resnet18": (torchvision.models.ResNet, 11_181_642),
                "mobilenet_v2": (torchvision.models.MobileNetV2, 2_236_682),
                "mobilenet_v3_small": (torchvision.models.MobileNetV3, 1_528_106),
                "efficientnet_b0": (torchvision.models.EfficientNet, 4_020_358),
                "deit_tiny": (timm.models.vision_transformer.VisionTransformer, 5_526_346)}
    assert set(expected) == set(standard.ARCHITECTURES)
    for arch, (cls, parameters) in expected.items():
        model = build_architecture(arch)
        assert type(model) is cls, arch
        assert sum(p.numel() for p in model.parameters()) == parameters, arch
    # training turns efficientnet's stochastic depth off (inactive in eval mode, so the definition is the same)
    depth = [m.p for m in build_architecture("efficientnet_b0", **TRAINING_OPTIONS["efficientnet_b0"]).modules()
             if type(m).__name__ == "StochasticDepth"]
    assert depth and set(depth) == {0.0}
    assert "training_options" in training_record("efficientnet_b0", config_for("efficientnet_b0"))
    assert "training_options" not in training_record("resnet18", config_for("resnet18"))
    with pytest.raises(EdgeSDKError, match="unknown standard architecture 'resnet50'"):
        build_architecture("resnet50")


def test_training_is_cached_resumable_and_what_the_factory_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDGESDK_CACHE", str(tmp_path / "cache"))
    cfg = config_for("mobilenet_v3_small", **MICRO)
    with pytest.raises(EdgeSDKError, match="edgesdk train standard mobilenet_v3_small"):
        standard.mobilenet_v3_small()
    messages: list[str] = []
    path = ensure_trained("mobilenet_v3_small", cfg, log=messages.append)
    assert path == tmp_path / "cache" / "standard" / "mobilenet_v3_small.safetensors"
    assert any("BatchNorm layers re-estimated" in m for m in messages)
    stamp = path.stat().st_mtime_ns
    messages.clear()
    ensure_trained("mobilenet_v3_small", cfg, log=messages.append)
    assert path.stat().st_mtime_ns == stamp and "cached" in messages[0]

    model, example, (inputs, outputs) = standard.mobilenet_v3_small()
    assert not model.training and example[0].shape == (8, 3, 224, 224) and (inputs, outputs) == (["image"], ["logits"])
    with torch.no_grad():
        assert model(example[0]).shape == (8, len(CLASSES))
    _, metadata = load_standard("mobilenet_v3_small")
    assert metadata["train_config"]["steps"] == 6 and 0.0 <= metadata["held_out_accuracy"] <= 1.0

    # killed after its step-3 checkpoint, a run resumes there and ends where an uninterrupted one does
    def killed_at_the_end(message: str) -> None:
        if "step 6/6" in message:
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_standard("mobilenet_v3_small", resumed, cfg, log=killed_at_the_end)
    assert resumed.with_suffix(".ckpt").exists() and not resumed.exists()
    messages.clear()
    train_standard("mobilenet_v3_small", resumed, cfg, log=messages.append)
    assert "resuming at step 3" in messages[0] and not resumed.with_suffix(".ckpt").exists()
    reference, _ = load_standard("mobilenet_v3_small", path)
    again, _ = load_standard("mobilenet_v3_small", resumed)
    for (name, a), b in zip(reference.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_the_full_size_phase_can_restart_the_schedule():
    """With full_size_lr the last phase gets its own warm-up and cosine; without it one cosine spans all steps, and
    the cache key of weights trained before the option existed is unchanged."""
    single = StandardTrainConfig(steps=100, lr=1e-3, warmup_steps=10, full_size_steps=20)
    restart = dataclasses.replace(single, full_size_lr=4e-4, full_size_warmup_steps=5)
    assert not single.restarts and restart.restarts
    rates = [learning_rate(restart, step) for step in range(100)]
    assert rates[9] == pytest.approx(1e-3) and rates[79] < 1e-6  # the first cosine ends at the switch
    assert rates[80] == pytest.approx(4e-4 / 5) and rates[84] == pytest.approx(4e-4) and rates[99] < 1e-5
    assert learning_rate(single, 80) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 70 / 90)))
    assert "full_size_lr" not in training_record("resnet18", single)
    assert training_record("resnet18", restart)["full_size_lr"] == 4e-4
    with pytest.raises(EdgeSDKError, match="full_size_warmup_steps"):
        dataclasses.replace(restart, full_size_warmup_steps=21)


def test_vit_trains_across_resolutions(tmp_path: Path):
    """deit_tiny moves from a 2x2 to a 3x3 patch grid mid-training, restarting its schedule there with fresh
    optimizer moments, and is saved with the 14x14 table of 224 px."""
    cfg = config_for("deit_tiny", **{**MICRO, "steps": 4, "batch": 2, "eval_images": 2, "full_size_warmup_steps": 1})
    assert cfg.restarts
    messages: list[str] = []
    metadata = train_standard("deit_tiny", tmp_path / "deit.safetensors", cfg, log=messages.append)
    assert any("step 3: the schedule restarts at 48 px" in m and "moments reset" in m for m in messages)
    assert metadata["measured_at_px"] == 48 and metadata["input_size"] == 224
    model, _ = load_standard("deit_tiny", tmp_path / "deit.safetensors")
    assert model.pos_embed.shape == (1, 1 + 14 * 14, 192)


def test_missing_vision_libraries_are_one_line_errors(monkeypatch: pytest.MonkeyPatch):
    for missing in ("torchvision", "timm"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, missing, None)  # what an absent package looks like to import
            with pytest.raises(EdgeSDKError) as error:
                build_architecture("resnet18")
        message = str(error.value)
        assert "\n" not in message and missing in message
        assert "pip install --no-deps torchvision==0.29.1 timm==1.0.31" in message
