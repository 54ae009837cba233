"""Exact nearest neighbours by dot product (cosine for the L2-normalised vectors every encoder here returns), and the
catalog index that product search ranks with.

``CatalogIndex`` holds a catalog's image embeddings and two things computed once when the catalog is indexed:

- **text -> image: each image's hubness.** In a shared embedding space some images sit close to many texts and
  crowd every query's top results ("hubs"). The index scores a query ``q`` against image ``i`` by the inverted
  softmax (Smith et al. 2017; QB-Norm, Bogolin et al. 2022): ``cos(q, i) - log(sum_b exp(s * cos(b, i))) / s``
  over a bank of texts ``b``, at the encoder's own logit scale ``s``. An image that matches every text well is
  pulled back; one that matches few is left where it is. The bank is the catalog's own texts (its titles), which a
  shop has whenever it indexes a catalog.
- **image -> image: look-alike attributes.** A shopper asking for "more like this" wants the same kind of product
  in the same colour. The index classifies every image zero-shot over the catalog's values of the look-alike
  attributes (articleType and baseColour for a fashion catalog) and adds to the cosine of two images the
  probability that they agree on all of them: ``cos(i, j) + prod_a p_a(i) . p_a(j)``.

Without a bank or attributes each part falls back to the plain cosine. docs/ml.md has the measured effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ml.encoders.base import TextEncoder
from ml.tasks.zero_shot import DEFAULT_LOGIT_SCALE, probabilities


def top_k(query_vectors: np.ndarray, index_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [Q, k'], scores [Q, k']) of the best ``k' = min(k, N)`` index rows for each query, best first.

    Exact: every score is computed. Ties keep index order (the lower index first), so results are reproducible.
    """
    queries = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
    index = np.atleast_2d(np.asarray(index_vectors, dtype=np.float32))
    if queries.shape[1] != index.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {index.shape[1]}")
    return best_k(queries @ index.T, k)


def best_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [Q, k'], scores [Q, k']) of the ``k' = min(k, N)`` highest of each row of ``scores`` [Q, N], best
    first; ties keep index order, as in ``top_k``."""
    scores = np.atleast_2d(scores)
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    count = min(k, scores.shape[1])
    indices = np.empty((scores.shape[0], count), dtype=np.int64)
    for row, row_scores in enumerate(scores):
        if count < len(row_scores):
            # Partition first (linear time), then order only the candidates: everything at or above the k-th best
            # score, so tied candidates at the cut-off are all considered and the lowest indices win.
            threshold = np.partition(row_scores, len(row_scores) - count)[len(row_scores) - count]
            candidates = np.flatnonzero(row_scores >= threshold)
        else:
            candidates = np.arange(len(row_scores))
        order = np.lexsort((candidates, -row_scores[candidates]))
        indices[row] = candidates[order[:count]]
    return indices, np.take_along_axis(scores, indices, axis=1)


def search_texts_to_images(
    encoder: TextEncoder, texts: Sequence[str], image_vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``texts`` with ``encoder`` and return the ``k`` best of ``image_vectors`` (same space) for each."""
    return top_k(encoder.encode_texts(texts), image_vectors, k)


@dataclass
class CatalogIndex:
    """A catalog's image embeddings with their hubness and look-alike attribute probabilities (module doc)."""

    images: np.ndarray  # [N, D], L2-normalised
    logit_scale: float
    hubness: np.ndarray  # [N]: log-sum-exp of the bank texts' scaled cosines with each image, over the scale
    classifiers: dict[str, np.ndarray] = field(default_factory=dict)  # look-alike attribute -> [values, D]
    lookalike: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> [N, values] image probabilities

    @classmethod
    def build(
        cls,
        images: np.ndarray,
        *,
        logit_scale: float | None = None,
        bank: np.ndarray | None = None,
        classifiers: Mapping[str, np.ndarray] | None = None,
    ) -> CatalogIndex:
        """Index ``images`` [N, D]. ``bank`` [B, D]: embeddings of the catalog's texts (None or empty: no hubness
        correction); ``classifiers``: per look-alike attribute, its values' zero-shot text embeddings [V, D]
        (``ml.tasks.zero_shot.build_classifier``); ``logit_scale``: the encoder's (None: CLIP's 100)."""
        vectors = np.atleast_2d(np.asarray(images, dtype=np.float32))
        scale = float(logit_scale or DEFAULT_LOGIT_SCALE)
        hubness = np.zeros(len(vectors), dtype=np.float32)
        if bank is not None and len(bank):
            hubness = _log_sum_exp(np.asarray(bank, dtype=np.float32), vectors, scale)
        classifiers = {name: np.asarray(matrix, dtype=np.float32) for name, matrix in (classifiers or {}).items()}
        lookalike = {name: probabilities(vectors @ matrix.T, scale) for name, matrix in classifiers.items()}
        return cls(vectors, scale, hubness, classifiers, lookalike)

    def text_scores(self, text_vectors: np.ndarray) -> np.ndarray:
        """[Q, N]: each text query's score with every image (cosine less the image's hubness)."""
        return np.atleast_2d(np.asarray(text_vectors, dtype=np.float32)) @ self.images.T - self.hubness[None, :]

    def image_scores(self, image_vectors: np.ndarray) -> np.ndarray:
        """[Q, N]: each image query's score with every catalog image (cosine plus the probability that the two
        agree on every look-alike attribute)."""
        queries = np.atleast_2d(np.asarray(image_vectors, dtype=np.float32))
        scores = queries @ self.images.T
        if self.classifiers:
            agree = np.ones_like(scores)
            for name, matrix in self.classifiers.items():
                agree *= probabilities(queries @ matrix.T, self.logit_scale) @ self.lookalike[name].T
            scores += agree
        return scores

    def search_texts(self, text_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the ``k`` best images for each text query, best first."""
        return best_k(self.text_scores(text_vectors), k)

    def search_images(self, image_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the ``k`` catalog images most like each image query, best first."""
        return best_k(self.image_scores(image_vectors), k)


def _log_sum_exp(bank: np.ndarray, images: np.ndarray, scale: float, chunk: int = 256) -> np.ndarray:
    """[N]: ``log(sum_b exp(scale * cos(b, n))) / scale`` for each image, ``chunk`` images at a time (a catalog of
    100,000 products against as many titles needs 100 MB at once, not 40 GB)."""
    out = np.empty(len(images), dtype=np.float32)
    for start in range(0, len(images), chunk):
        scaled = scale * (bank @ images[start : start + chunk].T)
        peak = scaled.max(axis=0)
        out[start : start + chunk] = (peak + np.log(np.exp(scaled - peak).sum(axis=0))) / scale
    return out
