import numpy as np

from edgesdk.data import ATTRIBUTES, ShapesDataset, parse_prompt, random_spec, vocabulary
from edgesdk.data.shapes import random_caption


def test_dataset_is_deterministic_from_seed():
    a, b = ShapesDataset.generate(16, seed=3), ShapesDataset.generate(16, seed=3)
    assert np.array_equal(a.images, b.images) and a.specs == b.specs
    c = ShapesDataset.generate(16, seed=4)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (16, 3, 32, 32) and a.images.min() >= -1 and a.images.max() <= 1


def test_shape_differs_from_background_and_is_drawn():
    data = ShapesDataset.generate(32, seed=0)
    for image, spec in zip(data.images, data.specs, strict=True):
        assert spec.colour != spec.background
        # the corner pixel is background; some pixel differs from it (the shape was drawn)
        assert np.abs(image - image[:, :1, :1]).max() > 0.3


def test_captions_use_only_vocabulary_words_and_parse_back():
    rng = np.random.default_rng(0)
    words = set(vocabulary())
    for _ in range(200):
        spec = random_spec(rng)
        caption = random_caption(spec, rng)
        assert set(caption.split()) <= words
        parsed = parse_prompt(caption)
        assert parsed["kind"] == spec.kind and parsed["colour"] == spec.colour
        full = parse_prompt(spec.caption())
        assert full == {name: getattr(spec, name) for name in ATTRIBUTES}


def test_parse_prompt_reads_background_separately():
    assert parse_prompt("a red star on a blue background") == {"kind": "star", "colour": "red", "background": "blue"}
