"""Occlusion maps: where in an image a black-box score comes from (Zeiler & Fergus, ECCV 2014).

Each cell of a grid over the image is covered in turn (a grey patch, slightly larger than the cell so that a thing
on a cell border is hidden too), the image is scored again, and the cell's value is how much the score dropped. Any
model that scores images works, ONNX graphs included (OpenNSFW has no gradients to offer); the cost is one batched
forward pass of ``rows * cols`` images. Values are score drops: positive where covering the cell lowers the score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ml.explain.maps import Heatmap

Scorer = Callable[[Sequence[Image.Image]], np.ndarray]
GREY = (128, 128, 128)


def occlusion_map(
    score: Scorer,
    image: Image.Image,
    *,
    grid: tuple[int, int] = (7, 7),
    overlap: float = 0.25,
    label: str = "",
    model_version: str = "",
) -> tuple[float, Heatmap]:
    """(the image's own score, the occlusion heatmap) for a ``score`` function mapping images to floats [N].

    ``overlap`` widens each patch by that share of a cell on every side.
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"an occlusion grid needs at least one cell, got {grid}")
    picture = image.convert("RGB")
    width, height = picture.size
    cell_w, cell_h = width / cols, height / rows
    covered = []
    for row in range(rows):
        for col in range(cols):
            box = (
                round((col - overlap) * cell_w),
                round((row - overlap) * cell_h),
                round((col + 1 + overlap) * cell_w),
                round((row + 1 + overlap) * cell_h),
            )
            copy = picture.copy()
            ImageDraw.Draw(copy).rectangle(box, fill=GREY)
            covered.append(copy)
    scores = np.asarray(score([picture, *covered]), dtype=np.float64)
    if scores.shape != (1 + rows * cols,):
        raise ValueError(f"the scorer returned shape {scores.shape} for {1 + rows * cols} images")
    drops = (scores[0] - scores[1:]).reshape(rows, cols)
    return float(scores[0]), Heatmap(values=drops, kind="occlusion", label=label, model_version=model_version)
