"""The moderation scoring job: signals, fusion head and rendered evidence for one item, on a worker (a backlog is
scored in batches of up to ``VLP_MODERATION_BATCH`` posts)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from rest_framework import serializers

from apps.jobs.kinds import JobKind, Progress
from apps.moderation import inference, services
from apps.moderation.models import ContentItem
from apps.registry.models import ModelVersion


class ModerationScoreInput(serializers.Serializer):
    item_id = serializers.UUIDField()


def _run(job_input: dict[str, Any], version: ModelVersion, progress: Progress) -> dict[str, Any]:
    (result,) = _run_batch([job_input], version)
    progress(1, 1)
    return result


def _run_batch(job_inputs: list[dict[str, Any]], version: ModelVersion) -> list[dict[str, Any]]:
    items = ContentItem.objects.in_bulk([job_input["item_id"] for job_input in job_inputs])
    posts = []
    for job_input in job_inputs:
        item = items[UUID(str(job_input["item_id"]))]
        image = None
        if item.image:
            with item.image.open("rb") as file:
                image = file.read()
        posts.append((item.text, image))
    fusion = version if version.name == services.FUSION_MODEL_NAME else None
    return [
        {
            "scores": scored.scores,
            "evidence": scored.evidence,
            "pictures": [
                {"kind": picture.kind, "label": picture.label, **services.evidence_picture_store(png=picture.png)}
                for picture in scored.pictures
            ],
            "model_versions": scored.model_versions,
            "timings": scored.timings,
        }
        for scored in inference.score_posts(posts, fusion=fusion)
    ]


MODERATION_SCORE = JobKind(
    name=services.SCORE_KIND,
    description="Score one moderation item: image and text signals, the fusion head, rendered evidence.",
    model_name=services.FUSION_MODEL_NAME,
    input_serializer=ModerationScoreInput,
    run=_run,
    run_batch=_run_batch,
    max_batch=settings.VLP_MODERATION_BATCH,
    on_finish=services.moderation_scoring_finished,
    on_requeue=services.moderation_scoring_requeued,
    internal=True,
)
