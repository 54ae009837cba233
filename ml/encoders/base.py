"""The one encoder interface every image/text tower implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class TextEncoder(Protocol):
    dim: int

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape [N, dim]."""
        ...


@runtime_checkable
class ImageTextEncoder(TextEncoder, Protocol):
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape [N, dim], in the same space as ``encode_texts``."""
        ...


@runtime_checkable
class PatchEncoder(ImageTextEncoder, Protocol):
    def encode_image_patches(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(global [N, dim], patch tokens [N, rows, cols, dim]) both projected into the joint space and
        L2-normalised, so a patch's dot product with a text embedding is its similarity to that text."""
        ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
