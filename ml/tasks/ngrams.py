"""A linear text classifier over hashed word and character n-grams: the moderation model's lexical reader.

A sentence embedding says what a post is about; whether it is hateful or spam often sits in a few words, their
spellings and their misspellings ("f*ck", "fr33 entry"), which character n-grams see and an embedding smooths away.
Measured on Davidson-style tweets (docs/moderation.md), n-grams alone rank hate speech better than MiniLM alone, and
the fusion head that reads both beats either.

Words (1-2 grams, read through ``ml.tasks.obfuscation.deobfuscate``: "h8" as "hate") and characters (2-5 grams
within word boundaries, as written) are hashed into a fixed number of columns, so
the classifier has no vocabulary to store and reads any text; each column is weighted by its inverse document
frequency on the training texts, each row L2-normalised, and one logistic regression per category learns from the
posts that carry that category's label. Everything saves as plain arrays (``.npz``): no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from ml.tasks.obfuscation import deobfuscate

NGRAM_FILE = "ngrams.npz"
HASH_BITS = 19  # 524,288 columns per analyser; collisions are rare for a few hundred thousand n-grams
MIN_LABELLED = 10  # a category needs this many positives and negatives to be learnt
WORD_PATTERN = r"(?u)\b\w+\b"  # every word, one-letter ones included ("u", "r" in tweets)


def _vectorisers(bits: int) -> list[Any]:
    from sklearn.feature_extraction.text import HashingVectorizer

    common = {"n_features": 2**bits, "alternate_sign": False, "norm": None, "lowercase": True}
    return [
        HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=WORD_PATTERN, **common),
        HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common),
    ]


def _counts(texts: Sequence[str], bits: int, *, deobfuscated: bool) -> sparse.csr_matrix:
    """Sublinear term frequencies [N, 2 * 2**bits] (1 + log count) of every analyser, side by side; with
    ``deobfuscated`` the word analyser reads each text through ``deobfuscate`` (the character one as written)."""
    words, characters = _vectorisers(bits)
    word_texts = [deobfuscate(text) for text in texts] if deobfuscated else texts
    matrix = sparse.hstack([words.transform(word_texts), characters.transform(texts)]).tocsr()
    matrix.data = 1.0 + np.log(matrix.data)
    return matrix


@dataclass
class NgramClassifier:
    """Per-category logistic regressions over idf-weighted hashed n-grams."""

    categories: list[str]
    idf: np.ndarray  # [columns]
    coef: np.ndarray  # [categories, columns]
    intercept: np.ndarray  # [categories]
    bits: int = HASH_BITS
    # Words read through ``ml.tasks.obfuscation.deobfuscate`` ("h8" as "hate"); classifiers saved before it read
    # words as written, and load so.
    deobfuscated: bool = True

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: np.ndarray,
        known: np.ndarray,
        categories: Sequence[str],
        *,
        weight: np.ndarray | None = None,
        strength: float = 4.0,
        bits: int = HASH_BITS,
    ) -> NgramClassifier:
        """Learn from ``texts`` with 0/1 ``labels`` [N, C] where ``known`` [N, C], each label weighted by ``weight``
        [N, C] (None: all 1). A category with fewer than ``MIN_LABELLED`` positives or negatives gets zero weights
        (logit 0 for every text). ``strength`` is the inverse L2 penalty; classes are weighted to balance, so a rare
        category is not drowned."""
        from sklearn.linear_model import LogisticRegression

        counts = _counts(texts, bits, deobfuscated=True)
        documents = np.asarray((counts > 0).sum(axis=0)).ravel()
        idf = (np.log((1 + len(texts)) / (1 + documents)) + 1.0).astype(np.float32)
        features = _weigh(counts, idf)
        coef = np.zeros((len(categories), counts.shape[1]), dtype=np.float32)
        intercept = np.zeros(len(categories), dtype=np.float32)
        for index in range(len(categories)):
            rows = np.flatnonzero(known[:, index])
            target = labels[rows, index] > 0.5
            if min(target.sum(), (~target).sum()) < MIN_LABELLED:
                continue
            # A soft label p (annotators' share) is the row twice: positive at weight p, negative at 1 - p.
            share = np.clip(labels[rows, index], 0.0, 1.0).astype(np.float64)
            base = np.ones(len(rows)) if weight is None else weight[rows, index].astype(np.float64)
            soft = np.flatnonzero((share > 0) & (share < 1))
            stacked = sparse.vstack([features[rows], features[rows[soft]]]).tocsr()
            targets = np.concatenate([share >= 0.5, share[soft] < 0.5])
            sample = base * np.where(share >= 0.5, share, 1 - share)
            sample = np.concatenate([sample, base[soft] * np.where(share[soft] >= 0.5, 1 - share[soft], share[soft])])
            model = LogisticRegression(C=strength, class_weight="balanced", max_iter=1000)
            model.fit(stacked, targets, sample_weight=sample)
            coef[index], intercept[index] = model.coef_[0], model.intercept_[0]
        return cls(categories=list(categories), idf=idf, coef=coef, intercept=intercept, bits=bits)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [N, C]; an empty text reads as no n-grams (the intercepts)."""
        if not texts:
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        counts = _counts(texts, self.bits, deobfuscated=self.deobfuscated)
        return _linear(_weigh(counts, self.idf), self.coef) + self.intercept

    def top_terms(self, text: str, categories: Sequence[str], k: int = 5) -> dict[str, list[str]]:
        """Per category, the words of ``text`` that push its logit up most (for a reviewer's highlight); every word
        is scored once for all the categories."""
        words = sorted({word for word in _vectorisers(self.bits)[0].build_analyzer()(text) if " " not in word})
        if not words or not categories:
            return {name: [] for name in categories}
        pushes = self.logits(words) - self.intercept
        terms = {}
        for name in categories:
            column = pushes[:, self.categories.index(name)]
            ranked = sorted(zip(column, words, strict=True), reverse=True)
            terms[name] = [word for push, word in ranked[:k] if push > 0]
        return terms

    def save(self, directory: Path) -> None:
        np.savez_compressed(
            Path(directory) / NGRAM_FILE,
            categories=np.asarray(self.categories),
            idf=self.idf,
            coef=self.coef,
            intercept=self.intercept,
            bits=np.asarray(self.bits),
            deobfuscated=np.asarray(self.deobfuscated),
        )

    @classmethod
    def load(cls, directory: Path) -> NgramClassifier:
        with np.load(Path(directory) / NGRAM_FILE, allow_pickle=False) as data:
            return cls(
                categories=[str(name) for name in data["categories"]],
                idf=data["idf"],
                coef=data["coef"],
                intercept=data["intercept"],
                bits=int(data["bits"]),
                deobfuscated="deobfuscated" in data.files and bool(data["deobfuscated"]),
            )


def _weigh(counts: sparse.csr_matrix, idf: np.ndarray) -> sparse.csr_matrix:
    """Each column weighted by its idf, each row L2-normalised; O(non-zeros) (no diagonal matrices)."""
    weighted = sparse.csr_matrix((counts.data * idf[counts.indices], counts.indices, counts.indptr), shape=counts.shape)
    squares = _row_sums(weighted.data[None, :] ** 2, weighted.indptr)[0]
    weighted.data /= np.repeat(np.sqrt(np.maximum(squares, 1e-24)), np.diff(weighted.indptr))
    return weighted


def _linear(features: sparse.csr_matrix, coef: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``features @ coef.T`` as float32 [N, C], gathering only the columns of ``coef`` [C, D] that the rows use
    (scipy's product walks the dense operand: tens of milliseconds for one post over 10^6 columns)."""
    out = np.zeros((features.shape[0], coef.shape[0]), dtype=np.float32)
    for start in range(0, features.shape[0], chunk):
        rows = features[start : start + chunk]
        gathered = coef[:, rows.indices] * rows.data[None, :].astype(np.float32)
        out[start : start + rows.shape[0]] = _row_sums(gathered, rows.indptr).T
    return out


def _row_sums(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """[K, N]: the sum of ``values`` [K, nnz] over each CSR row's slice (0 for an empty row)."""
    sums = np.zeros((values.shape[0], len(indptr) - 1), dtype=values.dtype)
    filled = np.flatnonzero(np.diff(indptr) > 0)
    if len(filled):
        sums[:, filled] = np.add.reduceat(values, indptr[filled], axis=1)
    return sums
