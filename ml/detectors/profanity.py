"""Profanity probability of short texts: ``alt-profanity-check``'s bag-of-words linear model (scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.detectors import weight_file
from ml.specs import ModelSpec


class ProfanityScorer:
    """A fast lexical baseline: it sees words, not meaning, so it is a feature for moderation, not a verdict."""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        import joblib

        self.spec = spec
        # The same two files profanity_check loads when imported, read from the verified path instead of its globals.
        self.vectorizer = joblib.load(weight_file(path, spec, "vectorizer"))
        self.model = joblib.load(weight_file(path, spec, "model"))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Probability that each text is profane, float32 shape [N]."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        probabilities = self.model.predict_proba(self.vectorizer.transform(list(texts)))
        return np.asarray(probabilities[:, 1], dtype=np.float32)
