"""Retrieval metrics over a similarity matrix: Recall@K, MRR and Precision@K.

``similarity[q, j]`` is how well target ``j`` matches query ``q``; higher ranks first. Relevance is given either as
one correct target index per query (a 1-D integer array, e.g. the caption that belongs to an image) or as a boolean
``[Q, N]`` matrix (e.g. every image of the same class).

Ties are broken deterministically by a stable ordering on the target index: among targets with equal scores the
lower index ranks first. This is what ``np.argsort(-similarity, kind="stable")`` would give, but it is computed
without sorting, by counting, so a ``[2000, 2000]`` matrix takes milliseconds. It is optimistic when a relevant
target shares its score with later-indexed irrelevant ones, so keep scores continuous (cosine similarities are).

A query with no relevant target (an all-false row, or its only target dropped by ``exclude_self``) counts as a miss:
it contributes 0 to Recall@K and MRR rather than being left out of the mean.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt


def recall_at_k(similarity: npt.ArrayLike, relevant: npt.ArrayLike, k: int, *, exclude_self: bool = False) -> float:
    """Fraction of queries with at least one relevant target among their top ``k``.

    ``relevant`` is a 1-D integer array of the correct target per query, or a boolean ``[Q, N]`` matrix.
    ``exclude_self`` drops the diagonal (for image->image retrieval, where the queries are the targets).
    """
    _check_k(k)
    ranks = _first_relevant_ranks(similarity, relevant, exclude_self=exclude_self)
    return float(np.mean(ranks <= k))


def mrr(similarity: npt.ArrayLike, relevant: npt.ArrayLike, *, exclude_self: bool = False) -> float:
    """Mean reciprocal rank of each query's first relevant target (0 for a query without one)."""
    ranks = _first_relevant_ranks(similarity, relevant, exclude_self=exclude_self)
    return float(np.mean(1.0 / ranks))


def precision_at_k(
    similarity: npt.ArrayLike, relevant_matrix: npt.ArrayLike, k: int, exclude_self: bool = False
) -> float:
    """Mean over queries of the fraction of the top ``k`` targets that are relevant.

    ``relevant_matrix`` is boolean ``[Q, N]``. With ``exclude_self`` the diagonal is neither ranked nor relevant,
    so ``k`` may be at most ``N - 1``.
    """
    _check_k(k)
    scores = _as_scores(similarity)
    mask = _as_relevance(relevant_matrix, scores.shape)
    if exclude_self:
        scores, mask = _drop_diagonal(scores, mask)
    candidates = scores.shape[1] - (1 if exclude_self else 0)
    if k > candidates:
        raise ValueError(f"k={k} exceeds the {candidates} targets each query can retrieve")
    hits = (_top_k_mask(scores, k) & mask).sum(axis=1)
    return float(np.mean(hits / k))


def retrieval_report(
    similarity: npt.ArrayLike,
    targets: npt.ArrayLike,
    ks: Iterable[int] = (1, 5, 10),
    *,
    exclude_self: bool = False,
) -> dict[str, float]:
    """``{"R@1": .., "R@5": .., "R@10": .., "MRR": ..}`` from one ranking pass; ``targets`` as for ``recall_at_k``."""
    ks = list(ks)
    for k in ks:
        _check_k(k)
    ranks = _first_relevant_ranks(similarity, targets, exclude_self=exclude_self)
    report = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    report["MRR"] = float(np.mean(1.0 / ranks))
    return report


def _first_relevant_ranks(similarity: npt.ArrayLike, relevant: npt.ArrayLike, *, exclude_self: bool) -> np.ndarray:
    """1-based rank of each query's best-ranked relevant target; ``inf`` where a query has none."""
    scores = _as_scores(similarity)
    mask = _as_relevance(relevant, scores.shape)
    if exclude_self:
        scores, mask = _drop_diagonal(scores, mask)
    n_queries, n_targets = scores.shape
    # argmax returns the first maximum, i.e. the lowest index among equally scored relevant targets: the one the
    # stable ordering puts first.
    best = np.where(mask, scores, -np.inf).argmax(axis=1)
    best_score = scores[np.arange(n_queries), best][:, None]
    ahead = (scores > best_score).sum(axis=1)
    ahead += ((scores == best_score) & (np.arange(n_targets)[None, :] < best[:, None])).sum(axis=1)
    return np.where(mask.any(axis=1), ahead + 1.0, np.inf)


def _top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``[Q, N]`` marking each row's top ``k`` under the stable (score desc, index asc) ordering."""
    n_targets = scores.shape[1]
    kth = np.partition(scores, n_targets - k, axis=1)[:, n_targets - k][:, None]
    above = scores > kth
    at = scores == kth
    slots_left = k - above.sum(axis=1, keepdims=True)
    return above | (at & (np.cumsum(at, axis=1) <= slots_left))


def _as_scores(similarity: npt.ArrayLike) -> np.ndarray:
    scores = np.asarray(similarity)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"similarity must be a non-empty [queries, targets] matrix, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"similarity must be real-valued, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError("similarity contains NaN or infinite values")
    return scores


def _as_relevance(relevant: npt.ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean ``[Q, N]`` matrix from either a 1-D target index per query or a boolean matrix."""
    array = np.asarray(relevant)
    n_queries, n_targets = shape
    if array.ndim == 2:
        if array.dtype != np.bool_:
            raise ValueError(f"a relevance matrix must be boolean, got dtype {array.dtype}")
        if array.shape != shape:
            raise ValueError(f"relevance matrix has shape {array.shape}, similarity has {shape}")
        return array
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError("relevant must be a 1-D integer array of target indices or a boolean [Q, N] matrix")
    if array.shape[0] != n_queries:
        raise ValueError(f"{array.shape[0]} target indices for {n_queries} queries")
    if array.size and (array.min() < 0 or array.max() >= n_targets):
        raise ValueError(f"target indices must lie in [0, {n_targets})")
    mask = np.zeros(shape, dtype=bool)
    mask[np.arange(n_queries), array] = True
    return mask


def _drop_diagonal(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"exclude_self needs a square similarity matrix, got shape {scores.shape}")
    # Scores are checked finite, so -inf ranks the diagonal below every real target.
    scores = scores.astype(np.promote_types(scores.dtype, np.float32), copy=True)
    np.fill_diagonal(scores, -np.inf)
    mask = mask.copy()
    np.fill_diagonal(mask, False)
    return scores, mask


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
