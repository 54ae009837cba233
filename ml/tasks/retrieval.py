"""Exact nearest neighbours by dot product (cosine for the L2-normalised vectors every encoder here returns)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.encoders.base import TextEncoder


def top_k(query_vectors: np.ndarray, index_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [Q, k'], scores [Q, k']) of the best ``k' = min(k, N)`` index rows for each query, best first.

    Exact: every score is computed. Ties keep index order (the lower index first), so results are reproducible.
    """
    queries = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
    index = np.atleast_2d(np.asarray(index_vectors, dtype=np.float32))
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if queries.shape[1] != index.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {index.shape[1]}")
    count = min(k, index.shape[0])
    scores = queries @ index.T
    indices = np.empty((queries.shape[0], count), dtype=np.int64)
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
