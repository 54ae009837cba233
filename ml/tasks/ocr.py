"""Text inside images, as plain strings for the text pipeline.

The reader is any object with ``read(images) -> [result with .text per image]`` (``ml.detectors.ocr.TextReader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image


class _ReadResult(Protocol):
    @property
    def text(self) -> str | None: ...


class TextReader(Protocol):
    def read(self, images: Sequence[Image.Image]) -> Sequence[_ReadResult]: ...


def read_texts(reader: TextReader, images: Sequence[Image.Image]) -> list[str]:
    """The text read from each image, whitespace-trimmed; an image with no text gives ``""``."""
    results = list(reader.read(images))
    if len(results) != len(images):
        raise ValueError(f"the OCR reader returned {len(results)} results for {len(images)} images")
    return [(result.text or "").strip() for result in results]
