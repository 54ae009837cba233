"""The moderation scoring job: signals, fusion head and rendered evidence for one item, on a worker."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.jobs.kinds import JobKind, Progress
from apps.moderation import inference, services
from apps.moderation.models import ContentItem
from apps.registry.models import ModelVersion


class ModerationScoreInput(serializers.Serializer):
    item_id = serializers.UUIDField()


def _run(job_input: dict[str, Any], version: ModelVersion, progress: Progress) -> dict[str, Any]:
    item = ContentItem.objects.get(pk=job_input["item_id"])
    image = None
    if item.image:
        with item.image.open("rb") as file:
            image = file.read()
    fusion = version if version.name == services.FUSION_MODEL_NAME else None
    scored = inference.score_post(text=item.text, image=image, fusion=fusion)
    progress(1, 1)
    pictures = [
        {"kind": picture.kind, "label": picture.label, **services.evidence_picture_store(png=picture.png)}
        for picture in scored.pictures
    ]
    return {
        "scores": scored.scores,
        "evidence": scored.evidence,
        "pictures": pictures,
        "model_versions": scored.model_versions,
        "timings": scored.timings,
    }


MODERATION_SCORE = JobKind(
    name=services.SCORE_KIND,
    description="Score one moderation item: image and text signals, the fusion head, rendered evidence.",
    model_name=services.FUSION_MODEL_NAME,
    input_serializer=ModerationScoreInput,
    run=_run,
    on_finish=services.moderation_scoring_finished,
    on_requeue=services.moderation_scoring_requeued,
    internal=True,
)
