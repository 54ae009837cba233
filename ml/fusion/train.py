"""Training a fusion head on precomputed features, calibrating it and choosing its thresholds; saving it as a model.

Training runs in management commands and jobs, never on a web request. It is CPU-friendly (thousands of items train in
seconds) and reproducible: the same data, config and seed give the same head, calibrator and thresholds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ml.fusion.calibration import (
    Calibrator,
    IsotonicCalibrator,
    PlattScaler,
    TemperatureScaler,
    ThresholdChoice,
    ThresholdStrategy,
    choose_threshold_details,
)
from ml.fusion.heads import HEADS, FusionHead, FusionPredictor, HeadEnsemble, HeadShape, build_head, write_head
from ml.fusion.losses import masked_bce_with_logits
from ml.sources import sha256_path
from ml.specs import ModelSpec

logger = logging.getLogger(__name__)

CALIBRATIONS = ("temperature", "platt", "isotonic", "none")


@dataclass
class FusionData:
    """Precomputed features and multi-label targets for N items (numpy arrays).

    ``labels`` [N, C] holds 0/1 where ``label_mask`` [N, C] is True (None: every label known); elsewhere anything,
    NaN included. ``label_weight`` [N, C] weighs each known label in the training loss (None: all 1).
    ``image_present`` / ``text_present`` [N] mark items lacking a modality (None: all present); the features of a
    missing modality are ignored. ``image_patches`` [N, P, Dv] (or [N, rows, cols, Dv]), ``text_tokens``
    [N, L, Dt] and ``text_token_mask`` [N, L] feed the cross-attention head.
    """

    image_features: np.ndarray
    text_features: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray | None = None
    image_present: np.ndarray | None = None
    text_present: np.ndarray | None = None
    image_patches: np.ndarray | None = None
    text_tokens: np.ndarray | None = None
    text_token_mask: np.ndarray | None = None
    label_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = len(self.labels)
        if np.ndim(self.labels) != 2:
            raise ValueError(f"labels must be [N, C], got shape {np.shape(self.labels)}")
        expected = {
            "image_features": 2,
            "text_features": 2,
            "label_mask": 2,
            "image_present": 1,
            "text_present": 1,
            "text_tokens": 3,
            "text_token_mask": 2,
        }
        for name, ndim in expected.items():
            array = getattr(self, name)
            if array is not None and (np.ndim(array) != ndim or len(array) != count):
                raise ValueError(f"{name} must have {ndim} dimensions and {count} rows, got shape {np.shape(array)}")
        for name in ("label_mask", "label_weight"):
            array = getattr(self, name)
            if array is not None and np.shape(array) != np.shape(self.labels):
                raise ValueError(f"{name} {np.shape(array)} must match labels {np.shape(self.labels)}")
        if self.image_patches is not None and (
            np.ndim(self.image_patches) not in (3, 4) or len(self.image_patches) != count
        ):
            raise ValueError(
                f"image_patches must be [N, P, D] or [N, rows, cols, D], got {np.shape(self.image_patches)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_categories(self) -> int:
        """C, the number of label columns."""
        return int(np.shape(self.labels)[1])

    def known(self) -> np.ndarray:
        """The label mask [N, C] as booleans (all True when none was given)."""
        if self.label_mask is None:
            return np.ones(np.shape(self.labels), dtype=bool)
        return np.asarray(self.label_mask, dtype=bool)

    def tensors(self) -> dict[str, Tensor | None]:
        """Everything as tensors: the head's keyword inputs plus ``labels`` and ``label_mask``."""

        def tensor(array: np.ndarray | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
            return None if array is None else torch.as_tensor(np.asarray(array), dtype=dtype)

        known = self.known()
        return {
            "image": tensor(self.image_features),
            "text": tensor(self.text_features),
            "image_present": tensor(self.image_present, torch.bool),
            "text_present": tensor(self.text_present, torch.bool),
            "image_patches": tensor(self.image_patches),
            "text_tokens": tensor(self.text_tokens),
            "text_token_mask": tensor(self.text_token_mask, torch.bool),
            "labels": tensor(np.where(known, np.nan_to_num(np.asarray(self.labels, dtype=np.float32)), 0.0)),
            "label_mask": tensor(known, torch.bool),
            "label_weight": tensor(self.label_weight),
        }


@dataclass(frozen=True)
class FusionConfig:
    """How to train a head: its kind and size, the optimiser, early stopping, calibration and threshold strategy.

    ``kind``: "early", "late", "gated" or "cross_attention". ``patience``: epochs without a better validation loss
    before stopping. ``modality_dropout``: chance per item and epoch of hiding one of its two modalities, so a head
    trained on complete items still serves text-only and image-only posts. ``balance_positives``: weigh positives by
    negatives/positives per category. ``calibration``: "temperature", "platt", "isotonic" or "none".
    ``threshold_strategy``: "f1" or ("precision", target). ``categories``: names of the label columns (default "0",
    "1", ...). ``members``: heads trained from seeds ``seed``, ``seed + 1``, ... (each with its own early stopping)
    and served as one ``HeadEnsemble``, calibrated on their mean logits.
    """

    kind: str = "gated"
    categories: tuple[str, ...] = ()
    hidden: int = 64
    attention_heads: int = 1
    dropout: float = 0.1
    epochs: int = 50
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 5
    modality_dropout: float = 0.0
    balance_positives: bool = False
    calibration: str = "temperature"
    threshold_strategy: ThresholdStrategy = "f1"
    members: int = 1

    def __post_init__(self) -> None:
        if self.kind not in HEADS:
            raise ValueError(f"unknown fusion head kind {self.kind!r}; known: {', '.join(sorted(HEADS))}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {self.calibration!r}; known: {', '.join(CALIBRATIONS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.members < 1:
            raise ValueError("epochs, batch_size, patience and members must be at least 1")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = asdict(self)
        data["categories"] = list(self.categories)
        if isinstance(self.threshold_strategy, tuple):
            data["threshold_strategy"] = list(self.threshold_strategy)
        return data


@dataclass
class TrainedFusionHead:
    """A trained head with its calibrator, thresholds and validation results."""

    head: FusionHead
    config: FusionConfig
    categories: list[str]
    calibrator: Calibrator
    thresholds: dict[str, float]
    threshold_details: dict[str, ThresholdChoice]
    validation_metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)

    def predictor(self, *, device: str = "cpu", model_version: str = "") -> FusionPredictor:
        """The head ready to predict, exactly as it will serve once saved and loaded."""
        return FusionPredictor(
            self.head,
            calibrator=self.calibrator,
            categories=self.categories,
            thresholds=self.thresholds,
            model_version=model_version,
            device=device,
        )


_HEAD_INPUTS = ("image_present", "text_present", "image_patches", "text_tokens", "text_token_mask")


def _head_logits(head: FusionHead, batch: dict[str, Tensor | None]) -> Tensor:
    image, text = batch["image"], batch["text"]
    assert image is not None and text is not None
    return head(image, text, **{key: batch[key] for key in _HEAD_INPUTS})


def _select(batch: dict[str, Tensor | None], index: Tensor) -> dict[str, Tensor | None]:
    return {key: None if value is None else value[index] for key, value in batch.items()}


def _drop_modalities(batch: dict[str, Tensor | None], rate: float, generator: torch.Generator) -> None:
    """Hide the image or the text (never both) of a ``rate`` share of the items that have both."""
    image = batch["image"]
    assert image is not None
    count = image.shape[0]
    image_present = (
        batch["image_present"] if batch["image_present"] is not None else torch.ones(count, dtype=torch.bool)
    )
    text_present = batch["text_present"] if batch["text_present"] is not None else torch.ones(count, dtype=torch.bool)
    dropped = (torch.rand(count, generator=generator) < rate) & image_present & text_present
    drop_image = dropped & (torch.rand(count, generator=generator) < 0.5)
    batch["image_present"] = image_present & ~drop_image
    batch["text_present"] = text_present & ~(dropped & ~drop_image)


def _positive_weights(data: FusionData) -> Tensor:
    known = data.known()
    positives = ((np.nan_to_num(np.asarray(data.labels, dtype=float)) > 0.5) & known).sum(axis=0)
    negatives = known.sum(axis=0) - positives
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.as_tensor(np.clip(weights, 0.01, 100.0), dtype=torch.float32)


def _evaluate_loss(
    head: FusionHead, batch: dict[str, Tensor | None], pos_weight: Tensor | None
) -> tuple[float, Tensor]:
    head.eval()
    with torch.no_grad():
        logits = _head_logits(head, batch)
        labels, mask = batch["labels"], batch["label_mask"]
        assert labels is not None
        loss = masked_bce_with_logits(logits, labels, mask, pos_weight=pos_weight)
    return float(loss), logits


def train_fusion_head(
    config: FusionConfig,
    train: FusionData,
    validation: FusionData,
    *,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainedFusionHead:
    """Train ``config.kind`` on ``train`` with AdamW and masked BCE, keep the epoch with the lowest validation loss
    (stopping after ``config.patience`` epochs without improvement), then fit the calibrator on ``validation`` and
    choose per-category thresholds on its calibrated probabilities.

    ``on_progress(epoch, epochs)`` is called after each epoch. The validation metrics are measured on the data the
    thresholds were chosen on, so they are optimistic; evaluate on held-out data before promoting a head.
    """
    if len(train) == 0 or len(validation) == 0:
        raise ValueError("training and validation data must both hold items")
    if train.num_categories != validation.num_categories:
        raise ValueError(f"train has {train.num_categories} label columns, validation {validation.num_categories}")
    categories = list(config.categories) or [str(i) for i in range(train.num_categories)]
    if len(categories) != train.num_categories:
        raise ValueError(f"{len(categories)} category names for {train.num_categories} label columns")
    shape = HeadShape(
        kind=config.kind,
        image_dim=int(np.shape(train.image_features)[1]),
        text_dim=int(np.shape(train.text_features)[1]),
        num_categories=train.num_categories,
        hidden=config.hidden,
        attention_heads=config.attention_heads,
        dropout=config.dropout,
    )
    train_batch, validation_batch = train.tensors(), validation.tensors()
    pos_weight = _positive_weights(train) if config.balance_positives else None
    members, history, best_epochs = [], [], []
    for member in range(config.members):

        def progress(epoch: int, epochs: int, member: int = member) -> None:
            if on_progress is not None:
                on_progress(member * epochs + epoch, config.members * epochs)

        head, member_history, best_epoch = _train_one(
            config,
            shape,
            train_batch,
            validation_batch,
            pos_weight,
            count=len(train),
            seed=seed + member,
            on_progress=progress,
        )
        members.append(head)
        history += [{**entry, "member": member} for entry in member_history] if config.members > 1 else member_history
        best_epochs.append(best_epoch)
    head = members[0] if len(members) == 1 else HeadEnsemble(members)
    head.eval()
    validation_loss, validation_logits = _evaluate_loss(head, validation_batch, pos_weight)

    known = validation.known()
    validation_labels = np.where(known, np.nan_to_num(np.asarray(validation.labels, dtype=np.float64)), 0.0)
    logits = validation_logits.numpy().astype(np.float64)
    calibrator: Calibrator
    if config.calibration == "isotonic":
        calibrator = IsotonicCalibrator().fit(logits, validation_labels, known)
    elif config.calibration == "platt":
        calibrator = PlattScaler().fit(logits, validation_labels, known)
    elif config.calibration == "temperature":
        calibrator = TemperatureScaler().fit(logits, validation_labels, known)
    else:
        calibrator = TemperatureScaler([1.0] * len(categories))
    probabilities = calibrator.transform(logits)
    details = choose_threshold_details(
        probabilities, validation_labels, known, strategy=config.threshold_strategy, categories=categories
    )
    per_category = {name: choice.to_dict() for name, choice in details.items()}
    metrics: dict[str, Any] = {
        "loss": validation_loss,
        "best_epoch": best_epochs[0] if len(best_epochs) == 1 else best_epochs,
        "epochs_run": len(history),
        "macro_f1": float(np.mean([choice.f1 for choice in details.values()])),
        "per_category": per_category,
    }
    logger.info(
        "trained fusion %s (%d member%s): validation loss %.4f, macro F1 %.3f at epoch %s",
        config.kind,
        config.members,
        "" if config.members == 1 else "s",
        validation_loss,
        metrics["macro_f1"],
        metrics["best_epoch"],
    )
    return TrainedFusionHead(
        head=head,
        config=config,
        categories=categories,
        calibrator=calibrator,
        thresholds={name: choice.threshold for name, choice in details.items()},
        threshold_details=details,
        validation_metrics=metrics,
        history=history,
    )


def _train_one(
    config: FusionConfig,
    shape: HeadShape,
    train_batch: dict[str, Tensor | None],
    validation_batch: dict[str, Tensor | None],
    pos_weight: Tensor | None,
    *,
    count: int,
    seed: int,
    on_progress: Callable[[int, int], None],
) -> tuple[FusionHead, list[dict[str, float]], int]:
    """One head trained from ``seed`` on the ``count`` items of ``train_batch``, at its epoch with the lowest
    validation loss; its history and that epoch."""
    history: list[dict[str, float]] = []
    # fork_rng: seeding here must not change the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        head = build_head(shape)
        optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best_loss, best_epoch, best_state = float("inf"), 0, _copy_state(head)
        for epoch in range(1, config.epochs + 1):
            head.train()
            order = torch.randperm(count, generator=generator)
            total, seen = 0.0, 0
            for start in range(0, count, config.batch_size):
                batch = _select(train_batch, order[start : start + config.batch_size])
                if config.modality_dropout:
                    _drop_modalities(batch, config.modality_dropout, generator)
                labels = batch["labels"]
                assert labels is not None
                loss = masked_bce_with_logits(
                    _head_logits(head, batch),
                    labels,
                    batch["label_mask"],
                    pos_weight=pos_weight,
                    weight=batch["label_weight"],
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, seen = total + loss.item() * len(labels), seen + len(labels)
            validation_loss, _ = _evaluate_loss(head, validation_batch, pos_weight)
            history.append({"epoch": epoch, "train_loss": total / seen, "validation_loss": validation_loss})
            logger.debug(
                "fusion %s epoch %d: train %.4f validation %.4f", config.kind, epoch, total / seen, validation_loss
            )
            if validation_loss < best_loss:
                best_loss, best_epoch, best_state = validation_loss, epoch, _copy_state(head)
            on_progress(epoch, config.epochs)
            if epoch - best_epoch >= config.patience:
                logger.info("fusion %s stopped early at epoch %d (best %d)", config.kind, epoch, best_epoch)
                break
        head.load_state_dict(best_state)
    return head, history, best_epoch


def _copy_state(head: FusionHead) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in head.state_dict().items()}


def save_head(
    trained: TrainedFusionHead,
    out_dir: Path,
    *,
    name: str,
    version: str,
    categories: Sequence[str] | None = None,
    licence: str = "",
    extra: dict[str, Any] | None = None,
) -> ModelSpec:
    """Write ``out_dir/weights.safetensors`` and ``out_dir/config.json`` and return the model's spec (family
    ``fusion-head``, source ``file:out_dir``, sha256 of the directory, labels, thresholds).

    ``categories`` names the label columns; by default the names the head was trained with. Names given here
    replace those positionally (a head trained with default names "0", "1", ... gets its real ones).
    """
    names = list(trained.categories if categories is None else categories)
    if len(names) != len(trained.categories):
        raise ValueError(f"{len(names)} category names for a head with {len(trained.categories)} categories")
    renamed = dict(zip(trained.categories, names, strict=True))
    thresholds = {renamed[old]: value for old, value in trained.thresholds.items()}
    validation_metrics = {
        **trained.validation_metrics,
        "per_category": {renamed[old]: m for old, m in trained.validation_metrics["per_category"].items()},
    }
    out_dir = Path(out_dir).resolve()
    write_head(
        out_dir,
        trained.head,
        calibrator=trained.calibrator,
        categories=names,
        thresholds=thresholds,
        extra={"training": trained.config.to_dict(), "validation_metrics": validation_metrics},
    )
    return ModelSpec(
        name=name,
        version=version,
        family="fusion-head",
        source=f"file:{out_dir}",
        sha256=sha256_path(out_dir),
        task="multi-label-classification",
        labels=names,
        thresholds=thresholds,
        licence=licence,
        extra={
            "head_kind": trained.head.kind,
            "calibration": trained.calibrator.kind,
            "validation_metrics": validation_metrics,
            **(extra or {}),
        },
    )
