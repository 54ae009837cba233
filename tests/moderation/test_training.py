"""moderation_train and evaluate moderation through their commands, on a generated corpus and reviewed decisions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.moderation.demo_corpus import ordinary, spam, write_corpus
from apps.moderation.models import Category, ContentItem
from apps.moderation.services import (
    FUSION_MODEL_NAME,
    moderation_item_submit,
    review_task_decide,
    review_task_next,
)
from apps.moderation.training import is_reviewed_holdout
from apps.registry.models import ModelVersion
from tests.moderation.test_scoring import finish_scoring

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def models_dir(settings, tmp_path: Path) -> Path:
    settings.VLP_VAR_DIR = tmp_path / "var"
    return settings.VLP_VAR_DIR


def train(*args: str) -> ModelVersion:
    out = io.StringIO()
    call_command("moderation_train", *args, stdout=out, stderr=io.StringIO())
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith(f"registered {FUSION_MODEL_NAME}@")
    name, _, version = last.removeprefix("registered ").partition("@")
    return ModelVersion.objects.get(name=name, version=version)


def test_the_first_model_becomes_champion_and_evaluate_reports_it_per_field(tmp_path: Path) -> None:
    version = train("--data", str(write_corpus(tmp_path / "train")))

    assert version.status == "champion" and version.family == "moderation-model"
    assert version.metrics["promotion"]["reason"].startswith("first champion")
    test = version.metrics["test"]["categories"]
    assert {"hate_speech", "harassment", "spam", "misinformation"} <= set(test)
    assert all(test[name]["f1"] > 0.8 for name in ("hate_speech", "spam")), test
    assert version.metrics["fallbacks"] == {"adult_content": {"feature": "nsfw", "threshold": 0.8}}
    assert "violence" in version.metrics["not_trained"]

    unseen = tmp_path / "unseen.jsonl"
    call_command(
        "moderation_export_jsonl", "--data", str(write_corpus(tmp_path / "eval", seed=1)), "--out", str(unseen)
    )
    with unseen.open("a") as handle:  # one labelled only for a category the model cannot score without an image
        handle.write(json.dumps({"text": "hello there", "labels": {"adult_content": 0}, "source": "extra"}) + "\n")
    call_command(
        "evaluate", "moderation", "--data", str(unseen), "--json", str(tmp_path / "out.json"), "--by", "source"
    )

    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model"] == version.label
    hate = report["categories"]["hate_speech"]
    assert set(hate) == {
        "n",
        "positives",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "ece",
        "ece_calibrated_p95",
    }
    assert hate["n"] == 240 and hate["positives"] == 60 and hate["f1"] > 0.8 and hate["roc_auc"] > 0.9
    assert report["categories"]["adult_content"]["n"] == 0 and report["categories"]["adult_content"]["f1"] is None
    by_source = report["by"]["source"]
    assert set(by_source) == {"davidson", "sms", "liar", "extra"}
    assert set(by_source["sms"]) == {"spam"} and by_source["sms"]["spam"]["n"] == 120
    liar = by_source["liar"]["misinformation"]
    assert liar["n"] == 120 and liar["positives"] == 60


def test_an_ensemble_of_heads_calibrated_with_an_offset_saves_and_scores_like_any_other(tmp_path: Path) -> None:
    data = str(write_corpus(tmp_path / "train"))
    version = train("--data", data, "--calibration", "platt", "--head-members", "2", "--tower-epochs", "0")

    assert version.metrics["config"]["calibration"] == "platt" and version.metrics["config"]["head_members"] == 2
    assert len(version.metrics["validation"]["best_epoch"]) == 2
    assert version.metrics["test"]["categories"]["spam"]["f1"] > 0.8
    unseen = tmp_path / "unseen.jsonl"
    call_command(
        "moderation_export_jsonl", "--data", str(write_corpus(tmp_path / "eval", seed=1)), "--out", str(unseen)
    )
    out = tmp_path / "out.json"
    call_command("evaluate", "moderation", "--data", str(unseen), "--model", version.label, "--json", str(out))
    spam = json.loads(out.read_text())["categories"]["spam"]
    assert spam["f1"] > 0.8 and 0 <= spam["ece"] <= spam["ece_calibrated_p95"] + 0.1, spam


def test_a_tower_depth_the_base_model_does_not_have_or_no_head_is_refused_and_registers_nothing(tmp_path: Path) -> None:
    data = str(write_corpus(tmp_path / "train"))
    with pytest.raises(CommandError, match="--tower-layers must be at least 1, not 0"):
        train("--data", data, "--tower-layers", "0")
    with pytest.raises(CommandError, match="--head-members must be at least 1, not 0"):
        train("--data", data, "--head-members", "0")
    with pytest.raises(CommandError, match="tuned_layers must be between 1 and 5, not 6"):
        train("--data", data, "--tower-layers", "6", "--limit-per-source", "40")
    assert not ModelVersion.objects.filter(name=FUSION_MODEL_NAME).exists()


def test_evaluate_refuses_bad_lines_and_a_missing_champion(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"text": "fine", "labels": {"spam": 0}}\n')
    bad.write_text('{"text": "fine", "labels": {"spam": 0}}\nnot json\n')
    with pytest.raises(CommandError, match="train one first"):
        call_command("evaluate", "moderation", "--data", str(good), "--json", str(tmp_path / "o.json"))
    with pytest.raises(CommandError, match=r"bad.jsonl:2: not JSON"):
        call_command("evaluate", "moderation", "--data", str(bad), "--json", str(tmp_path / "o.json"))


def reviewed_items(moderator, *, holdout: int, trainable: int) -> list[ContentItem]:
    """Spam and ordinary posts decided by a moderator, until this many fall in the reviewed hold-out and outside."""
    import random

    rng, counts = random.Random(7), {True: 0, False: 0}
    items: list[ContentItem] = []
    while counts[True] < holdout or counts[False] < trainable:
        is_spam = len(items) % 2 == 0
        item = moderation_item_submit(text=spam(rng) if is_spam else ordinary(rng), actor=None)
        side = is_reviewed_holdout(item)
        if counts[side] >= (holdout if side else trainable):
            continue
        counts[side] += 1
        item = finish_scoring(item, dict.fromkeys(Category.objects.values_list("slug", flat=True), 0.5))
        task = review_task_next(reviewer=moderator)
        assert task is not None and task.item_id == item.pk
        violated = ["spam"] if is_spam else []
        review_task_decide(
            task=task, reviewer=moderator, decision="remove" if is_spam else "approve", violated=violated
        )
        items.append(item)
    return items


def test_reviewed_decisions_train_the_next_model_which_is_promoted_only_when_better(tmp_path: Path, make_user) -> None:
    # One tower epoch: the tower is not what this test is about (tests/ml/test_text_tower.py), and it is the
    # slowest part of a training.
    quick = ("--tower-epochs", "1")
    bad = train("--data", str(write_corpus(tmp_path / "flipped", flip_spam=True)), *quick)
    assert bad.status == "champion"  # the first one, however bad: there was none
    reviewed_items(make_user("moderator"), holdout=6, trainable=10)

    better = train("--data", str(write_corpus(tmp_path / "train")), *quick)

    promotion = better.metrics["promotion"]
    assert better.metrics["reviewed_items_trained_on"] == 10 and promotion["holdout_items"] == 6
    assert promotion["champion"] == bad.label
    assert promotion["candidate_macro_f1"] > promotion["champion_macro_f1"], promotion
    assert better.status == "champion" and promotion["promote"] is True
    bad.refresh_from_db()
    assert bad.status == "candidate"

    same = train("--data", str(write_corpus(tmp_path / "train")), *quick)
    assert same.status == "candidate", "no better than the champion: not promoted"
    assert "<=" in same.metrics["promotion"]["reason"]
