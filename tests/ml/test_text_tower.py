"""The text tower: the packaged MiniLM's top layers fine-tuned on moderation labels, cross-fitted and refit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import ml
from apps.moderation.demo_corpus import hateful, offensive, ordinary, spam
from ml.eval.classification import binary_report
from ml.tasks.text_tower import TextTower, TowerConfig, TowerMismatch, _base, _through, train_text_tower

CATEGORIES = ["hate_speech", "spam"]


def test_the_frozen_layers_and_the_copied_top_reproduce_the_packaged_embedding() -> None:
    """The tower runs BERT's layers itself (its own attention mask): untouched, they must give MiniLM's own
    sentence embedding, or the tuned layers would start from something else."""
    import torch

    base = _base(TowerConfig(deobfuscated=False), "cpu")  # MiniLM reads texts as written
    texts = ["you are a wonderful person", "WINNER! text CLAIM to 80086 now", "ok", "a " * 40]
    states, mask = base.states(texts)
    with torch.no_grad():
        hidden = _through(base.upper, states, mask)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()

    reference = ml.load("minilm-l6-v2").encode_texts(texts)

    assert np.allclose((pooled * reference).sum(-1), 1.0, atol=1e-4)


def _corpus(count: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts labelled for hate speech (hateful vs ordinary or offensive) or for spam (spam vs ordinary)."""
    draw = random.Random(seed)
    texts, targets, weight = [], [], []
    for _ in range(count):
        for text, target, known in (
            (hateful(draw), [1, 0], [1, 0]),
            (offensive(draw), [0, 0], [1, 0]),
            (ordinary(draw), [0, 0], [1, 0]),
            (spam(draw), [0, 1], [0, 1]),
            (ordinary(draw), [0, 0], [0, 1]),
        ):
            texts.append(text)
            targets.append(target)
            weight.append(known)
    return texts, np.asarray(targets, np.float32), np.asarray(weight, np.float32)


def _train(*, refit: bool) -> tuple[TextTower, np.ndarray, dict, np.ndarray, np.ndarray]:
    texts, targets, weight = _corpus(24, seed=0)
    validation_texts, validation_targets, validation_known = _corpus(6, seed=1)
    folds = np.arange(len(texts)) % 2
    tower, out_of_fold, report = train_text_tower(
        texts,
        targets,
        weight,
        folds,
        categories=CATEGORIES,
        validation_texts=validation_texts,
        validation_labels=validation_targets,
        validation_known=validation_known > 0,
        config=TowerConfig(epochs=3, batch_size=16, lr_layers=1e-4, lr_head=3e-3, refit=refit),
    )
    return tower, out_of_fold, report, targets, weight


@pytest.fixture(scope="module")
def trained() -> tuple[TextTower, np.ndarray, dict, np.ndarray, np.ndarray]:
    return _train(refit=True)


def test_out_of_fold_logits_rank_the_labels_and_each_copy_keeps_its_best_epoch(trained) -> None:
    tower, out_of_fold, report, targets, weight = trained

    for column, name in enumerate(CATEGORIES):
        rows = weight[:, column] > 0
        auc = binary_report(targets[rows, column] > 0.5, out_of_fold[rows, column], 0.0)["roc_auc"]
        assert auc is not None and auc > 0.95, f"{name}: out-of-fold ROC-AUC {auc}"
    assert len(report["folds"]) == 2
    for kept in [*report["folds"], report["refit"]]:
        losses = kept["validation_loss"]
        assert len(losses) == 3 and kept["kept_epoch"] == 1 + int(np.argmin(losses))
    assert [fold["training_texts"] for fold in report["folds"]] == [60, 60]
    assert report["refit"]["training_texts"] == 120
    assert len(tower.tops) == 1, "new texts are scored by the copy refit on every training text"


NEW_TEXTS = ["the zorvians are vermin, get rid of them", "claim a cash prize now, text CLAIM to 55555", "hi"]


def test_a_saved_tower_gives_the_same_logits(trained, tmp_path: Path) -> None:
    tower = trained[0]

    logits = tower.logits(NEW_TEXTS)
    tower.save(tmp_path / "tower")
    loaded = TextTower.load(tmp_path / "tower")

    assert np.allclose(loaded.logits(NEW_TEXTS), logits, atol=1e-5)
    assert logits[0, 0] > logits[2, 0] and logits[1, 1] > logits[2, 1]


def test_without_a_refit_new_texts_get_the_mean_of_the_fold_copies(tmp_path: Path) -> None:
    tower, _, report, _, _ = _train(refit=False)

    logits = tower.logits(NEW_TEXTS)
    tower.save(tmp_path / "tower")

    assert len(tower.tops) == 2 and "refit" not in report
    assert np.allclose(logits, (tower.logits(NEW_TEXTS, fold=0) + tower.logits(NEW_TEXTS, fold=1)) / 2, atol=1e-5)
    assert np.allclose(TextTower.load(tmp_path / "tower").logits(NEW_TEXTS), logits, atol=1e-5)


def test_a_tower_tuned_on_another_base_version_is_refused(trained, tmp_path: Path) -> None:
    trained[0].save(tmp_path / "tower")
    config = tmp_path / "tower" / "tower.json"
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "base_version": "minilm-l6-v2@0.9"}))

    with pytest.raises(TowerMismatch, match="retrain"):
        TextTower.load(tmp_path / "tower")


def test_the_tower_reads_leetspeak_as_the_plain_word_and_an_older_tower_reads_as_written(trained, tmp_path) -> None:
    tower = trained[0]
    plain, spelt = "the zorvians are vermin", "the zorvians are v3rmin"

    assert np.allclose(tower.logits([spelt]), tower.logits([plain]), atol=1e-5)

    tower.save(tmp_path / "tower")
    config = tmp_path / "tower" / "tower.json"
    saved = json.loads(config.read_text())
    del saved["config"]["deobfuscated"]  # as a tower saved before deobfuscation was written
    config.write_text(json.dumps(saved))
    older = TextTower.load(tmp_path / "tower")

    assert older.config.deobfuscated is False
    assert not np.allclose(older.logits([spelt]), older.logits([plain]), atol=1e-3)
