"""Kinds that run batches: a worker claims queued companions of its job and runs them in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from rest_framework import serializers

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_first_break
from apps.jobs import services
from apps.jobs.kinds import JOB_KINDS, JobKind, JobOutcome
from apps.jobs.models import InferenceJob, JobStatus
from apps.registry.models import ModelVersion

pytestmark = pytest.mark.django_db


class WordInput(serializers.Serializer):
    word = serializers.CharField()


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.finished: list[list[str]] = []

    def run(self, job_input: dict[str, Any], version: ModelVersion, progress: Any) -> dict[str, Any]:
        return self.run_batch([job_input], version)[0]

    def run_batch(self, inputs: list[dict[str, Any]], version: ModelVersion) -> list[dict[str, Any]]:
        words = [job_input["word"] for job_input in inputs]
        self.batches.append(words)
        if "bad" in words:
            if len(words) > 1:
                raise ValueError("a bad word spoils the batch")
            raise ValueError("bad is not a word we take")
        return [{"upper": word.upper()} for word in words]

    def on_finish(self, outcomes: Sequence[JobOutcome]) -> None:
        self.finished.append([outcome.job.input["word"] for outcome in outcomes])
        if any(outcome.result == {"upper": "UNSTORABLE"} for outcome in outcomes):
            raise ValueError("this result cannot be stored")


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    kind = JobKind(
        name="test_words",
        description="upper-cases words, in batches",
        model_name="minilm-l6-v2",
        input_serializer=WordInput,
        run=recorder.run,
        run_batch=recorder.run_batch,
        max_batch=3,
        on_finish=recorder.on_finish,
    )
    monkeypatch.setitem(JOB_KINDS, kind.name, kind)
    return recorder


def _submit(word: str) -> InferenceJob:
    job, _ = services.job_submit(kind="test_words", job_input={"word": word}, actor=None)
    return job


def test_a_worker_runs_its_job_with_queued_companions_in_one_call(recorder: Recorder, minilm_champion) -> None:
    jobs = [_submit(word) for word in ("one", "two", "three", "four")]
    other_kind, _ = services.job_submit(kind="text_embedding", job_input={"texts": ["x"]}, actor=None)

    started = services.job_start(job_id=str(jobs[1].pk))
    assert started is not None
    services.job_work(job=started)

    assert recorder.batches == [["two", "one", "three"]]  # its own job first, then the oldest queued, up to 3
    for job, word in zip(jobs[:3], ("one", "two", "three"), strict=True):
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED and job.result == {"upper": word.upper()} and job.attempts == 1
    jobs[3].refresh_from_db()
    other_kind.refresh_from_db()
    assert jobs[3].status == other_kind.status == JobStatus.QUEUED
    batched = AuditEvent.objects.filter(action="job.start", payload__batched_with=str(jobs[1].pk))
    assert batched.count() == 2
    # The companions' own queue messages find them finished and do nothing.
    assert services.job_start(job_id=str(jobs[0].pk)) is None


def test_a_batch_that_fails_is_run_job_by_job_so_only_the_bad_input_fails(recorder: Recorder, minilm_champion) -> None:
    jobs = [_submit(word) for word in ("fine", "bad", "good")]

    started = services.job_start(job_id=str(jobs[0].pk))
    assert started is not None
    services.job_work(job=started)

    assert recorder.batches == [["fine", "bad", "good"], ["fine"], ["bad"], ["good"]]
    statuses = {job.input["word"]: (job.status, job.error) for job in InferenceJob.objects.all()}
    assert statuses["fine"] == (JobStatus.SUCCEEDED, "") and statuses["good"] == (JobStatus.SUCCEEDED, "")
    assert statuses["bad"] == (JobStatus.FAILED, "ValueError: bad is not a word we take")


def test_a_claimed_companion_is_not_claimed_twice(recorder: Recorder, minilm_champion) -> None:
    first, second, third = (_submit(word) for word in ("a", "b", "c"))

    claimed = services.job_claim_companions(job=first, limit=5)
    again = services.job_claim_companions(job=first, limit=5)

    assert {job.pk for job in claimed} == {second.pk, third.pk} and again == []
    for job in claimed:
        job.refresh_from_db()
        assert job.status == JobStatus.RUNNING and job.lease_expires_at is not None


def test_a_batch_is_stored_in_one_transaction_and_a_result_that_cannot_be_stored_fails_only_its_job(
    recorder: Recorder, minilm_champion
) -> None:
    jobs = [_submit(word) for word in ("one", "two", "three", "unstorable", "five")]

    for first in (jobs[0], jobs[3]):
        started = services.job_start(job_id=str(first.pk))
        assert started is not None
        services.job_work(job=started)

    # The first batch finished together; the second raised while storing, so each job was stored on its own and
    # the unstorable one failed with the reason (a failed job can be retried).
    assert recorder.finished == [
        ["one", "two", "three"],
        ["unstorable", "five"],
        ["unstorable"],
        ["unstorable"],
        ["five"],
    ]
    statuses = {job.input["word"]: (job.status, job.error) for job in InferenceJob.objects.filter(kind="test_words")}
    assert {word: status for word, (status, _) in statuses.items()} == {
        "one": JobStatus.SUCCEEDED,
        "two": JobStatus.SUCCEEDED,
        "three": JobStatus.SUCCEEDED,
        "unstorable": JobStatus.FAILED,
        "five": JobStatus.SUCCEEDED,
    }
    assert statuses["unstorable"][1] == "storing the result failed: ValueError: this result cannot be stored"
    succeeded = AuditEvent.objects.filter(action="job.succeed", target_id__in=[str(job.pk) for job in jobs])
    assert succeeded.count() == 4
    assert audit_chain_first_break() is None
