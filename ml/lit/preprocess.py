"""Image preparation for the LiT tower: crop to the product, pad to a square, resize.

Catalog photos put a small product on a wide white background; cropping to the pixels that differ from the
background before resizing gives the tower several times more pixels of the product at the same input size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BACKGROUND_THRESHOLD = 240  # a pixel whose channels are all at least this is background
MARGIN = 0.04  # fraction of the crop's side kept around the product


def crop_to_content(image: Image.Image, *, threshold: int = BACKGROUND_THRESHOLD) -> Image.Image:
    """The smallest square around the non-background pixels (plus a margin), padded with white."""
    rgb = image.convert("RGB")
    pixels = np.asarray(rgb)
    foreground: np.ndarray = np.any(pixels < threshold, axis=2)
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return rgb
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = int(max(bottom - top, right - left) * (1 + 2 * MARGIN)) + 1
    center_y, center_x = (top + bottom) // 2, (left + right) // 2
    square = Image.new("RGB", (side, side), (255, 255, 255))
    box = (center_x - side // 2, center_y - side // 2, center_x - side // 2 + side, center_y - side // 2 + side)
    # Image.crop pads outside the source with black; paste the in-bounds part onto white instead.
    clipped = (max(box[0], 0), max(box[1], 0), min(box[2], rgb.width), min(box[3], rgb.height))
    square.paste(rgb.crop(clipped), (clipped[0] - box[0], clipped[1] - box[1]))
    return square


def pad_to_square(image: Image.Image) -> Image.Image:
    """The whole image centred on a white square (no distortion of non-square photos)."""
    rgb = image.convert("RGB")
    if rgb.width == rgb.height:
        return rgb
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return square


def prepare(image: Image.Image, size: int, *, crop: bool = False) -> np.ndarray:
    """uint8 [size, size, 3]: cropped to the product (if ``crop``) or padded to a square, resized with antialiasing."""
    square = crop_to_content(image) if crop else pad_to_square(image)
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
