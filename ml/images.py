"""Safe image decoding: every image a user sends passes through ``open_image`` before a model sees it.

The pixel limit is checked from the header, before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000
MAX_BYTES = 20 * 1024 * 1024


class ImageRejected(ValueError):
    """An image that cannot be used; ``reason`` is a stable machine-readable code."""

    reason = "image_invalid"


class ImageTooLarge(ImageRejected):
    reason = "image_too_large"


class ImageUndecodable(ImageRejected):
    reason = "image_undecodable"


def open_image(
    source: bytes | Path | str,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    mode: str = "RGB",
) -> Image.Image:
    """Decode ``source`` (bytes or a path) into a fully loaded ``mode`` image, or raise ``ImageRejected``."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise ImageUndecodable("image is empty")
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that applies; Pillow's bomb check must not fire first with a warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
            image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own header check, for images far above any limit
        raise ImageTooLarge(f"image exceeds the pixel limit of {max_pixels}: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageUndecodable(f"image cannot be decoded: {error}") from error
    return image if image.mode == mode else image.convert(mode)
