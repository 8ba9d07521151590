"""The perceptual colour error personalization is judged by (runtime/metrics.py): CIELAB (D65) and CIEDE2000,
checked against published reference values, and the shape-pixel error on real renders."""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk.data.concepts import CONCEPTS, concept_images
from edgesdk.data.shapes import COLOURS
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.metrics import delta_e2000, shape_colour_error, shape_mask, srgb_to_lab

# CIEDE2000 test pairs (Sharma, Wu and Dalal, 2005): Lab 1, Lab 2, ΔE00
SHARMA_PAIRS = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
                ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
                ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
                ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644)]


def test_ciede2000_matches_the_reference_pairs_both_ways():
    first, second, expected = (np.array(column) for column in zip(*SHARMA_PAIRS, strict=True))
    np.testing.assert_allclose(delta_e2000(first, second), expected, atol=1e-4)
    np.testing.assert_allclose(delta_e2000(second, first), expected, atol=1e-4)
    assert float(delta_e2000(first[0], first[0])) == 0.0


def test_srgb_to_lab_known_colours():
    np.testing.assert_allclose(srgb_to_lab([255, 255, 255]), [100.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab([0, 0, 0]), [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(srgb_to_lab([255, 0, 0]), [53.2408, 80.0925, 67.2032], atol=1e-3)
    assert srgb_to_lab(np.zeros((2, 5, 4, 3), np.uint8)).shape == (2, 5, 4, 3)
    with pytest.raises(EdgeSDKError, match=r"shaped \(\.\.\., 3\)"):
        srgb_to_lab(np.zeros((4, 4)))


@pytest.mark.parametrize("concept", sorted(name for name, c in CONCEPTS.items() if c.colour))
def test_real_renders_are_near_their_colour_and_far_from_every_named_one(concept: str):
    images = concept_images(concept, 6)
    colour = CONCEPTS[concept].rgb
    own = shape_colour_error(images, colour)
    assert own.shape == (6,) and own.mean() < 6.0 and own.max() < 15.0, own  # anti-aliased edges only
    nearest_named = min(shape_colour_error(images, rgb).mean() for rgb in COLOURS.values())
    assert nearest_named > 2 * own.mean() + 5.0, (own.mean(), nearest_named)
    assert all(shape_mask(image).any() for image in images)


def test_bad_images_are_refused():
    with pytest.raises(EdgeSDKError, match=r"\(N, H, W, 3\)"):
        shape_colour_error(np.zeros((32, 32, 3)), (0, 0, 0))
