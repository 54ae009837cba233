"""Evaluation metrics against values worked out by hand (the arithmetic is in the comments) and, where scikit-learn
has the same metric, against scikit-learn on random data."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from ml.eval import (
    average_precision,
    best_threshold,
    binary_report,
    calibrated_ece_quantile,
    cider_d,
    corpus_bleu,
    expected_calibration_error,
    mrr,
    pr_curve,
    precision_at_k,
    precision_recall_f1,
    recall_at_k,
    reliability_curve,
    retrieval_report,
    roc_auc,
    rouge_l,
    tokenize,
)


@pytest.fixture
def sklearn_metrics() -> ModuleType:
    # scikit-learn is a cross-check only; ml.eval itself needs nothing beyond numpy.
    return pytest.importorskip("sklearn.metrics")


# --- retrieval -------------------------------------------------------------------------------------------------------

# Three queries over four targets. Correct targets 0, 2, 3 rank 1st, 2nd (behind 0.8) and 4th (behind 0.7, 0.6, 0.5).
SIMILARITY = np.array(
    [
        [0.9, 0.1, 0.5, 0.3],
        [0.2, 0.8, 0.6, 0.4],
        [0.7, 0.6, 0.5, 0.4],
    ]
)
TARGETS = np.array([0, 2, 3])


def test_recall_at_k_and_mrr_from_known_ranks() -> None:
    # ranks 1, 2, 4: R@1 = 1/3, R@2 = R@3 = 2/3, R@4 = 3/3; MRR = (1 + 1/2 + 1/4) / 3 = 0.58333...
    assert recall_at_k(SIMILARITY, TARGETS, 1) == pytest.approx(1 / 3)
    assert recall_at_k(SIMILARITY, TARGETS, 2) == pytest.approx(2 / 3)
    assert recall_at_k(SIMILARITY, TARGETS, 3) == pytest.approx(2 / 3)
    assert recall_at_k(SIMILARITY, TARGETS, 4) == 1.0
    assert mrr(SIMILARITY, TARGETS) == pytest.approx(1.75 / 3)
    assert retrieval_report(SIMILARITY, TARGETS, ks=(1, 2, 10)) == pytest.approx(
        {"R@1": 1 / 3, "R@2": 2 / 3, "R@10": 1.0, "MRR": 1.75 / 3}
    )


def test_relevance_matrix_counts_the_first_relevant_target() -> None:
    # Query 2 now accepts targets 1 and 3; target 1 (0.6) ranks 2nd, so the ranks are 1, 2, 2:
    # R@1 = 1/3, R@2 = 1, MRR = (1 + 1/2 + 1/2) / 3 = 2/3.
    relevant = np.zeros((3, 4), dtype=bool)
    relevant[0, 0] = relevant[1, 2] = relevant[2, 1] = relevant[2, 3] = True
    assert recall_at_k(SIMILARITY, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(SIMILARITY, relevant, 2) == 1.0
    assert mrr(SIMILARITY, relevant) == pytest.approx(2 / 3)


def test_ties_rank_the_lower_index_first() -> None:
    # All scores equal: target 1 sits behind target 0 (rank 2), target 0 is first (rank 1). MRR = (1/2 + 1) / 2.
    tied = np.full((2, 3), 0.5)
    assert recall_at_k(tied, np.array([1, 0]), 1) == 0.5
    assert mrr(tied, np.array([1, 0])) == 0.75


def test_precision_at_k_from_known_top_k() -> None:
    # top-2 per query: q0 {0, 2}, q1 {1, 2}, q2 {0, 1}. Relevant: q0 {0, 3} -> 1/2, q1 {1, 2} -> 2/2, q2 {3} -> 0/2.
    # P@2 = (0.5 + 1 + 0) / 3 = 0.5
    relevant = np.array(
        [
            [True, False, False, True],
            [False, True, True, False],
            [False, False, False, True],
        ]
    )
    assert precision_at_k(SIMILARITY, relevant, 2) == pytest.approx(0.5)


def test_exclude_self_for_image_to_image_retrieval() -> None:
    # Images 0 and 1 share a class, image 2 is alone. Each image is its own best match (1.0), so without
    # exclude_self P@1 is trivially 1. Excluding the diagonal: q0 -> 1 (same class), q1 -> 0 (same class),
    # q2 -> 1 (other class): P@1 = 2/3. Image 2 has no other relevant image, so it is a miss for R@1 and MRR: 2/3.
    similarity = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
    same_class = np.array([[True, True, False], [True, True, False], [False, False, True]])
    assert precision_at_k(similarity, same_class, 1) == 1.0
    assert precision_at_k(similarity, same_class, 1, exclude_self=True) == pytest.approx(2 / 3)
    assert recall_at_k(similarity, same_class, 1, exclude_self=True) == pytest.approx(2 / 3)
    assert mrr(similarity, same_class, exclude_self=True) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="exceeds"):
        precision_at_k(similarity, same_class, 3, exclude_self=True)


def _ranks_by_sorting(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """The slow, obvious reference: stable sort each row, find the first relevant position."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    relevant_in_order = np.take_along_axis(relevant, order, axis=1)
    return np.where(relevant_in_order.any(axis=1), relevant_in_order.argmax(axis=1) + 1.0, np.inf)


def test_counting_ranks_agree_with_stable_sorting_on_tied_random_scores() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.integers(0, 4, size=(60, 25)).astype(np.float32)  # few distinct values: many ties
    relevant = rng.random((60, 25)) < 0.15
    ranks = _ranks_by_sorting(similarity, relevant)
    for k in (1, 3, 10):
        assert recall_at_k(similarity, relevant, k) == pytest.approx(np.mean(ranks <= k))
        order = np.argsort(-similarity, axis=1, kind="stable")
        expected_precision = np.take_along_axis(relevant, order, axis=1)[:, :k].mean()
        assert precision_at_k(similarity, relevant, k) == pytest.approx(expected_precision)
    assert mrr(similarity, relevant) == pytest.approx(np.mean(1 / ranks))


def test_retrieval_on_a_2000_by_2000_matrix() -> None:
    rng = np.random.default_rng(1)
    similarity = rng.standard_normal((2000, 2000)).astype(np.float32)
    targets = rng.integers(0, 2000, size=2000)
    similarity[np.arange(1000), targets[:1000]] += 10.0  # far above any N(0, 1) draw: these queries rank it 1st
    ranks = _ranks_by_sorting(similarity, np.eye(2000, dtype=bool)[targets])
    report = retrieval_report(similarity, targets)
    assert report == pytest.approx(
        {
            "R@1": np.mean(ranks <= 1),
            "R@5": np.mean(ranks <= 5),
            "R@10": np.mean(ranks <= 10),
            "MRR": np.mean(1 / ranks),
        }
    )
    assert 0.5 <= report["R@1"] < 0.51


@pytest.mark.parametrize(
    ("similarity", "relevant", "message"),
    [
        (np.ones(3), np.array([0]), "matrix"),
        (np.array([[0.1, np.nan]]), np.array([0]), "NaN"),
        (np.ones((2, 2)), np.array([0, 2]), r"\[0, 2\)"),
        (np.ones((2, 2)), np.array([0]), "2 queries"),
        (np.ones((2, 2)), np.ones((2, 3), dtype=bool), "shape"),
        (np.ones((2, 2)), np.ones((2, 2)), "boolean"),
    ],
)
def test_retrieval_rejects_malformed_input(similarity: np.ndarray, relevant: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recall_at_k(similarity, relevant, 1)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        recall_at_k(SIMILARITY, TARGETS, 0)


# --- classification --------------------------------------------------------------------------------------------------


def test_precision_recall_f1_by_hand() -> None:
    # a: TP 1 (#0), predicted 2 (#0, #4), true 2 -> P 1/2, R 1/2, F1 2*1/(2+2) = 0.5
    # b: TP 2 (#2, #3), predicted 3 (#1-#3), true 2 -> P 2/3, R 1, F1 2*2/(3+2) = 0.8
    # c: never predicted, true 1 -> P 0/0 := 0.0, R 0, F1 0
    # macro: P (1/2 + 2/3 + 0)/3 = 7/18, R (1/2 + 1 + 0)/3 = 1/2, F1 (0.5 + 0.8 + 0)/3 = 1.3/3
    # micro: TP 3, predicted 5, true 5 -> 0.6 for all three (the accuracy)
    report = precision_recall_f1(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"])
    assert list(report["per_class"]) == ["a", "b", "c"]
    assert report["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro"] == pytest.approx({"precision": 7 / 18, "recall": 0.5, "f1": 1.3 / 3, "support": 5})
    assert report["micro"] == pytest.approx({"precision": 0.6, "recall": 0.6, "f1": 0.6, "support": 5})


def test_labels_restrict_the_micro_average() -> None:
    # Only c and a: TP 0 + 1, predicted 0 + 2, true 1 + 2 -> P 1/2, R 1/3, F1 2*1/(2+3) = 0.4
    report = precision_recall_f1(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"], labels=["c", "a"])
    assert list(report["per_class"]) == ["c", "a"]
    assert report["micro"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})


def test_precision_recall_f1_matches_sklearn(sklearn_metrics: ModuleType) -> None:
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 5, size=300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 6, size=300))  # label 5 is never true
    labels = [0, 1, 2, 3, 4, 5]
    report = precision_recall_f1(y_true, y_pred)
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    assert list(report["per_class"]) == labels
    assert [report["per_class"][label]["precision"] for label in labels] == pytest.approx(precision)
    assert [report["per_class"][label]["recall"] for label in labels] == pytest.approx(recall)
    assert [report["per_class"][label]["f1"] for label in labels] == pytest.approx(f1)
    assert [report["per_class"][label]["support"] for label in labels] == list(support)
    for average in ("macro", "micro"):
        expected = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )[:3]
        assert [report[average]["precision"], report[average]["recall"], report[average]["f1"]] == pytest.approx(
            expected
        )


def test_roc_auc_with_a_tie() -> None:
    # Positive-negative pairs: 0.4 vs 0.1 win, 0.4 vs 0.4 tie (1/2), 0.8 vs 0.1 win, 0.8 vs 0.4 win -> 3.5 / 4.
    # By ranks: 0.1 -> 1, 0.4 and 0.4 -> 2.5, 0.8 -> 4; positives sum 6.5; (6.5 - 2*3/2) / (2*2) = 0.875.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]) == 0.875
    assert roc_auc([False, True], [0.9, 0.1]) == 0.0


def test_roc_auc_is_none_for_a_single_class() -> None:
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert roc_auc([0, 0], [0.2, 0.5]) is None


def test_roc_auc_and_average_precision_match_sklearn(sklearn_metrics: ModuleType) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        y_true = rng.integers(0, 2, size=200)
        scores = np.round(rng.random(200) + 0.3 * y_true, 1)  # rounding makes many ties
        assert roc_auc(y_true, scores) == pytest.approx(sklearn_metrics.roc_auc_score(y_true, scores))
        assert average_precision(y_true, scores) == pytest.approx(
            sklearn_metrics.average_precision_score(y_true, scores)
        )
        precision, recall, thresholds = pr_curve(y_true, scores)
        sk_precision, sk_recall, sk_thresholds = sklearn_metrics.precision_recall_curve(y_true, scores)
        # scikit-learn orders thresholds ascending and appends a (precision 1, recall 0) point.
        assert precision == pytest.approx(sk_precision[:-1][::-1])
        assert recall == pytest.approx(sk_recall[:-1][::-1])
        assert thresholds == pytest.approx(sk_thresholds[::-1])


def test_pr_curve_and_average_precision_by_hand() -> None:
    # labels 1, 0, 1, 0 with scores 0.9, 0.8, 0.7, 0.7
    # >= 0.9: TP 1 FP 0 -> P 1,   R 1/2
    # >= 0.8: TP 1 FP 1 -> P 1/2, R 1/2
    # >= 0.7: TP 2 FP 2 -> P 1/2, R 1
    # AP = (1/2 - 0) * 1 + (1/2 - 1/2) * 1/2 + (1 - 1/2) * 1/2 = 0.75
    precision, recall, thresholds = pr_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.7])
    assert thresholds.tolist() == [0.9, 0.8, 0.7]
    assert precision.tolist() == [1.0, 0.5, 0.5]
    assert recall.tolist() == [0.5, 0.5, 1.0]
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.7]) == 0.75
    assert average_precision([0, 0], [0.1, 0.2]) is None
    with pytest.raises(ValueError, match="at least one positive"):
        pr_curve([0, 0], [0.1, 0.2])


def test_best_threshold_maximises_f1() -> None:
    # labels 1, 1, 0, 1, 0 with scores 0.9 .. 0.5; F1 = 2TP / (2TP + FP + FN) at each threshold:
    # 0.9: 2/(2+0+2) = 0.5; 0.8: 4/(4+0+1) = 0.8; 0.7: 4/(4+1+1) = 2/3; 0.6: 6/(6+1+0) = 6/7; 0.5: 6/(6+2) = 0.75
    choice = best_threshold([1, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert choice is not None
    assert choice.threshold == 0.6
    assert (choice.precision, choice.recall, choice.f1) == pytest.approx((0.75, 1.0, 6 / 7))


def test_best_threshold_breaks_f1_ties_upwards_and_honours_min_precision() -> None:
    # From the PR-curve example: F1 at 0.9 is 2/(2+0+1) = 2/3, at 0.8 2/(2+1+1) = 1/2, at 0.7 4/(4+2+0) = 2/3.
    # The tie between 0.9 and 0.7 goes to the higher threshold.
    y_true, scores = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.7]
    choice = best_threshold(y_true, scores)
    assert choice is not None
    assert (choice.threshold, choice.precision, choice.recall) == (0.9, 1.0, 0.5)
    # min_precision 0.5: every threshold qualifies; the lowest (0.7) has the most recall.
    loose = best_threshold(y_true, scores, min_precision=0.5)
    assert loose is not None
    assert (loose.threshold, loose.precision, loose.recall) == (0.7, 0.5, 1.0)
    strict = best_threshold(y_true, scores, min_precision=0.9)
    assert strict is not None and strict.threshold == 0.9
    # The top score is a negative: precision is 0 at 0.9 and 1/2 at 0.1, so 0.6 is never reached.
    assert best_threshold([0, 1], [0.9, 0.1], min_precision=0.6) is None


def test_best_threshold_agrees_with_a_brute_force_search(sklearn_metrics: ModuleType) -> None:
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 2, size=150)
    scores = np.round(rng.random(150) + 0.5 * y_true, 2)
    choice = best_threshold(y_true, scores)
    assert choice is not None
    brute = max(sklearn_metrics.f1_score(y_true, scores >= t) for t in np.unique(scores))
    assert choice.f1 == pytest.approx(brute)
    assert sklearn_metrics.f1_score(y_true, scores >= choice.threshold) == pytest.approx(choice.f1)


def test_binary_report_by_hand() -> None:
    # threshold 0.75 predicts 1, 1, 0, 0 for labels 1, 0, 1, 0: TP 1, FP 1, FN 1, TN 1
    # accuracy 2/4, precision 1/2, recall 1/2, F1 2/(2+1+1) = 1/2
    # ROC-AUC pairs (pos 0.9, 0.7; neg 0.8, 0.7): 1 + 1 + 0 + 1/2 = 2.5 / 4 = 0.625
    # ECE with 15 bins: 0.9 alone in bin 13 -> |0.9 - 1| = 0.1; 0.8 alone in bin 12 -> |0.8 - 0| = 0.8;
    # both 0.7 in bin 10 -> |0.7 - 1/2| = 0.2; weighted: 0.1/4 + 0.8/4 + 0.2*2/4 = 0.325
    report = binary_report([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.7], threshold=0.75)
    assert report == pytest.approx(
        {
            "n": 4,
            "positives": 2,
            "accuracy": 0.5,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "roc_auc": 0.625,
            "ece": 0.325,
        }
    )


def test_binary_report_gives_none_for_undefined_metrics() -> None:
    # No positives and nothing predicted positive: precision, recall, F1 and ROC-AUC are 0/0.
    # ECE: 0.2 in bin 3 -> 0.2, 0.3 in bin 4 -> 0.3; mean 0.25.
    report = binary_report([0, 0], [0.2, 0.3], threshold=0.5)
    assert report == pytest.approx(
        {
            "n": 2,
            "positives": 0,
            "accuracy": 1.0,
            "precision": None,
            "recall": None,
            "f1": None,
            "roc_auc": None,
            "ece": 0.25,
        }
    )
    # Positives present but none predicted: precision undefined, recall and F1 are a real 0.
    missed = binary_report([1, 0], [0.2, 0.3], threshold=0.5)
    assert (missed["precision"], missed["recall"], missed["f1"]) == (None, 0.0, 0.0)


def test_binary_report_leaves_ece_out_for_scores_that_are_not_probabilities() -> None:
    report = binary_report([1, 0, 1], [2.5, -1.0, 0.3], threshold=0.0)
    assert report["ece"] is None
    assert report["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("y_true", "scores", "message"),
    [
        ([0, 2], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1], "expected 2 scores"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([], [], "non-empty"),
    ],
)
def test_binary_metrics_reject_malformed_input(y_true: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(y_true, scores)


# --- calibration -----------------------------------------------------------------------------------------------------


def test_ece_with_two_bins() -> None:
    # bin [0, 0.5): 0.2 (label 0), 0.4 (label 1) -> mean 0.3, positive rate 0.5, gap 0.2, weight 2/4
    # bin [0.5, 1]: 0.6 (1), 0.9 (1)             -> mean 0.75, positive rate 1.0, gap 0.25, weight 2/4
    # ECE = 0.2 * 0.5 + 0.25 * 0.5 = 0.225
    y_true, probabilities = [0, 1, 1, 1], [0.2, 0.4, 0.6, 0.9]
    assert expected_calibration_error(y_true, probabilities, n_bins=2) == pytest.approx(0.225)
    low, high = reliability_curve(y_true, probabilities, n_bins=2)
    assert (low.lower, low.upper, low.count) == (0.0, 0.5, 2)
    assert (low.mean_probability, low.positive_rate) == pytest.approx((0.3, 0.5))
    assert (high.lower, high.upper, high.count) == (0.5, 1.0, 2)
    assert (high.mean_probability, high.positive_rate) == pytest.approx((0.75, 1.0))


def test_calibrated_probabilities_have_zero_ece_and_bin_edges_go_up() -> None:
    # One in four positives at probability 0.25: perfectly calibrated.
    assert expected_calibration_error([1, 0, 0, 0], [0.25] * 4, n_bins=10) == 0.0
    # 0.5 opens the upper of two bins and 1.0 closes it; the empty lower bin is left out.
    (only,) = reliability_curve([1, 1], [0.5, 1.0], n_bins=2)
    assert (only.lower, only.count) == (0.5, 2)
    # 0.3 sits exactly on an edge of ten bins and must land in [0.3, 0.4), not [0.2, 0.3).
    (edge,) = reliability_curve([1], [0.3], n_bins=10)
    assert edge.lower == pytest.approx(0.3)


def test_calibrated_ece_quantile_by_hand() -> None:
    # Four scores of 0.5 share one bin, so a calibrated model's ECE is |0.5 - k / 4| for k ~ Binomial(4, 1/2):
    # 0 with probability 6/16, 0.25 with 8/16, 0.5 with 2/16. Its median is 0.25, its 95th percentile 0.5.
    assert calibrated_ece_quantile([0.5] * 4, quantile=0.5, draws=4000) == 0.25
    assert calibrated_ece_quantile([0.5] * 4, quantile=0.95, draws=4000) == 0.5
    # Scores of exactly 0 and 1 are certain: a calibrated model draws their labels without error.
    assert calibrated_ece_quantile([0.0, 1.0, 1.0]) == 0.0


def test_calibrated_ece_quantile_bounds_the_ece_of_calibrated_samples_and_shrinks_with_their_size() -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(0.5, 2.0, size=56)
    band = calibrated_ece_quantile(scores)
    # Fresh samples from a model that is calibrated by construction stay under the band about 95 % of the time.
    below = [expected_calibration_error(rng.random(56) < scores, scores) <= band for _ in range(400)]
    assert 0.9 <= np.mean(below) <= 0.99
    larger = rng.beta(0.5, 2.0, size=5600)
    assert calibrated_ece_quantile(larger) < band / 4
    with pytest.raises(ValueError, match="non-empty"):
        calibrated_ece_quantile([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibrated_ece_quantile([0.2, 1.5])


def test_reliability_curve_matches_sklearn_calibration_curve() -> None:
    calibration = pytest.importorskip("sklearn.calibration")
    rng = np.random.default_rng(5)
    probabilities = rng.random(500)
    y_true = rng.random(500) < probabilities**2
    bins = reliability_curve(y_true, probabilities, n_bins=8)
    positive_rate, mean_probability = calibration.calibration_curve(y_true, probabilities, n_bins=8)
    assert [b.positive_rate for b in bins] == pytest.approx(positive_rate)
    assert [b.mean_probability for b in bins] == pytest.approx(mean_probability)


def test_probabilities_outside_the_unit_interval_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.5, 1.2])


# --- text ------------------------------------------------------------------------------------------------------------


def test_bleu_with_brevity_penalty() -> None:
    # candidate "the cat sat on the mat" (6 tokens), reference of 8 tokens:
    # 1-grams 6/6 (both "the" clipped at 2); 2-grams 4/5 ("the mat" missing); 3-grams 3/4 ("on the mat" missing);
    # 4-grams 2/3 ("sat on the mat" missing). BP = exp(1 - 8/6). BLEU = BP * (1 * 4/5 * 3/4 * 2/3) ** (1/4)
    candidate = ["the cat sat on the mat"]
    expected = math.exp(1 - 8 / 6) * (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    assert corpus_bleu(candidate, [["the cat sat on the red mat today"]]) == pytest.approx(expected)
    # A second reference of 6 tokens is the closest length, so BP = 1; the precisions stay the same.
    two_references = [["the cat sat on the red mat today", "a cat sat on a mat"]]
    assert corpus_bleu(candidate, two_references) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3) ** 0.25)


def test_bleu_clips_counts_and_breaks_length_ties_towards_the_shorter_reference() -> None:
    # Papineni's example: "the" x4 against one "the": unigram precision 1/4; candidate longer than reference: BP 1.
    assert corpus_bleu(["the the the the"], [["the cat"]], max_order=1) == 0.25
    # The clip is the most any single reference holds ("the" once), not the sum over references: 1/2, BP 1.
    assert corpus_bleu(["the the"], [["the cat", "the dog"]], max_order=1) == 0.5
    # Every n-gram matches; references of 5 and 7 tokens are equally close to 6: the shorter wins, so BP = 1
    # (the longer would give exp(1 - 7/6) = 0.85).
    assert corpus_bleu(["a b c d e f"], [["a b c d e", "a b c d e f g"]]) == 1.0


def test_bleu_is_zero_without_a_match_unless_smoothed() -> None:
    # "the cat sat" vs "the cat ran": 1-grams 2/3, 2-grams 1/2, 3-grams 0/1, 4-grams 0/0; lengths equal, BP 1.
    # Smoothing method 1 counts 0.1 for an order without a match (the 0/0 order counts as 0.1/1):
    # (2/3 * 1/2 * 0.1 * 0.1) ** (1/4)
    assert corpus_bleu(["the cat sat"], [["the cat ran"]]) == 0.0
    smoothed = corpus_bleu(["the cat sat"], [["the cat ran"]], smoothing=True)
    assert smoothed == pytest.approx((2 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25)
    assert corpus_bleu(["dog"], [["the cat"]], smoothing=True) == 0.0


def test_bleu_sums_counts_over_the_corpus() -> None:
    # Sentence 1 matches 2/2 unigrams, sentence 2 matches 0/2: corpus precision 2/4, not a mean of sentence scores.
    # Lengths 4 vs 4: BP 1.
    assert corpus_bleu(["a b", "c d"], [["a b"], ["e f"]], max_order=1) == 0.5


def test_tokenisation_lowercases_and_splits_on_whitespace_only() -> None:
    assert tokenize("  A Dog\tRuns.\n") == ["a", "dog", "runs."]
    assert corpus_bleu(["The Cat"], [["the cat"]], max_order=2) == 1.0
    assert corpus_bleu(["the cat."], [["the cat"]], max_order=1) == 0.5


def test_rouge_l_from_the_lcs() -> None:
    # "police kill the gunman" vs "the police killed the armed gunman": LCS "police the gunman" = 3.
    # P = 3/4, R = 3/6; F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.375 / (0.5 + 1.08) = 0.915 / 1.58
    candidate = ["police kill the gunman"]
    assert rouge_l(candidate, [["the police killed the armed gunman"]]) == pytest.approx(0.915 / 1.58)
    # COCO takes the best precision and the best recall over references separately. Adding "police kill"
    # (LCS 2: P 2/4, R 2/2) gives P = 3/4, R = 1: F = 2.44 * 0.75 / (1 + 1.08) = 1.83 / 2.08, more than the best
    # single-reference F of either reference (0.579 and 2.44 * 0.5 / (1 + 0.72) = 0.709).
    both = [["the police killed the armed gunman", "police kill"]]
    assert rouge_l(candidate, both) == pytest.approx(1.83 / 2.08)
    # Corpus score: the mean over images; an identical caption scores 1, a disjoint one 0.
    assert rouge_l(["a b", "c d"], [["a b"], ["e f"]]) == 0.5


def test_cider_d_by_hand() -> None:
    # Two images: A "a cat cat" vs ["a cat"], B "a dog" vs ["a dog"]. Document frequencies over the reference sets:
    # "a" 2, "cat" 1, "dog" 1, "a cat" 1, "a dog" 1; idf = log(2) - log(max(1, df)): "a" 0, the rest log 2
    # (unseen n-grams such as "cat cat" also get log 2).
    # A, unigrams: candidate (a 0, cat 2 log2), reference (a 0, cat log2); clipped dot min(2 log2, log2) * log2,
    #   cosine = log2^2 / (2 log2 * log2) = 1/2.
    # A, bigrams: candidate (a cat log2, cat cat log2), reference (a cat log2): cosine = log2^2 / (sqrt2 log2 * log2).
    # A, 3- and 4-grams: the reference has none, so 0. Bigram counts 2 vs 1: penalty exp(-1 / (2 * 6^2)).
    # A = 10 * (1/2 + 1/sqrt2 + 0 + 0) / 4 * exp(-1/72); B matches exactly on orders 1, 2: 10 * (1 + 1) / 4 = 5.
    score_a = 10 * (0.5 + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    candidates = ["a cat cat", "a dog"]
    assert cider_d(candidates, [["a cat"], ["a dog"]]) == pytest.approx((score_a + 5.0) / 2)


def test_cider_d_prefers_a_caption_that_matches_its_references() -> None:
    references = [
        ["a dog runs on the grass", "a brown dog running on grass", "dog running across a lawn"],
        ["a man rides a red bicycle", "a person cycling on a street", "man on a bike in the city"],
        ["two cats sleep on a sofa", "cats sleeping on a couch", "a pair of cats asleep on the sofa"],
    ]
    matching = cider_d(["a dog runs on the grass", "a man rides a red bicycle", "cats sleeping on a couch"], references)
    disjoint = cider_d(["purple elephants sing", "quantum tax forms", "seven blue violins"], references)
    assert disjoint == 0.0
    assert matching > 1.0
    # idf comes from the evaluated corpus: with one image every reference n-gram has idf log(1) - log(1) = 0.
    assert cider_d(["a dog runs"], [["a dog runs"]]) == 0.0


def test_text_metrics_reject_misaligned_corpora() -> None:
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l(["a"], [[]])
    with pytest.raises(TypeError, match="sequence of caption lists"):
        cider_d(["a"], ["a"])
