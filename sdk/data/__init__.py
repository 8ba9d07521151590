"""Data that needs no download: procedural captioned shapes (and, later, weather clips)."""

from edgesdk.data.shapes import (
    ATTRIBUTES,
    COLOURS,
    IMAGE_SIZE,
    KINDS,
    ShapesDataset,
    ShapeSpec,
    parse_prompt,
    random_caption,
    random_spec,
    render,
    vocabulary,
)

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "IMAGE_SIZE",
    "KINDS",
    "ShapeSpec",
    "ShapesDataset",
    "parse_prompt",
    "random_caption",
    "random_spec",
    "render",
    "vocabulary",
]
