"""Zero-shot classification with an image-text encoder: prompt ensembles, softmax over scaled cosine similarity."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ml.encoders.base import ImageTextEncoder, TextEncoder, l2_normalise

# A small general-purpose ensemble in the style of CLIP's ImageNet prompts; "{}" is replaced by the label.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a low resolution photo of a {}.",
)
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's learnt temperature ends at its 100 cap; used when an encoder has none


@dataclass(frozen=True)
class ZeroShotResult:
    """Per image: cosine similarity and probability for every label, and the most probable label."""

    labels: list[str]
    similarities: np.ndarray  # [N, C] cosine between image and class embeddings
    probabilities: np.ndarray  # [N, C] softmax(logit_scale * similarities), rows sum to 1
    top_indices: np.ndarray  # [N]
    top_labels: list[str]
    top_probabilities: np.ndarray  # [N]


def build_classifier(
    encoder: TextEncoder, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> np.ndarray:
    """Class embeddings [C, D]: each label's prompts embedded, averaged, and re-normalised (a prompt ensemble).

    Callers may cache the result and pass it to ``classify`` as ``classifier``.
    """
    if not labels:
        raise ValueError("zero-shot classification needs at least one label")
    if not templates or any("{}" not in template for template in templates):
        raise ValueError("every template must contain '{}' where the label goes")
    return prompt_ensembles(encoder, [[template.format(label) for template in templates] for label in labels])


def prompt_ensembles(encoder: TextEncoder, prompts: Sequence[Sequence[str]]) -> np.ndarray:
    """[C, D]: each class's prompts (any number, written out) embedded in one call, averaged and re-normalised."""
    if not prompts or any(not group for group in prompts):
        raise ValueError("every class needs at least one prompt")
    embeddings = l2_normalise(np.asarray(encoder.encode_texts([p for group in prompts for p in group]), np.float32))
    bounds = np.cumsum([0, *(len(group) for group in prompts)])
    return l2_normalise(np.stack([embeddings[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)]))


def probabilities(similarities: np.ndarray, logit_scale: float = DEFAULT_LOGIT_SCALE) -> np.ndarray:
    """Row-wise softmax of ``logit_scale * similarities``, computed stably in float64."""
    logits = logit_scale * np.asarray(similarities, dtype=np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def classify(
    encoder: ImageTextEncoder,
    images: Sequence[Image.Image],
    labels: Sequence[str],
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    classifier: np.ndarray | None = None,
) -> ZeroShotResult:
    """Classify ``images`` among ``labels``; ``classifier`` (from ``build_classifier``) skips re-embedding them."""
    class_embeddings = build_classifier(encoder, labels, templates) if classifier is None else classifier
    if class_embeddings.shape[0] != len(labels):
        raise ValueError(f"classifier has {class_embeddings.shape[0]} classes for {len(labels)} labels")
    image_embeddings = l2_normalise(np.asarray(encoder.encode_images(images), dtype=np.float32))
    similarities = image_embeddings @ class_embeddings.T
    scale = getattr(encoder, "logit_scale", None) or DEFAULT_LOGIT_SCALE
    probs = probabilities(similarities, float(scale))
    top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    return ZeroShotResult(
        labels=list(labels),
        similarities=similarities.astype(np.float32),
        probabilities=probs,
        top_indices=top,
        top_labels=[labels[i] for i in top],
        top_probabilities=probs[np.arange(len(top)), top],
    )
