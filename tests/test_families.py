"""The family registry: every family implements the protocol, and a new one needs one module and one registry line.

The toy family below is what the README's "adding a family" walk-through describes: a module with a `Family`
subclass (here in this test file), registered by one line, exported by the same driver and opened by the runtime's
`open_pipeline` for the task it names, with no other file touched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from edgesdk.export.capture import ComponentSpec
from edgesdk.exporting import export_model
from edgesdk.families import FAMILIES, ExportOptions, Family, Log, get_family
from edgesdk.quant.configs import CONFIGS, QuantConfig
from edgesdk.runtime import ImageClassifier, open_pipeline
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.tasks import TASKS


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).mean(dim=(2, 3)))


class ToyFamily(Family):
    """A three-class 8x8 grey-image classifier with random weights: what adding a family takes."""

    name: ClassVar[str] = "toy"
    runtime_task: ClassVar[str] = "classify"
    recipe_names: ClassVar[tuple[str, ...]] = ("fp32", "w8")

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> nn.Module:
        torch.manual_seed(0)
        return TinyClassifier().eval()

    def components(self, model: nn.Module, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        return [ComponentSpec("classifier", model, (torch.rand(1, 1, 8, 8),), ["image"], ["logits"])]

    def metadata(self, model: nn.Module) -> dict:
        return {"task": "classify", "classes": ["a", "b", "c"], "image_size": 8, "channels": 1, "mean": [0.5],
                "std": [0.25]}


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, "toy", f"{__name__}:ToyFamily")  # the one registry line


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_implements_the_protocol(name: str):
    family = get_family(name)
    assert family.name == name
    assert family.runtime_task in TASKS, f"{name}: no runtime task {family.runtime_task!r}"
    assert family.default_recipe in family.recipe_names
    assert set(family.recipe_names) <= set(CONFIGS)
    for recipe in family.recipe_names:  # each recipe it offers builds a config whose targets it can check
        config = family.recipe(recipe)
        assert config.name == recipe
        config.check_targets(list(config.targets))
    for method in ("load", "components"):  # what no family can inherit
        assert getattr(type(family), method) is not getattr(Family, method), f"{name} does not implement {method}"


def test_a_family_refuses_recipes_and_options_it_does_not_have():
    with pytest.raises(EdgeSDKError, match=re.escape("a bnn bundle takes --quant binary | fp32, not 'w8'")):
        get_family("bnn").recipe("w8")
    with pytest.raises(EdgeSDKError, match="unknown quantization recipe 'int3'"):
        get_family("viws").recipe("int3")
    with pytest.raises(EdgeSDKError, match="--zo-batch 3: viws bundles carry no personalization methods"):
        get_family("viws").check_options(ExportOptions(zo_batch=3), get_family("viws").recipe(None))
    with pytest.raises(EdgeSDKError, match="unknown model family 'toy'"):
        get_family("toy")


def test_a_new_family_is_one_module_and_one_registry_line(toy_registered: None, tmp_path: Path):
    out = export_model("toy", tmp_path / "toy.edge", "onnx", quant="w8", log=lambda _m: None)
    bundle = Bundle.open(out)
    assert bundle.family == "toy" and bundle.manifest["task"] == "classify"
    assert bundle.manifest["quantization"]["recipe"] == "w8"
    classifier = open_pipeline(bundle, backend="onnx")
    assert isinstance(classifier, ImageClassifier)
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    with torch.no_grad():
        reference = ToyFamily().load(ExportOptions(), get_family("toy").recipe(None), print)
        pixels = torch.from_numpy((images.astype(np.float32).transpose(0, 3, 1, 2) / 255 - 0.5) / 0.25)
        expected = reference(pixels).numpy()
    np.testing.assert_allclose(classifier.logits(images), expected, atol=0.05)  # int8 weights: close, not equal


def test_a_bundle_of_another_task_names_the_command_that_serves_it(toy_registered: None, tmp_path: Path):
    from edgesdk.runtime.tasks import open_text_to_image

    out = export_model("toy", tmp_path / "toy.edge", "onnx", log=lambda _m: None)
    expected = "is a 'classify' bundle, not text-to-image; use `edgesdk classify`"
    with pytest.raises(EdgeSDKError, match=re.escape(expected)):
        open_text_to_image(out)


@pytest.mark.parametrize(("manifest", "task"), [
    ({"family": "tiny-sd", "task": "restore"}, "restore"),  # what the manifest says wins
    ({"family": "mine", "model": {"task": "classify"}}, "classify"),  # else the model section's task
    ({"family": "onestep"}, "one-step-text-to-image"),  # else the family's, for bundles from before the field
    ({"family": "synthetic", "model": {"latent_channels": 4}}, "text-to-image"),  # else a latent model samples
    ({"family": "custom", "model": {"source": "model.pt2"}}, "run"),  # else components only
], ids=["manifest", "model", "family", "latent", "run"])
def test_the_task_of_a_bundle(manifest: dict, task: str):
    assert Bundle(Path("x.edge"), {**manifest, "components": {}}).task == task



def test_zo_batch_zero_exports_sampling_only():
    """`--zo-batch 0`: no personalization method (what 4-bit tiny-sd exports need; benchmarks/quantization.py
    exports that way); the default adds one ExecuTorch method at the ZO batch to the text encoder and the UNet."""
    from edgesdk.families.tiny_sd import CFG_BATCH, ZO_BATCH, check_zo_batch, tiny_sd_components
    from edgesdk.zoo.tiny_sd import load_tiny_sd

    model = load_tiny_sd()
    default = {spec.name: spec.extra_batches for spec in tiny_sd_components(model)}
    assert default["unet"] == default["text_encoder"] == (ZO_BATCH,) and ZO_BATCH != CFG_BATCH
    assert all(not spec.extra_batches for spec in tiny_sd_components(model, check_zo_batch(0)))
    with pytest.raises(EdgeSDKError, match="--zo-batch must be between 0"):
        check_zo_batch(-1)
