"""Occlusion maps point at what a score depends on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ml.explain.occlusion import occlusion_map


def redness(images: Sequence[Image.Image]) -> np.ndarray:
    """A transparent scorer: the share of strongly red pixels."""
    scores = []
    for image in images:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
        scores.append(red.mean())
    return np.asarray(scores)


def test_the_map_is_hot_where_the_scored_thing_is() -> None:
    image = Image.new("RGB", (140, 140), "white")
    ImageDraw.Draw(image).rectangle((100, 20, 125, 45), fill="red")  # top right: row 0-2, col 5-6 of a 7 x 7 grid

    score, heatmap = occlusion_map(redness, image, label="red", model_version="test@1")

    assert score == pytest.approx(26 * 26 / 140**2)
    assert heatmap.kind == "occlusion" and heatmap.grid == (7, 7) and heatmap.label == "red"
    row, col = np.unravel_index(int(np.argmax(heatmap.values)), heatmap.grid)
    assert row <= 2 and col >= 5
    assert heatmap.values[5:, :3].max() == 0.0, "covering empty white corners changes nothing"


def test_a_scorer_with_the_wrong_output_is_refused() -> None:
    with pytest.raises(ValueError, match="returned shape"):
        occlusion_map(lambda images: np.zeros(3), Image.new("RGB", (32, 32)), grid=(2, 2))
    with pytest.raises(ValueError, match="at least one cell"):
        occlusion_map(redness, Image.new("RGB", (32, 32)), grid=(0, 3))
