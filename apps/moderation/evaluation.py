"""``manage.py evaluate moderation``: score a labelled JSONL with a moderation model and report per category."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml
from apps.moderation import inference
from apps.moderation.services import FUSION_MODEL_NAME
from apps.registry.selectors import NoChampion, model_champion, model_version_by_label
from ml.images import ImageRejected, open_image
from ml.specs import ModelSpec, UnknownSpec
from ml.tasks.moderation import Post, extract_signals
from ml.tasks.moderation_datasets import DatasetError, EvaluationItem, read_evaluation_jsonl
from ml.tasks.moderation_model import LayoutMismatch, ModerationModel, evaluation_report

logger = logging.getLogger(__name__)
BATCH = 128


class EvaluationError(ValueError):
    pass


def evaluate_moderation(
    data: Path,
    *,
    model: str = "",
    by: Sequence[str] = (),
    on_progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """The report of ``ml.tasks.moderation_model.evaluation_report`` plus ``model`` (NAME@VERSION), ``n_items``
    and ``skipped`` (items whose image could not be read, with the reason)."""
    report = on_progress or (lambda stage, done, total: None)
    try:
        items = read_evaluation_jsonl(data)
        version = model_version_by_label(label=model) if model else model_champion(name=FUSION_MODEL_NAME)
    except DatasetError as error:
        raise EvaluationError(str(error)) from error
    except NoChampion as error:
        raise EvaluationError(f"{error}; train one first: manage.py moderation_train --data DIR") from error
    except (UnknownSpec, ValueError) as error:
        raise EvaluationError(str(error).strip("'\"")) from error
    scorer = ml.load(version.name, spec=ModelSpec.from_dict(version.spec))
    if not isinstance(scorer, ModerationModel):
        raise EvaluationError(f"{version.label} is a {version.family}, not a moderation model")
    signal_models = inference.signal_models()
    try:
        scorer.check_layout(signal_models.image_feature_names, signal_models.text_dim)
    except LayoutMismatch as error:
        raise EvaluationError(str(error)) from error
    posts, kept, skipped = [], [], []
    for item in items:
        post = _post(item)
        if isinstance(post, str):
            skipped.append({"line": item.line, "reason": post})
        else:
            posts.append(post)
            kept.append(item)
    scores: list[dict[str, float]] = []
    for start in range(0, len(posts), BATCH):
        report("scoring", start, len(posts))
        signals = extract_signals(signal_models, posts[start : start + BATCH])
        signals = scorer.project(signals, signal_models.image_feature_names)
        scores.extend(result.scores for result in scorer.predict(signals, explain=False))
    report("scoring", len(posts), len(posts))
    figures = evaluation_report(
        scores, [item.labels for item in kept], scorer.thresholds, fields=[item.fields for item in kept], by=by
    )
    return {"model": version.label, **figures, "n_items": len(kept), "skipped": skipped}


def _post(item: EvaluationItem) -> Post | str:
    if item.image is None:
        return Post(text=item.text)
    try:
        return Post(text=item.text, image=open_image(item.image.read_bytes()))
    except (OSError, ImageRejected) as error:
        logger.warning("line %d: image %s skipped: %s", item.line, item.image, error)
        return f"image {item.image}: {error}"
