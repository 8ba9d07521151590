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


def test_continuous_palette_names_only_near_named_shades() -> None:
    from edgesdk.data.shapes import (
        COLOURS,
        MIN_CONTRAST,
        NAMING_DISTANCE,
        UNNAMED_COLOURS,
        nearest_colour_name,
    )
    from edgesdk.runtime.metrics import delta_e2000, srgb_to_lab

    data = ShapesDataset.generate(400, seed=5, palette="continuous")
    free = [s for s in data.specs if s.fill is not None]
    assert 120 < len(free) < 280  # about half the shapes take any shade
    assert {s.colour for s in data.specs if s.fill is None} <= set(COLOURS)  # the rest as before
    words = set(vocabulary())
    for spec in free:
        name, distance = nearest_colour_name(spec.fill)
        assert spec.colour == (name if distance < NAMING_DISTANCE else "")
        assert set(spec.caption().split()) <= words
        assert "colour" not in parse_prompt(spec.caption()) or spec.colour
        assert not spec.hollow or not spec.colour  # an outline only where no colour word is said
        contrast = delta_e2000(srgb_to_lab(np.array(spec.fill)), srgb_to_lab(np.array(COLOURS[spec.background])))
        assert contrast >= MIN_CONTRAST
    assert any(s.hollow for s in free) and any(not s.colour for s in free)
    # every personalization concept's colour is out of reach of the captions: no word names it
    for rgb in UNNAMED_COLOURS.values():
        assert nearest_colour_name(rgb)[1] >= 2 * NAMING_DISTANCE
    from edgesdk.data import ShapeSpec, render

    ring = render(ShapeSpec("circle", "", "large", "center", "white", fill=(250, 110, 190), hollow=True))
    assert ring[16, 16].tolist() == list(COLOURS["white"])  # the middle shows the background
    assert ring[16, 16 + 8].tolist() == [250, 110, 190]  # the outline, 0.55-0.9 of the radius out


def test_generate_rejects_unknown_palette() -> None:
    import pytest

    with pytest.raises(ValueError, match="palette"):
        ShapesDataset.generate(4, palette="rainbow")
