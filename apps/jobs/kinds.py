"""Job kinds: what a job's input must look like, which model runs it, and how.

``text_embedding`` exercises the whole path (API -> queue -> worker -> packaged MiniLM -> stored result with its
model version). Domain apps register their own kinds from their ``AppConfig.ready`` (``register_kind``); a kind's
hooks write the domain's rows in the same transaction as the job's state change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from apps.jobs import inference
from apps.registry.models import ModelVersion

if TYPE_CHECKING:
    from apps.jobs.models import InferenceJob

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class JobOutcome:
    """How one attempt of a job ended: its result, or its error (then ``result`` is None)."""

    job: InferenceJob
    result: dict[str, Any] | None
    error: str = ""


@dataclass(frozen=True)
class JobKind:
    name: str
    description: str
    model_name: str
    input_serializer: type[serializers.Serializer]
    run: Callable[[dict[str, Any], ModelVersion, Progress], dict[str, Any]]
    # Called inside the transaction that finishes jobs of this kind (several when a batch finishes together), with
    # each job's outcome, the jobs already saved in their final state.
    on_finish: Callable[[Sequence[JobOutcome]], None] | None = None
    # Called inside the transaction that queues a failed job again.
    on_requeue: Callable[[InferenceJob], None] | None = None
    # Submitted by the domain's own services only, not through the generic jobs API.
    internal: bool = False
    # Runs several claimed jobs of this kind in one call (their inputs in, one result each, in order), so that a
    # worker scores a backlog in batches: it claims up to ``max_batch`` queued jobs at once
    # (``apps.jobs.services.job_work``).
    run_batch: Callable[[list[dict[str, Any]], ModelVersion], list[dict[str, Any]]] | None = None
    max_batch: int = 1


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


def register_kind(kind: JobKind) -> None:
    """Add a domain app's kind (from its ``AppConfig.ready``); a name is registered once."""
    if kind.name in JOB_KINDS and JOB_KINDS[kind.name] is not kind:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    JOB_KINDS[kind.name] = kind
