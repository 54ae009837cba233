"""The jobs app's adapter to the ML core: plain inputs in, plain results out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ml
from apps.registry.models import ModelVersion
from ml.specs import ModelSpec


@dataclass(frozen=True)
class TextEmbeddings:
    dim: int
    vectors: list[list[float]]


def embed_texts(
    *, model_version: ModelVersion, texts: list[str], on_progress: Callable[[int, int], None]
) -> TextEmbeddings:
    encoder = ml.load(model_version.name, spec=ModelSpec.from_dict(model_version.spec))
    vectors = encoder.encode_texts(texts, on_progress=on_progress)
    return TextEmbeddings(dim=int(vectors.shape[1]), vectors=vectors.round(6).tolist())
