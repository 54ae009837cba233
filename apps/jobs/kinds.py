"""Job kinds: what a job's input must look like, which model runs it, and how.

Domain apps add their kinds here as they arrive; ``text_embedding`` exercises the whole path (API -> queue ->
worker -> packaged MiniLM -> stored result with its model version).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from apps.jobs import inference
from apps.registry.models import ModelVersion

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class JobKind:
    name: str
    description: str
    model_name: str
    input_serializer: type[serializers.Serializer]
    run: Callable[[dict[str, Any], ModelVersion, Progress], dict[str, Any]]


class TextEmbeddingInput(serializers.Serializer):
    texts = serializers.ListField(
        child=serializers.CharField(max_length=20_000, allow_blank=False, trim_whitespace=False),
        min_length=1,
        max_length=2_000,
    )


def _run_text_embedding(job_input: dict[str, Any], version: ModelVersion, progress: Progress) -> dict[str, Any]:
    embeddings = inference.embed_texts(model_version=version, texts=job_input["texts"], on_progress=progress)
    return {"dim": embeddings.dim, "count": len(embeddings.vectors), "embeddings": embeddings.vectors}


JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in [
        JobKind(
            name="text_embedding",
            description="Embed texts with the champion sentence encoder (L2-normalised vectors).",
            model_name="minilm-l6-v2",
            input_serializer=TextEmbeddingInput,
            run=_run_text_embedding,
        )
    ]
}
