"""Evaluation metrics for retrieval, classification, calibration and captioning; numpy only, no framework."""

from ml.eval.calibration import (
    ReliabilityBin,
    calibrated_ece_quantile,
    expected_calibration_error,
    reliability_curve,
)
from ml.eval.classification import (
    BinaryReport,
    ClassScores,
    PrecisionRecallF1,
    ThresholdChoice,
    average_precision,
    best_threshold,
    binary_report,
    pr_curve,
    precision_recall_f1,
    roc_auc,
)
from ml.eval.retrieval import mrr, precision_at_k, recall_at_k, retrieval_report
from ml.eval.text import cider_d, corpus_bleu, rouge_l, tokenize

__all__ = [
    "BinaryReport",
    "ClassScores",
    "PrecisionRecallF1",
    "ReliabilityBin",
    "ThresholdChoice",
    "average_precision",
    "best_threshold",
    "binary_report",
    "calibrated_ece_quantile",
    "cider_d",
    "corpus_bleu",
    "expected_calibration_error",
    "mrr",
    "pr_curve",
    "precision_at_k",
    "precision_recall_f1",
    "recall_at_k",
    "reliability_curve",
    "retrieval_report",
    "roc_auc",
    "rouge_l",
    "tokenize",
]
