"""Fusion heads over image and text features: heads, losses, calibration, training, and saving them as models."""

from ml.fusion.calibration import (
    IsotonicCalibrator,
    PlattScaler,
    TemperatureScaler,
    ThresholdChoice,
    calibrator_from_dict,
    choose_threshold_details,
    choose_thresholds,
)
from ml.fusion.heads import (
    CrossAttentionFusionHead,
    EarlyFusionHead,
    FusionHead,
    FusionPrediction,
    FusionPredictor,
    GatedFusionHead,
    HeadEnsemble,
    HeadShape,
    LateFusionHead,
    build_head,
    load_head,
)
from ml.fusion.losses import SymmetricInfoNCE, info_nce_loss, masked_bce_with_logits
from ml.fusion.train import FusionConfig, FusionData, TrainedFusionHead, save_head, train_fusion_head

__all__ = [
    "CrossAttentionFusionHead",
    "EarlyFusionHead",
    "FusionConfig",
    "FusionData",
    "FusionHead",
    "FusionPrediction",
    "FusionPredictor",
    "GatedFusionHead",
    "HeadEnsemble",
    "HeadShape",
    "IsotonicCalibrator",
    "LateFusionHead",
    "PlattScaler",
    "SymmetricInfoNCE",
    "TemperatureScaler",
    "ThresholdChoice",
    "TrainedFusionHead",
    "build_head",
    "calibrator_from_dict",
    "choose_threshold_details",
    "choose_thresholds",
    "info_nce_loss",
    "load_head",
    "masked_bce_with_logits",
    "save_head",
    "train_fusion_head",
]
