from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

import ml
from ml.fusion import (
    FusionConfig,
    FusionData,
    HeadEnsemble,
    HeadShape,
    IsotonicCalibrator,
    LateFusionHead,
    PlattScaler,
    SymmetricInfoNCE,
    TemperatureScaler,
    TrainedFusionHead,
    build_head,
    calibrator_from_dict,
    choose_threshold_details,
    choose_thresholds,
    info_nce_loss,
    masked_bce_with_logits,
    save_head,
    train_fusion_head,
)
from ml.fusion.calibration import sigmoid
from ml.sources import ChecksumMismatch
from ml.specs import ModelSpec

CATEGORIES = ("adult_image", "spam_text")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The box is shared; one thread is also what makes timings and results stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def modality_data(count: int, seed: int) -> FusionData:
    """Category 0 depends only on the image features, category 1 only on the text features."""
    rng = np.random.default_rng(seed)
    image, text = rng.normal(size=(count, 16)), rng.normal(size=(count, 12))
    image_positive, text_positive = rng.random(count) < 0.4, rng.random(count) < 0.4
    image[:, 0] += np.where(image_positive, 2.0, -2.0)
    text[:, 0] += np.where(text_positive, 2.0, -2.0)
    return FusionData(
        image_features=image.astype(np.float32),
        text_features=text.astype(np.float32),
        labels=np.stack([image_positive, text_positive], axis=1).astype(np.float32),
    )


def patch_data(count: int, seed: int, hot: tuple[int, int] = (1, 2)) -> FusionData:
    """3x3 image patches: only patch ``hot`` carries the signal of category 0 (and a marker saying where it is)."""
    rng = np.random.default_rng(seed)
    patches = rng.normal(size=(count, 3, 3, 8))
    image_positive = rng.random(count) < 0.5
    patches[:, hot[0], hot[1], 1] += 3.0
    patches[:, hot[0], hot[1], 0] += np.where(image_positive, 2.0, -2.0)
    tokens = rng.normal(size=(count, 4, 6))
    text_positive = rng.random(count) < 0.5
    tokens[:, :, 0] += np.where(text_positive, 1.0, -1.0)[:, None]
    token_mask = np.ones((count, 4), dtype=bool)
    token_mask[:, 3] = rng.random(count) < 0.5
    return FusionData(
        image_features=patches.mean(axis=(1, 2)).astype(np.float32),
        text_features=tokens.mean(axis=1).astype(np.float32),
        labels=np.stack([image_positive, text_positive], axis=1).astype(np.float32),
        image_patches=patches.astype(np.float32),
        text_tokens=tokens.astype(np.float32),
        text_token_mask=token_mask,
    )


@pytest.fixture(scope="module")
def modality_split() -> tuple[FusionData, FusionData]:
    return modality_data(1200, seed=0), modality_data(400, seed=1)


@pytest.fixture(scope="module")
def trained_gated(modality_split: tuple[FusionData, FusionData]) -> TrainedFusionHead:
    torch.set_num_threads(1)
    train, validation = modality_split
    config = FusionConfig(kind="gated", categories=CATEGORIES, hidden=16, epochs=30, modality_dropout=0.2)
    return train_fusion_head(config, train, validation, seed=0)


def mean_image_attribution(explanations: list[dict], rows: np.ndarray) -> float:
    return float(np.mean([explanations[i]["modality_attribution"]["image"] for i in np.flatnonzero(rows)]))


def test_gated_head_learns_which_modality_carries_each_category(
    trained_gated: TrainedFusionHead, modality_split: tuple[FusionData, FusionData]
) -> None:
    _, validation = modality_split
    per_category = trained_gated.validation_metrics["per_category"]
    assert per_category["adult_image"]["f1"] > 0.9 and per_category["spam_text"]["f1"] > 0.9

    prediction = trained_gated.predictor().predict(validation.image_features, validation.text_features)
    image_only = (validation.labels[:, 0] > 0) & (validation.labels[:, 1] == 0)
    text_only = (validation.labels[:, 1] > 0) & (validation.labels[:, 0] == 0)
    assert mean_image_attribution(prediction.explanations, image_only) > 0.7
    assert mean_image_attribution(prediction.explanations, text_only) < 0.3
    first = prediction.explanations[int(np.flatnonzero(image_only)[0])]
    assert first["per_category"]["adult_image"]["image"] > first["per_category"]["spam_text"]["image"]
    assert set(first["gate_mean"]) == {"image", "text"}


def test_a_head_trained_with_modality_dropout_still_flags_text_only_posts(
    trained_gated: TrainedFusionHead, modality_split: tuple[FusionData, FusionData]
) -> None:
    _, validation = modality_split
    prediction = trained_gated.predictor().predict(None, validation.text_features)
    spam = validation.labels[:, 1] > 0
    decided = prediction.decisions[:, 1]
    assert (decided == spam).mean() > 0.9
    for explanation in prediction.explanations:
        assert explanation["modality_attribution"] == pytest.approx({"image": 0.0, "text": 1.0})


def test_late_fusion_weights_favour_the_informative_modality(modality_split: tuple[FusionData, FusionData]) -> None:
    train, validation = modality_split
    config = FusionConfig(kind="late", categories=CATEGORIES, epochs=20)
    trained = train_fusion_head(config, train, validation, seed=0)
    assert trained.validation_metrics["macro_f1"] > 0.9
    assert isinstance(trained.head, LateFusionHead)
    weights = trained.head.modality_weights().detach().numpy()  # rows: image, text
    assert weights[0, 0] > 0.8, "the image category is weighted to the image"
    assert weights[1, 1] > 0.8, "the text category is weighted to the text"

    prediction = trained.predictor().predict(validation.image_features, validation.text_features)
    explanation = prediction.explanations[0]["per_category"]
    assert explanation["adult_image"]["image_weight"] == pytest.approx(weights[0, 0], abs=1e-6)
    image_only = (validation.labels[:, 0] > 0) & (validation.labels[:, 1] == 0)
    assert mean_image_attribution(prediction.explanations, image_only) > 0.7


def test_cross_attention_peaks_at_the_patch_that_carries_the_signal() -> None:
    train, validation = patch_data(800, seed=0), patch_data(250, seed=1)
    config = FusionConfig(kind="cross_attention", categories=CATEGORIES, hidden=16, attention_heads=2, epochs=30)
    trained = train_fusion_head(config, train, validation, seed=0)
    assert trained.validation_metrics["per_category"]["adult_image"]["f1"] > 0.85

    prediction = trained.predictor().predict(
        validation.image_features,
        validation.text_features,
        image_patches=validation.image_patches,
        text_tokens=validation.text_tokens,
        text_token_mask=validation.text_token_mask,
    )
    maps = np.array([e["attention"] for e in prediction.explanations])
    assert maps.shape == (250, 3, 3) and prediction.explanations[0]["attention_grid"] == [3, 3]
    assert np.allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    peaks = maps.reshape(len(maps), -1).argmax(axis=1)
    assert (peaks == 1 * 3 + 2).mean() > 0.8
    assert maps[:, 1, 2].mean() > 3 * np.delete(maps.reshape(len(maps), -1), 5, axis=1).mean()

    patches_only = trained.predictor().predict(
        None,
        validation.text_features,
        image_patches=validation.image_patches,
        text_tokens=validation.text_tokens,
        text_token_mask=validation.text_token_mask,
    )
    assert np.allclose(patches_only.probabilities, prediction.probabilities, atol=1e-5), "patches alone suffice"


@pytest.mark.parametrize("kind", ["early", "late", "gated", "cross_attention"])
def test_a_missing_modality_is_ignored_and_attributed_nothing(kind: str) -> None:
    torch.manual_seed(0)
    head = build_head(HeadShape(kind=kind, image_dim=5, text_dim=4, num_categories=3, hidden=8)).eval()
    generator = torch.Generator().manual_seed(1)
    image, text = torch.randn(6, 5, generator=generator), torch.randn(6, 4, generator=generator)
    patches = torch.randn(6, 4, 5, generator=generator)
    image_present = torch.tensor([True, True, False, False, True, True])
    text_present = torch.tensor([True, False, True, False, True, True])
    inputs = {"image_present": image_present, "text_present": text_present, "image_patches": patches}
    with torch.no_grad():
        logits = head(image, text, **inputs)
        scrambled = {**inputs, "image_patches": patches + 100.0 * (~image_present)[:, None, None]}
        changed = head(image + 100.0 * (~image_present)[:, None], text + 100.0 * (~text_present)[:, None], **scrambled)
        explanation = head.explain(image, text, **inputs)
    assert torch.allclose(logits, changed, atol=1e-5), "features of a missing modality leak into the logits"
    if kind == "cross_attention":
        attention = explanation["attention"]
        assert torch.all(attention[~image_present] == 0)
        assert torch.allclose(attention[image_present].sum(dim=1), torch.ones(4), atol=1e-5)
    else:
        image_share, text_share = explanation["image_attribution"], explanation["text_attribution"]
        assert image_share[1] == pytest.approx(1.0) and text_share[1] == 0.0, "image-only: all image"
        assert image_share[2] == 0.0 and text_share[2] == pytest.approx(1.0), "text-only: all text"
        assert image_share[3] == 0.0 and text_share[3] == 0.0, "neither: nothing"
        assert torch.allclose(image_share[[0, 4, 5]] + text_share[[0, 4, 5]], torch.ones(3), atol=1e-5)
    if kind == "late":
        assert torch.all(explanation["image_weight"][2] == 0) and torch.allclose(
            explanation["text_weight"][2], torch.ones(3)
        )


def test_info_nce_is_lower_for_aligned_embeddings() -> None:
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(8, 16, generator=generator)
    loss = SymmetricInfoNCE()
    aligned = loss(text + 0.05 * torch.randn(8, 16, generator=generator), text)
    shuffled = loss(text[torch.randperm(8, generator=generator)], text)
    random = loss(torch.randn(8, 16, generator=generator), text)
    assert aligned < 0.1
    assert random > 1.0 and shuffled > 1.0

    # Learning to align: a projection of the images trained with the loss (and its temperature) brings it down.
    images = torch.randn(8, 16, generator=generator)
    projection = torch.nn.Linear(16, 16)
    optimiser = torch.optim.Adam([*projection.parameters(), *loss.parameters()], lr=0.05)
    losses = []
    for _ in range(60):
        step = loss(projection(images), text)
        optimiser.zero_grad()
        step.backward()
        optimiser.step()
        losses.append(step.item())
    assert losses[-1] < losses[0] / 10
    assert loss.logit_scale.item() != pytest.approx(math.log(1 / 0.07))


def test_info_nce_does_not_treat_duplicates_as_negatives() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(6, 16, generator=generator)
    text = image + 0.01 * torch.randn(6, 16, generator=generator)
    text[1] = text[0]  # two products with one title
    image[1] = image[0] + 0.01 * torch.randn(16, generator=generator)
    same = torch.zeros(6, 6, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    plain = SymmetricInfoNCE()(image, text).item()
    masked = SymmetricInfoNCE()(image, text, same).item()
    # Plain InfoNCE must split each duplicate row between two equal candidates: log 2 on 2 of 6 rows, both ways.
    assert plain == pytest.approx(math.log(2) / 3, abs=0.02)
    assert masked < 0.05
    assert SymmetricInfoNCE()(image, text, torch.zeros(6, 6, dtype=torch.bool)).item() == pytest.approx(plain)

    def push_on_duplicate(mode: Literal["mask", "soft"] | None) -> float:
        """The gradient on the similarity of image 0 to its duplicate text 1: positive means pushed apart."""
        logits = SymmetricInfoNCE().similarity_logits(image, text).detach().requires_grad_()
        targets = None if mode is None else same
        info_nce_loss(logits, same_target=targets, mode="mask" if mode is None else mode).backward()
        assert logits.grad is not None
        return logits.grad[0, 1].item()

    assert push_on_duplicate(None) > 0.01
    assert push_on_duplicate("mask") == pytest.approx(0.0, abs=1e-6)
    assert push_on_duplicate("soft") == pytest.approx(0.0, abs=1e-3)


def test_info_nce_temperature_learns_and_is_clamped() -> None:
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    loss = SymmetricInfoNCE()
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    loss(image, text).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0

    capped = SymmetricInfoNCE()
    with torch.no_grad():
        capped.logit_scale.fill_(math.log(1000.0))
    assert capped.scale.item() == pytest.approx(100.0)
    assert capped.temperature == pytest.approx(0.01)
    capped(image, text).backward()
    assert capped.logit_scale.grad is not None and float(capped.logit_scale.grad) == 0.0


def test_masked_bce_ignores_unknown_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=generator)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mask = torch.tensor([[True, False, True], [True, True, False], [False, True, True], [True, True, True]])
    base = masked_bce_with_logits(logits, labels, mask)
    flipped_unknown = labels.clone()
    flipped_unknown[0, 1], flipped_unknown[1, 2] = 1.0, float("nan")
    assert masked_bce_with_logits(logits, flipped_unknown, mask) == base
    flipped_known = labels.clone()
    flipped_known[0, 0] = 0.0
    assert masked_bce_with_logits(logits, flipped_known, mask) != base

    weighted = masked_bce_with_logits(logits, labels, mask, pos_weight=torch.tensor([3.0, 1.0, 1.0]))
    assert weighted > base
    no_positives_in_0 = labels.clone()
    no_positives_in_0[:, 0] = 0.0
    assert masked_bce_with_logits(
        logits, no_positives_in_0, mask, pos_weight=torch.tensor([3.0, 1.0, 1.0])
    ) == pytest.approx(float(masked_bce_with_logits(logits, no_positives_in_0, mask)))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            error += rows.mean() * abs(probabilities[rows].mean() - labels[rows].mean())
    return error


def overconfident_logits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(scale=1.5, size=(count, 2))
    labels = (rng.random((count, 2)) < sigmoid(true_logits)).astype(np.float64)
    return true_logits * np.array([4.0, 0.5]), labels  # category 0 over-confident, category 1 under-confident


def test_temperature_scaling_reduces_calibration_error() -> None:
    logits, labels = overconfident_logits(3000, seed=0)
    test_logits, test_labels = overconfident_logits(3000, seed=1)
    scaler = TemperatureScaler().fit(logits, labels)
    assert scaler.temperatures is not None
    assert scaler.temperatures[0] == pytest.approx(4.0, rel=0.15) and scaler.temperatures[1] == pytest.approx(
        0.5, rel=0.15
    )
    calibrated = scaler.transform(test_logits)
    for category in range(2):
        before = expected_calibration_error(sigmoid(test_logits[:, category]), test_labels[:, category])
        after = expected_calibration_error(calibrated[:, category], test_labels[:, category])
        assert after < before / 2 and after < 0.03
    from_probabilities = scaler.transform(sigmoid(test_logits), are_probabilities=True)
    moderate = np.abs(test_logits) < 15  # beyond, probabilities are clipped before the logit is taken back
    assert np.allclose(from_probabilities[moderate], calibrated[moderate], atol=1e-6)
    restored = calibrator_from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert np.allclose(restored.transform(test_logits), calibrated)


def test_temperature_scaling_ignores_unknown_labels() -> None:
    logits, labels = overconfident_logits(1000, seed=0)
    mask = np.ones_like(labels, dtype=bool)
    mask[::3, 0] = False
    corrupted = labels.copy()
    corrupted[~mask] = 1.0 - corrupted[~mask]
    fitted = TemperatureScaler().fit(logits, labels, mask).to_dict()["temperatures"]
    assert fitted == TemperatureScaler().fit(logits, corrupted, mask).to_dict()["temperatures"]
    assert fitted != TemperatureScaler().fit(logits, corrupted).to_dict()["temperatures"]


def test_platt_scaling_also_moves_logits_that_a_temperature_can_only_scale() -> None:
    # Logits 4 t + 2 and 0.5 t - 1.5 of true logits t: the calibrated maps are 0.25 z - 0.5 and 2 z + 3.
    def shifted(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        logits, labels = overconfident_logits(count, seed)
        return logits + np.array([2.0, -1.5]), labels

    logits, labels = shifted(4000, seed=0)
    test_logits, test_labels = shifted(4000, seed=1)
    platt = PlattScaler().fit(logits, labels)
    assert platt.slopes is not None and platt.offsets is not None
    assert platt.slopes == pytest.approx([0.25, 2.0], rel=0.15)
    assert platt.offsets == pytest.approx([-0.5, 3.0], rel=0.2)
    temperature = TemperatureScaler().fit(logits, labels).transform(test_logits)
    calibrated = platt.transform(test_logits)
    for category in range(2):
        by_platt = expected_calibration_error(calibrated[:, category], test_labels[:, category])
        by_temperature = expected_calibration_error(temperature[:, category], test_labels[:, category])
        assert by_platt < 0.03 and by_platt < by_temperature / 2, (category, by_platt, by_temperature)
    restored = calibrator_from_dict(json.loads(json.dumps(platt.to_dict())))
    assert np.allclose(restored.transform(test_logits), calibrated)


def test_platt_scaling_on_a_few_separable_posts_stays_finite_and_short_of_certain() -> None:
    logits = np.array([[-3.0, 1.0], [-2.0, 1.0], [-1.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    labels = np.array([[0, 1], [0, 1], [0, 1], [1, 1], [1, 1], [1, 1]], dtype=float)
    platt = PlattScaler().fit(logits, labels)
    calibrated = platt.transform(logits)
    # Smoothed targets 1/5 and 4/5 (three of each): a separable sample is not read as certainty.
    assert 0.05 < calibrated[:, 0].min() < 0.5 < calibrated[:, 0].max() < 0.95
    assert np.all(np.diff(calibrated[:, 0]) > 0)
    assert np.allclose(calibrated[:, 1], sigmoid(logits[:, 1])), "a single known class leaves the map as identity"
    with pytest.raises(ValueError, match="not fitted"):
        PlattScaler().transform(logits)


def test_isotonic_calibration_is_monotone_and_travels_as_json() -> None:
    logits, labels = overconfident_logits(2000, seed=0)
    calibrator = IsotonicCalibrator().fit(logits, labels)
    grid = np.repeat(np.linspace(-12, 12, 301)[:, None], 2, axis=1)
    calibrated = calibrator.transform(grid)
    assert np.all(np.diff(calibrated, axis=0) >= 0)
    assert calibrated.min() >= 0.0 and calibrated.max() <= 1.0
    test_logits, test_labels = overconfident_logits(2000, seed=1)
    before = expected_calibration_error(sigmoid(test_logits[:, 0]), test_labels[:, 0])
    assert expected_calibration_error(calibrator.transform(test_logits)[:, 0], test_labels[:, 0]) < before / 2
    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert np.array_equal(restored.transform(grid), calibrated)


def test_thresholds_hit_the_target_precision_on_a_hand_made_example() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.95, 0.85])
    labels = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    mask = np.array([True] * 8 + [False, False])  # two unknown labels that would spoil the precision if counted
    # precision from the top: 1, 1, 2/3, 3/4, 4/5, 4/6, 4/7, 5/8; F1 is best (0.8) from 0.5 down to just above 0.4,
    # so the threshold is the middle of (0.4, 0.5]
    probabilities, truth, known = scores[:, None], labels[:, None], mask[:, None]
    assert choose_thresholds(probabilities, truth, known, strategy=("precision", 0.95)) == {"0": pytest.approx(0.75)}
    assert choose_thresholds(probabilities, truth, known, strategy=("precision", 0.75)) == {"0": pytest.approx(0.45)}
    details = choose_threshold_details(probabilities, truth, known, strategy="f1", categories=["spam"])
    assert details["spam"].threshold == pytest.approx(0.45) and details["spam"].f1 == pytest.approx(0.8)
    decided = scores[mask] >= details["spam"].threshold
    assert labels[mask][decided].mean() == pytest.approx(details["spam"].precision) == 0.8

    unreachable = choose_threshold_details(probabilities, truth, known, strategy=("precision", 1.0))["0"]
    assert unreachable.threshold == pytest.approx(0.75) and not unreachable.fallback
    no_positives = choose_threshold_details(probabilities, np.zeros_like(truth), known)["0"]
    assert no_positives.threshold == 0.5 and no_positives.fallback and no_positives.support == 0
    low = choose_threshold_details(np.array([[0.9], [0.8]]), np.array([[0.0], [1.0]]), strategy=("precision", 0.99))
    assert low["0"].fallback and low["0"].threshold == 0.8  # the lowest score: no score below it


def test_training_is_reproducible_with_a_seed_and_leaves_global_randomness_alone(
    modality_split: tuple[FusionData, FusionData],
) -> None:
    train, validation = modality_split
    config = FusionConfig(kind="early", hidden=16, epochs=4, calibration="isotonic", modality_dropout=0.2)
    torch.manual_seed(123)
    state_before = torch.random.get_rng_state()
    progress: list[tuple[int, int]] = []
    first = train_fusion_head(config, train, validation, seed=7, on_progress=lambda *step: progress.append(step))
    assert torch.equal(torch.random.get_rng_state(), state_before)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    second = train_fusion_head(config, train, validation, seed=7)
    other = train_fusion_head(config, train, validation, seed=8)
    for key, value in first.head.state_dict().items():
        assert torch.equal(value, second.head.state_dict()[key])
    assert first.thresholds == second.thresholds and first.history == second.history
    assert first.calibrator.to_dict() == second.calibrator.to_dict()
    assert any(not torch.equal(v, other.head.state_dict()[k]) for k, v in first.head.state_dict().items())


def test_training_respects_label_masks() -> None:
    train, validation = modality_data(600, seed=2), modality_data(200, seed=3)
    # Two sources: the first half labels only the image category, the second only the text one.
    mask = np.zeros_like(train.labels, dtype=bool)
    mask[:300, 0], mask[300:, 1] = True, True
    garbage = train.labels.copy()
    garbage[~mask] = np.nan
    masked = FusionData(train.image_features, train.text_features, garbage, label_mask=mask)
    trained = train_fusion_head(FusionConfig(kind="late", epochs=15), masked, validation, seed=0)
    assert trained.validation_metrics["macro_f1"] > 0.9
    assert all(not math.isnan(entry["train_loss"]) for entry in trained.history)


def test_a_saved_head_loads_through_ml_load_with_the_same_outputs(
    trained_gated: TrainedFusionHead, modality_split: tuple[FusionData, FusionData], tmp_path: Path
) -> None:
    _, validation = modality_split
    image_present = np.arange(len(validation)) % 5 != 0
    before = trained_gated.predictor().predict(
        validation.image_features, validation.text_features, image_present=image_present
    )
    spec = save_head(trained_gated, tmp_path / "head", name="fusion-roundtrip", version="1.0.0", licence="Apache-2.0")
    assert spec.family == "fusion-head" and spec.source == f"file:{(tmp_path / 'head').resolve()}"
    assert spec.labels == list(CATEGORIES) and spec.thresholds == trained_gated.thresholds
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["config.json", "weights.safetensors"]
    spec = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # the spec travels as JSON

    loaded = ml.load("fusion-roundtrip", spec=spec)
    after = loaded.predict(validation.image_features, validation.text_features, image_present=image_present)
    assert np.allclose(after.probabilities, before.probabilities, atol=1e-6)
    assert np.array_equal(after.decisions, before.decisions)
    for loaded_explanation, trained_explanation in zip(after.explanations, before.explanations, strict=True):
        assert loaded_explanation["modality_attribution"] == pytest.approx(trained_explanation["modality_attribution"])
    assert after.model_version == "fusion-roundtrip@1.0.0"
    assert after.decided_categories(int(np.argmax(after.probabilities[:, 0])))[0] == "adult_image"

    retuned = ModelSpec.from_dict({**spec.to_dict(), "version": "1.0.1", "thresholds": {"adult_image": 1.1}})
    assert not ml.load("fusion-roundtrip", spec=retuned).predict(validation.image_features, None).decisions[:, 0].any()


def test_an_ensemble_serves_its_members_mean_and_saves_and_loads_as_one_head(
    modality_split: tuple[FusionData, FusionData], tmp_path: Path
) -> None:
    train, validation = modality_split
    config = FusionConfig(kind="gated", categories=CATEGORIES, hidden=16, epochs=6, members=3)
    progress: list[tuple[int, int]] = []
    trained = train_fusion_head(config, train, validation, seed=4, on_progress=lambda *step: progress.append(step))
    assert isinstance(trained.head, HeadEnsemble) and trained.head.kind == "gated"
    assert progress[-1] == (18, 18) and len(trained.validation_metrics["best_epoch"]) == 3
    assert {entry["member"] for entry in trained.history} == {0, 1, 2}
    # Member i is the head one training from seed 4 + i gives.
    single = train_fusion_head(
        FusionConfig(kind="gated", categories=CATEGORIES, hidden=16, epochs=6), train, validation, seed=5
    )
    for key, value in single.head.state_dict().items():
        assert torch.equal(value, trained.head.members[1].state_dict()[key])

    inputs = {key: torch.as_tensor(getattr(validation, key)) for key in ("image_features", "text_features")}
    with torch.no_grad():
        members = [member(inputs["image_features"], inputs["text_features"]) for member in trained.head.members]
        assert torch.allclose(
            trained.head(inputs["image_features"], inputs["text_features"]), torch.stack(members).mean(0)
        )
    prediction = trained.predictor().predict(validation.image_features, validation.text_features)
    assert trained.validation_metrics["macro_f1"] > 0.9
    for explanation in prediction.explanations[:20]:
        assert explanation["method"] == "gated"
        assert sum(explanation["modality_attribution"].values()) == pytest.approx(1.0)

    spec = save_head(trained, tmp_path / "ensemble", name="fusion-ensemble", version="1.0.0")
    loaded = ml.load("fusion-ensemble", spec=spec)
    after = loaded.predict(validation.image_features, validation.text_features)
    assert isinstance(loaded.head, HeadEnsemble) and len(loaded.head.members) == 3
    assert np.allclose(after.probabilities, prediction.probabilities, atol=1e-6)


def test_an_ensemble_of_heads_of_different_shapes_is_refused() -> None:
    with pytest.raises(ValueError, match="share one shape"):
        HeadEnsemble([build_head(HeadShape("late", 4, 3, 2)), build_head(HeadShape("late", 4, 5, 2))])
    with pytest.raises(ValueError, match="at least two"):
        HeadEnsemble([build_head(HeadShape("late", 4, 3, 2))])


def test_a_tampered_head_is_refused(trained_gated: TrainedFusionHead, tmp_path: Path) -> None:
    spec = save_head(trained_gated, tmp_path / "head", name="fusion-tampered", version="1.0.0")
    weights = tmp_path / "head" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="fusion-tampered"):
        ml.load("fusion-tampered", spec=spec)
