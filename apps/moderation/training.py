"""``moderation_train``: labelled files plus every reviewed decision -> a candidate moderation model, promoted only
when it measures better than the champion on reviewed items that no model trains on.

Reviewed items are split once and for all by a hash of their id: a fifth of them (``HOLDOUT_SHARE``) is the
reviewed hold-out, never trained on, on which candidate and champion are compared (macro-F1 at each model's own
thresholds, over the categories the reviewers labelled). The first model trained becomes champion when there is
none. Both figures and the decision are stored in the candidate's metrics and shown in the model console.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

import ml
from apps.moderation import inference
from apps.moderation.models import Category, ContentItem
from apps.moderation.selectors import reviewed_labels
from apps.moderation.services import FUSION_MODEL_NAME
from apps.registry.models import ModelVersion
from apps.registry.selectors import NoChampion, model_champion
from apps.registry.services import model_version_promote, model_version_register, model_version_verify
from ml.images import open_image
from ml.specs import ModelSpec
from ml.tasks.moderation import Post, PostSignals, extract_signals
from ml.tasks.moderation_datasets import LabelledPost, read_moderation_dir
from ml.tasks.moderation_model import (
    LabelledSignals,
    LayoutMismatch,
    ModerationModel,
    ModerationTrainingConfig,
    save_moderation_model,
    scores_report,
    train_moderation_model,
)

logger = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.2
SIGNAL_BATCH = 256
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class TrainingOutcome:
    version: ModelVersion
    promoted: bool
    promotion: dict[str, Any]


def is_reviewed_holdout(item: ContentItem) -> bool:
    digest = hashlib.sha256(f"moderation-holdout:{item.pk}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HOLDOUT_SHARE


def moderation_train(
    *,
    data_dirs: Sequence[Path],
    name: str = FUSION_MODEL_NAME,
    config: ModerationTrainingConfig | None = None,
    promote: bool = True,
    limit_per_source: int | None = None,
    on_progress: Progress | None = None,
) -> TrainingOutcome:
    """``limit_per_source``: train on a random sample of at most this many posts of each source (a quick model)."""
    report: Progress = on_progress or (lambda stage, done, total: None)
    posts: list[LabelledPost] = [post for directory in data_dirs for post in read_moderation_dir(directory)]
    if limit_per_source is not None:
        posts = _sample_per_source(posts, limit_per_source, seed=(config or ModerationTrainingConfig()).seed)
    reviewed = reviewed_labels()
    holdout = [(item, labels) for item, labels in reviewed if is_reviewed_holdout(item)]
    trainable = [(item, labels) for item, labels in reviewed if not is_reviewed_holdout(item)]
    logger.info(
        "moderation_train: %d labelled posts from files, %d reviewed items (%d held out)",
        len(posts),
        len(reviewed),
        len(holdout),
    )
    models = inference.signal_models()
    file_signals = _signals([Post(text=post.text) for post in posts], report, "signals: labelled files")
    reviewed_signals = _signals([_post_of(item) for item, _ in trainable], report, "signals: reviewed items")
    training = [
        *(
            LabelledSignals(signals, post.labels, post.fields.get("source", "files"), targets=post.targets)
            for signals, post in zip(file_signals, posts, strict=True)
        ),
        *(
            LabelledSignals(signals, labels, "reviewed", key=str(item.pk))
            for signals, (item, labels) in zip(reviewed_signals, trainable, strict=True)
        ),
    ]
    categories = list(Category.objects.filter(active=True).order_by("slug").values_list("slug", flat=True))
    trained = train_moderation_model(
        training,
        categories=categories,
        image_feature_names=models.image_feature_names,
        text_signal_dim=models.text_dim,
        config=config,
        on_progress=report,
    )
    version = f"{datetime.now(UTC):%Y%m%d.%H%M%S}"
    out_dir = Path(settings.VLP_VAR_DIR) / "models" / name / version
    spec = save_moderation_model(trained, out_dir, name=name, version=version, extra={"signal_models": models.versions})

    holdout_signals = _signals([_post_of(item) for item, _ in holdout], report, "signals: reviewed hold-out")
    holdout_labels = [labels for _, labels in holdout]
    candidate = ml.load(name, spec=spec)
    promotion = _compare(candidate, holdout_signals, holdout_labels, name=name)
    metrics = {**trained.metrics, "promotion": promotion, "reviewed_items_trained_on": len(trainable)}
    registered = model_version_register(
        spec=spec.to_dict(),
        actor=None,
        metrics=metrics,
        notes=f"moderation_train on {', '.join(str(d) for d in data_dirs) or 'reviewed items only'}",
    )
    registered = model_version_verify(version=registered, actor=None)
    promoted = bool(promote and promotion["promote"])
    if promoted:
        registered = model_version_promote(version=registered, actor=None, reason=promotion["reason"])
    return TrainingOutcome(version=registered, promoted=promoted, promotion=promotion)


def _compare(
    candidate: ModerationModel, signals: list[PostSignals], labels: list[dict[str, int]], *, name: str
) -> dict[str, Any]:
    """Candidate and champion macro-F1 on the reviewed hold-out, and whether the candidate should be promoted."""
    candidate_f1 = _macro_f1(candidate, signals, labels)
    try:
        champion_version = model_champion(name=name)
    except NoChampion:
        return {
            "holdout_items": len(labels),
            "candidate_macro_f1": candidate_f1,
            "champion": None,
            "champion_macro_f1": None,
            "promote": True,
            "reason": "first champion: no model was champion",
        }
    champion_f1: float | None
    try:
        champion = ml.load(name, spec=ModelSpec.from_dict(champion_version.spec))
        champion_f1 = _macro_f1(champion, signals, labels)
        note = ""
    except (LayoutMismatch, ValueError, OSError) as error:
        champion_f1, note = None, f"the champion cannot score today's signals: {error}"
    if not labels:
        promote, reason = False, "no reviewed hold-out items to compare on: the champion stays"
    elif candidate_f1 is None:
        promote, reason = False, "the reviewed hold-out has no label the candidate scores"
    elif champion_f1 is None:
        promote, reason = True, note or "the champion scores no labelled category of the reviewed hold-out"
    elif candidate_f1 > champion_f1:
        promote, reason = (
            True,
            f"macro-F1 on {len(labels)} reviewed hold-out items {candidate_f1:.3f} > {champion_f1:.3f}",
        )
    else:
        promote = False
        reason = f"macro-F1 on {len(labels)} reviewed hold-out items {candidate_f1:.3f} <= champion's {champion_f1:.3f}"
    return {
        "holdout_items": len(labels),
        "candidate_macro_f1": candidate_f1,
        "champion": champion_version.label,
        "champion_macro_f1": champion_f1,
        "promote": promote,
        "reason": reason,
    }


def _macro_f1(model: ModerationModel, signals: list[PostSignals], labels: list[dict[str, int]]) -> float | None:
    if not signals:
        return None
    models = inference.signal_models()
    model.check_layout(models.image_feature_names, models.text_dim)
    signals = model.project(signals, models.image_feature_names)
    scores = [result.scores for result in model.predict(signals, explain=False)]
    macro = scores_report(scores, labels, model.thresholds)["macro_f1"]
    return None if macro is None else round(float(macro), 4)


def _sample_per_source(posts: list[LabelledPost], limit: int, *, seed: int) -> list[LabelledPost]:
    by_source: dict[str, list[LabelledPost]] = {}
    for post in posts:
        by_source.setdefault(post.fields.get("source", ""), []).append(post)
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    return [
        post for group in by_source.values() for post in (rng.sample(group, limit) if len(group) > limit else group)
    ]


def _post_of(item: ContentItem) -> Post:
    image = None
    if item.image:
        with item.image.open("rb") as file:
            image = open_image(file.read())
    return Post(text=item.text, image=image)


def _signals(posts: list[Post], report: Progress, stage: str) -> list[PostSignals]:
    models = inference.signal_models()
    signals: list[PostSignals] = []
    for start in range(0, len(posts), SIGNAL_BATCH):
        report(stage, start, len(posts))
        signals.extend(extract_signals(models, posts[start : start + SIGNAL_BATCH]))
    report(stage, len(posts), len(posts))
    return signals
