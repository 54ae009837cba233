"""Calibration of multi-label scores and per-category thresholds from precision/recall curves.

Scores are per category and independent (multi-label, sigmoid). Labels come with a mask of which entries are known,
because each training or review source labels only some categories; unknown entries are ignored everywhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ml.eval import pr_curve

logger = logging.getLogger(__name__)

ThresholdStrategy = str | tuple[str, float]

# Range searched for a temperature: sharper than 1/50 or flatter than 50x is a symptom, not a calibration.
MIN_TEMPERATURE = 0.02
MAX_TEMPERATURE = 50.0
FALLBACK_THRESHOLD = 0.5
_EPSILON = 1e-7


class Calibrator(Protocol):
    kind: str

    def fit(
        self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *, are_probabilities: bool = False
    ) -> Calibrator: ...

    def transform(self, scores: np.ndarray, *, are_probabilities: bool = False) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def logit(probabilities: np.ndarray) -> np.ndarray:
    """Inverse of ``sigmoid``, with probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1.0 - _EPSILON)
    return np.log(p) - np.log1p(-p)


def _as_label_arrays(
    scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {scores.shape}")
    known = np.ones(scores.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    labels = np.asarray(labels, dtype=np.float64)
    if labels.shape != scores.shape or known.shape != scores.shape:
        raise ValueError(f"scores {scores.shape}, labels {labels.shape} and mask {known.shape} must have one shape")
    # Unknown labels may be NaN or anything else; they must never leak into a fit.
    labels = np.where(known, labels, 0.0)
    return scores, labels > 0.5, known


def _fittable(
    logits: np.ndarray, positives: np.ndarray, known: np.ndarray, what: str
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Each category's known scores and labels; one whose known labels hold a single class is left as identity."""
    for category in range(logits.shape[1]):
        rows = known[:, category]
        y = positives[rows, category]
        if y.all() or not y.any():
            logger.info("%s of category %d left as identity: its known labels hold a single class", what, category)
            continue
        yield category, logits[rows, category], y


class TemperatureScaler:
    """One temperature per category: ``p = sigmoid(logit / T_c)``, T_c minimising NLL on validation data."""

    kind = "temperature"

    def __init__(self, temperatures: Sequence[float] | None = None) -> None:
        self.temperatures: np.ndarray | None = None if temperatures is None else np.asarray(temperatures, float)

    def fit(
        self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *, are_probabilities: bool = False
    ) -> TemperatureScaler:
        """Fit a temperature per category on ``scores`` [N, C] (logits unless ``are_probabilities``)."""
        scores, positives, known = _as_label_arrays(scores, labels, mask)
        logits = logit(scores) if are_probabilities else scores
        temperatures = np.ones(logits.shape[1])
        for category, column, y in _fittable(logits, positives, known, "temperature"):
            temperatures[category] = _fit_temperature(column, y)
        self.temperatures = temperatures
        return self

    def transform(self, scores: np.ndarray, *, are_probabilities: bool = False) -> np.ndarray:
        """Calibrated probabilities [N, C] for ``scores`` [N, C] (logits unless ``are_probabilities``)."""
        if self.temperatures is None:
            raise ValueError("TemperatureScaler is not fitted")
        scores = np.asarray(scores, dtype=np.float64)
        logits = logit(scores) if are_probabilities else scores
        return sigmoid(logits / self.temperatures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, read back by ``from_dict``."""
        if self.temperatures is None:
            raise ValueError("TemperatureScaler is not fitted")
        return {"kind": self.kind, "temperatures": [float(t) for t in self.temperatures]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemperatureScaler:
        """Rebuild a scaler saved with ``to_dict``."""
        return cls([float(t) for t in data["temperatures"]])


def _temperature_nll(logits: np.ndarray, signs: np.ndarray, inverse_temperature: float) -> float:
    return float(np.mean(np.logaddexp(0.0, -signs * inverse_temperature * logits)))


def _fit_temperature(logits: np.ndarray, positives: np.ndarray) -> float:
    """NLL is convex in 1/T (a logistic loss linear in it): a log grid brackets the minimum, golden section refines."""
    signs = np.where(positives, 1.0, -1.0)
    grid = np.geomspace(1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE, 97)
    losses = [_temperature_nll(logits, signs, a) for a in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if _temperature_nll(logits, signs, left) <= _temperature_nll(logits, signs, right):
            high = right
        else:
            low = left
    return float(1.0 / ((low + high) / 2.0))


class PlattScaler:
    """A slope and an offset per category: ``p = sigmoid(a_c * logit + b_c)`` (Platt 1999), fitted by NLL on validation
    data against Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``, which keep a fit on a few
    dozen posts from certainty.

    A temperature only rescales logits; the offset also moves them, which a category needs when its head was trained
    on a different base rate than its validation posts have (presumed negatives from sources that never label it).
    The slope is kept within the temperature range, so the map stays increasing.
    """

    kind = "platt"

    def __init__(self, slopes: Sequence[float] | None = None, offsets: Sequence[float] | None = None) -> None:
        if (slopes is None) != (offsets is None):
            raise ValueError("PlattScaler needs both slopes and offsets, or neither")
        self.slopes: np.ndarray | None = None if slopes is None else np.asarray(slopes, float)
        self.offsets: np.ndarray | None = None if offsets is None else np.asarray(offsets, float)

    def fit(
        self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *, are_probabilities: bool = False
    ) -> PlattScaler:
        """Fit a slope and an offset per category on ``scores`` [N, C] (logits unless ``are_probabilities``)."""
        scores, positives, known = _as_label_arrays(scores, labels, mask)
        logits = logit(scores) if are_probabilities else scores
        slopes, offsets = np.ones(logits.shape[1]), np.zeros(logits.shape[1])
        for category, column, y in _fittable(logits, positives, known, "Platt map"):
            slopes[category], offsets[category] = _fit_platt(column, y)
        self.slopes, self.offsets = slopes, offsets
        return self

    def transform(self, scores: np.ndarray, *, are_probabilities: bool = False) -> np.ndarray:
        """Calibrated probabilities [N, C] for ``scores`` [N, C] (logits unless ``are_probabilities``)."""
        if self.slopes is None or self.offsets is None:
            raise ValueError("PlattScaler is not fitted")
        scores = np.asarray(scores, dtype=np.float64)
        logits = logit(scores) if are_probabilities else scores
        return sigmoid(logits * self.slopes + self.offsets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, read back by ``from_dict``."""
        if self.slopes is None or self.offsets is None:
            raise ValueError("PlattScaler is not fitted")
        return {"kind": self.kind, "slopes": self.slopes.tolist(), "offsets": self.offsets.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlattScaler:
        """Rebuild a scaler saved with ``to_dict``."""
        return cls([float(a) for a in data["slopes"]], [float(b) for b in data["offsets"]])


def _fit_platt(logits: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """Newton's method on the (convex) logistic NLL in (slope, offset), halving a step that does not lower it."""
    count_positive = int(positives.sum())
    count_negative = len(positives) - count_positive
    targets = np.where(positives, (count_positive + 1) / (count_positive + 2), 1 / (count_negative + 2))
    design = np.stack([logits, np.ones_like(logits)], axis=1)

    def nll(theta: np.ndarray) -> float:
        z = design @ theta
        return float(np.mean(np.logaddexp(0.0, z) - targets * z))

    theta = np.array([1.0, 0.0])
    loss = nll(theta)
    for _ in range(100):
        p = sigmoid(design @ theta)
        gradient = design.T @ (p - targets) / len(logits)
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(logits) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6 and nll(theta - scale * step) > loss:
            scale /= 2
        candidate = theta - scale * step
        candidate_loss = nll(candidate)
        if candidate_loss > loss or loss - candidate_loss < 1e-12:
            break
        theta, loss = candidate, candidate_loss
    slope = float(np.clip(theta[0], 1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE))
    return slope, float(theta[1])


class IsotonicCalibrator:
    """A monotone step-wise map per category (scikit-learn's IsotonicRegression, clipped outside the fitted range).

    Fitted on probabilities; the fitted points are kept, and ``transform`` interpolates them with numpy, which is
    what IsotonicRegression(out_of_bounds="clip").predict does, so a loaded calibrator needs no scikit-learn.
    """

    kind = "isotonic"

    def __init__(self, points: Sequence[tuple[Sequence[float], Sequence[float]] | None] | None = None) -> None:
        # None for a category means identity: it had a single known class, nothing to calibrate against.
        self.points: list[tuple[np.ndarray, np.ndarray] | None] | None = (
            None
            if points is None
            else [None if p is None else (np.asarray(p[0], float), np.asarray(p[1], float)) for p in points]
        )

    def fit(
        self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *, are_probabilities: bool = False
    ) -> IsotonicCalibrator:
        """Fit one isotonic map per category on ``scores`` [N, C] (logits unless ``are_probabilities``)."""
        from sklearn.isotonic import IsotonicRegression

        scores, positives, known = _as_label_arrays(scores, labels, mask)
        probabilities = scores if are_probabilities else sigmoid(scores)
        points: list[tuple[np.ndarray, np.ndarray] | None] = [None] * probabilities.shape[1]
        for category, column, y in _fittable(probabilities, positives, known, "isotonic map"):
            regression = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            regression.fit(column, y.astype(np.float64))
            points[category] = (
                np.asarray(regression.X_thresholds_, float),
                np.asarray(regression.y_thresholds_, float),
            )
        self.points = points
        return self

    def transform(self, scores: np.ndarray, *, are_probabilities: bool = False) -> np.ndarray:
        """Calibrated probabilities [N, C] for ``scores`` [N, C] (logits unless ``are_probabilities``)."""
        if self.points is None:
            raise ValueError("IsotonicCalibrator is not fitted")
        scores = np.asarray(scores, dtype=np.float64)
        probabilities = scores if are_probabilities else sigmoid(scores)
        if probabilities.shape[-1] != len(self.points):
            raise ValueError(f"scores have {probabilities.shape[-1]} categories, the calibrator {len(self.points)}")
        calibrated = probabilities.copy()
        for category, fitted in enumerate(self.points):
            if fitted is not None:
                calibrated[:, category] = np.interp(probabilities[:, category], fitted[0], fitted[1])
        return calibrated

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, read back by ``from_dict``."""
        if self.points is None:
            raise ValueError("IsotonicCalibrator is not fitted")
        return {
            "kind": self.kind,
            "points": [None if p is None else {"x": p[0].tolist(), "y": p[1].tolist()} for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibrator:
        """Rebuild a calibrator saved with ``to_dict``."""
        return cls([None if p is None else (p["x"], p["y"]) for p in data["points"]])


CALIBRATORS: dict[str, type[TemperatureScaler] | type[PlattScaler] | type[IsotonicCalibrator]] = {
    TemperatureScaler.kind: TemperatureScaler,
    PlattScaler.kind: PlattScaler,
    IsotonicCalibrator.kind: IsotonicCalibrator,
}


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Rebuild any calibrator from its ``to_dict`` form (dispatching on ``kind``)."""
    kind = data.get("kind")
    if kind not in CALIBRATORS:
        raise ValueError(f"unknown calibrator kind {kind!r}; known: {', '.join(sorted(CALIBRATORS))}")
    return CALIBRATORS[kind].from_dict(data)


@dataclass(frozen=True)
class ThresholdChoice:
    """A category's decision threshold (decide ``probability >= threshold``) and what it achieves on the data."""

    threshold: float
    precision: float
    recall: float
    f1: float
    support: int
    fallback: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _f1(precision: np.ndarray | float, recall: np.ndarray | float) -> np.ndarray:
    precision, recall = np.asarray(precision, float), np.asarray(recall, float)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def metrics_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of deciding ``score >= threshold`` for one category; 0 where undefined."""
    decided = np.asarray(scores, dtype=np.float64) >= threshold
    positives = np.asarray(labels, dtype=bool)
    true_positives = int((decided & positives).sum())
    precision = true_positives / int(decided.sum()) if decided.any() else 0.0
    recall = true_positives / int(positives.sum()) if positives.any() else 0.0
    return precision, recall, float(_f1(precision, recall))


def _parse_strategy(strategy: ThresholdStrategy) -> float | None:
    if strategy == "f1":
        return None
    if isinstance(strategy, tuple | list) and len(strategy) == 2 and strategy[0] == "precision":
        target = float(strategy[1])
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target precision must be in (0, 1], got {target}")
        return target
    raise ValueError(f'threshold strategy must be "f1" or ("precision", target), got {strategy!r}')


def choose_threshold_details(
    probabilities: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    strategy: ThresholdStrategy = "f1",
    categories: Sequence[str] | None = None,
) -> dict[str, ThresholdChoice]:
    """Per category, the threshold on its precision/recall curve that maximises F1 (``"f1"``), or the lowest that
    reaches a precision target (``("precision", 0.9)``), with what it achieves.

    The chosen point of the curve is a score; every threshold between it and the next lower score decides the
    validation posts alike, and the threshold returned is the middle of that interval, not its top edge: there a
    new positive scoring a little below the lowest validation positive it kept is still flagged (on a separable
    validation split, the edge would be exactly its lowest positive).

    A category with no known positives gets ``FALLBACK_THRESHOLD`` flagged as a fallback; one whose precision target
    is out of reach gets the threshold of its highest precision, flagged too.
    """
    target = _parse_strategy(strategy)
    probabilities, positives, known = _as_label_arrays(probabilities, labels, mask)
    names = [str(i) for i in range(probabilities.shape[1])] if categories is None else list(categories)
    if len(names) != probabilities.shape[1]:
        raise ValueError(f"{len(names)} category names for {probabilities.shape[1]} score columns")
    choices: dict[str, ThresholdChoice] = {}
    for category, name in enumerate(names):
        rows = known[:, category]
        scores, y = probabilities[rows, category], positives[rows, category]
        support = int(y.sum())
        if support == 0:
            logger.warning(
                "category %s has no known positives; its threshold falls back to %s", name, FALLBACK_THRESHOLD
            )
            at_fallback = metrics_at_threshold(scores, y, FALLBACK_THRESHOLD)
            choices[name] = ThresholdChoice(
                FALLBACK_THRESHOLD, *at_fallback, support, fallback=True, reason="no known positives"
            )
            continue
        precision, recall, thresholds = pr_curve(y, scores)
        f1 = _f1(precision, recall)
        fallback, reason = False, ""
        if target is None:
            index = int(np.argmax(f1))
        else:
            reaching = np.flatnonzero(precision >= target - 1e-12)
            if len(reaching):
                # Thresholds descend, so the last one reaching the target is the lowest: the most recall.
                index = int(reaching[-1])
            else:
                index = int(np.flatnonzero(precision == precision.max())[-1])
                fallback, reason = True, f"precision {target} not reached; highest precision used"
                logger.warning("category %s never reaches precision %s; using its highest precision", name, target)
        below = thresholds[index + 1] if index + 1 < len(thresholds) else thresholds[index]
        choices[name] = ThresholdChoice(
            float((thresholds[index] + below) / 2),
            float(precision[index]),
            float(recall[index]),
            float(f1[index]),
            support,
            fallback=fallback,
            reason=reason,
        )
    return choices


def choose_thresholds(
    probabilities: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    strategy: ThresholdStrategy = "f1",
    categories: Sequence[str] | None = None,
) -> dict[str, float]:
    """``{category: threshold}`` from ``choose_threshold_details`` (see there for strategies and fallbacks)."""
    details = choose_threshold_details(probabilities, labels, mask, strategy=strategy, categories=categories)
    return {name: choice.threshold for name, choice in details.items()}
