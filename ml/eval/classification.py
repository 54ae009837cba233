"""Classification metrics: per-class precision/recall/F1, ROC-AUC, the precision-recall curve, threshold choice.

Conventions:

- ``precision_recall_f1`` defines every zero division as 0.0 (a class never predicted has precision 0.0, a class
  never present has recall 0.0), as scikit-learn does with ``zero_division=0``. Macro F1 is the mean of the
  per-class F1 scores, not the F1 of macro precision and recall.
- Binary functions take ``y_true`` as booleans or 0/1 and ``scores`` where higher means more likely positive; a
  sample is predicted positive when ``score >= threshold``.
- ``binary_report`` returns ``None`` for a metric that is undefined on the data (precision with no predicted
  positive, recall with no positive, ROC-AUC with a single class), so a report never passes off 0/0 as 0.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from ml.eval.calibration import as_binary_labels, as_scores, expected_calibration_error


class ClassScores(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class PrecisionRecallF1(TypedDict):
    per_class: dict[Hashable, ClassScores]
    macro: ClassScores
    micro: ClassScores


class BinaryReport(TypedDict):
    n: int
    positives: int
    accuracy: float
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    ece: float | None


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold (predict positive when ``score >= threshold``) and what it achieves."""

    threshold: float
    precision: float
    recall: float
    f1: float


def precision_recall_f1(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, labels: npt.ArrayLike | None = None
) -> PrecisionRecallF1:
    """Precision, recall, F1 and support per class, plus their macro and micro averages.

    ``labels`` restricts and orders the classes (default: every label in ``y_true`` or ``y_pred``, sorted); the
    micro average counts only those classes. Zero divisions are 0.0. ``support`` is the number of true samples.
    """
    truth = np.asarray(y_true)
    predicted = np.asarray(y_pred)
    if truth.ndim != 1 or truth.shape != predicted.shape or truth.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty 1-D arrays of one length, got {truth.shape} and {predicted.shape}"
        )
    classes = np.unique(np.concatenate([truth, predicted])) if labels is None else np.asarray(labels)
    if classes.ndim != 1 or classes.size == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    per_class: dict[Hashable, ClassScores] = {}
    tp_total = predicted_total = true_total = 0
    for label in classes:
        true_positives = int(np.sum((truth == label) & (predicted == label)))
        predicted_count = int(np.sum(predicted == label))
        true_count = int(np.sum(truth == label))
        key = label.item() if isinstance(label, np.generic) else label
        per_class[key] = _class_scores(true_positives, predicted_count, true_count)
        tp_total += true_positives
        predicted_total += predicted_count
        true_total += true_count
    scores = list(per_class.values())
    macro = ClassScores(
        precision=float(np.mean([s["precision"] for s in scores])),
        recall=float(np.mean([s["recall"] for s in scores])),
        f1=float(np.mean([s["f1"] for s in scores])),
        support=true_total,
    )
    return PrecisionRecallF1(
        per_class=per_class, macro=macro, micro=_class_scores(tp_total, predicted_total, true_total)
    )


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve, or ``None`` when ``y_true`` holds only one class.

    Computed as the Mann-Whitney U statistic: the probability that a random positive outscores a random negative,
    a tie counting one half (ties get average ranks).
    """
    labels = as_binary_labels(y_true)
    values = as_scores(scores, len(labels))
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = float(_average_ranks(values)[labels].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def pr_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)``, one entry per distinct score, thresholds in descending order.

    Entry ``i`` is what predicting positive for ``score >= thresholds[i]`` achieves. Unlike scikit-learn's
    ``precision_recall_curve`` there is no appended (recall 0, precision 1) point and the order is not reversed.
    Raises ``ValueError`` when there is no positive (recall is undefined).
    """
    true_positives, false_positives, thresholds, positives = _counts_by_threshold(y_true, scores)
    if positives == 0:
        raise ValueError("a precision-recall curve needs at least one positive")
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / positives
    return precision, recall, thresholds


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Step-wise area under the PR curve, ``sum((R_i - R_{i-1}) * P_i)`` (no interpolation, as scikit-learn's
    ``average_precision_score``); ``None`` when there is no positive."""
    labels = as_binary_labels(y_true)
    if not labels.any():
        return None
    precision, recall, _ = pr_curve(labels, scores)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def best_threshold(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, min_precision: float | None = None
) -> ThresholdChoice | None:
    """The threshold maximising F1 or, with ``min_precision``, the lowest threshold whose precision reaches it.

    Candidates are the distinct scores. An F1 tie goes to the higher threshold (fewer positive predictions). With
    ``min_precision`` the lowest qualifying threshold is the one with the highest recall; ``None`` when no
    threshold qualifies. Raises ``ValueError`` when there is no positive.
    """
    true_positives, false_positives, thresholds, positives = _counts_by_threshold(y_true, scores)
    if positives == 0:
        raise ValueError("choosing a threshold needs at least one positive")
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / positives
    # 2TP / (2TP + FP + FN) is a ratio of integers, so equal F1 values compare equal and ties resolve as documented.
    f1 = 2 * true_positives / (true_positives + false_positives + positives)
    if min_precision is None:
        index = int(np.argmax(f1))
    else:
        if not 0 <= min_precision <= 1:
            raise ValueError(f"min_precision must lie in [0, 1], got {min_precision}")
        qualifying = np.flatnonzero(precision >= min_precision)
        if qualifying.size == 0:
            return None
        index = int(qualifying[-1])
    return ThresholdChoice(
        threshold=float(thresholds[index]),
        precision=float(precision[index]),
        recall=float(recall[index]),
        f1=float(f1[index]),
    )


def binary_report(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> BinaryReport:
    """Counts and metrics of a binary classifier at ``threshold``; undefined metrics are ``None``.

    ``ece`` (15 bins, see ``ml.eval.calibration``) is computed only when every score lies in [0, 1], i.e. when the
    scores can be read as probabilities of the positive class; otherwise it is ``None``.
    """
    labels = as_binary_labels(y_true)
    values = as_scores(scores, len(labels))
    predicted = values >= threshold
    true_positives = int(np.sum(predicted & labels))
    false_positives = int(np.sum(predicted & ~labels))
    positives = int(labels.sum())
    false_negatives = positives - true_positives
    f1_denominator = 2 * true_positives + false_positives + false_negatives
    is_probability = bool(values.min() >= 0 and values.max() <= 1)
    return BinaryReport(
        n=len(labels),
        positives=positives,
        accuracy=float(np.mean(predicted == labels)),
        precision=_ratio(true_positives, true_positives + false_positives),
        recall=_ratio(true_positives, positives),
        f1=_ratio(2 * true_positives, f1_denominator),
        roc_auc=roc_auc(labels, values),
        ece=expected_calibration_error(labels, values) if is_probability else None,
    )


def _class_scores(true_positives: int, predicted_count: int, true_count: int) -> ClassScores:
    return ClassScores(
        precision=_ratio(true_positives, predicted_count) or 0.0,
        recall=_ratio(true_positives, true_count) or 0.0,
        f1=_ratio(2 * true_positives, predicted_count + true_count) or 0.0,
        support=true_count,
    )


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2)[inverse]


def _counts_by_threshold(
    y_true: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """TP and FP when thresholding at each distinct score (descending), those thresholds, and the positive count."""
    labels = as_binary_labels(y_true)
    values = as_scores(scores, len(labels))
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    # The last position of each run of equal scores: a threshold admits every sample scoring at least as high.
    run_ends = np.r_[np.flatnonzero(np.diff(sorted_values)), len(values) - 1]
    true_positives = np.cumsum(labels[order])[run_ends].astype(np.float64)
    false_positives = run_ends + 1 - true_positives
    return true_positives, false_positives, sorted_values[run_ends], int(labels.sum())
