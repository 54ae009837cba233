"""The job lifecycle. Every state change is one transaction with its audit event; enqueueing runs on commit."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import PendingEvent, audit_record, audit_record_many
from apps.jobs.kinds import JOB_KINDS, JobOutcome
from apps.jobs.models import InferenceJob, JobStatus
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_champion
from vlplatform.logging import log_context

logger = logging.getLogger(__name__)

_CLAIM_FIELDS = ["status", "attempts", "started_at", "lease_expires_at"]
_FINISH_FIELDS = ["status", "result", "error", "progress", "finished_at", "lease_expires_at"]


class UnknownJobKind(ValueError):
    pass


class JobNotRetryable(ValueError):
    pass


@dataclass
class JobBusy(Exception):
    """Another worker holds the job's lease; try again after ``seconds_left``."""

    seconds_left: float


def input_sha256(job_input: dict[str, Any]) -> str:
    canonical = json.dumps(job_input, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _enqueue(job: InferenceJob) -> None:
    from apps.jobs.tasks import run_inference_job

    transaction.on_commit(lambda: run_inference_job.delay(str(job.pk)))


@transaction.atomic
def job_submit(
    *, kind: str, job_input: dict[str, Any], actor: User | None, model_version: ModelVersion | None = None
) -> tuple[InferenceJob, bool]:
    """Submit a job; the same input on the same model version returns the existing job (``created`` False).

    A failed duplicate is queued again. ``job_input`` must already be validated by the kind's serializer. The job
    runs the champion of the kind's model unless the caller names a version.
    """
    if kind not in JOB_KINDS:
        raise UnknownJobKind(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(JOB_KINDS))}")
    version = model_version or model_champion(name=JOB_KINDS[kind].model_name)
    job, created = InferenceJob.objects.select_for_update().get_or_create(
        kind=kind,
        input_sha256=input_sha256(job_input),
        model_version=version,
        defaults={"input": job_input, "created_by": actor},
    )
    if created:
        audit_record(actor=actor, action="job.submit", target=job, payload={"kind": kind, "model": version.label})
        _enqueue(job)
    elif job.status == JobStatus.FAILED:
        job = _requeue(job, actor=actor)
    return job, created


@transaction.atomic
def job_retry(*, job: InferenceJob, actor: User | None) -> InferenceJob:
    job = InferenceJob.objects.select_for_update().get(pk=job.pk)
    if job.status != JobStatus.FAILED:
        raise JobNotRetryable(f"only failed jobs can be retried; this one is {job.status}")
    return _requeue(job, actor=actor)


def _requeue(job: InferenceJob, *, actor: User | None) -> InferenceJob:
    job.status = JobStatus.QUEUED
    job.progress = 0
    job.save(update_fields=["status", "progress"])
    audit_record(actor=actor, action="job.retry", target=job, payload={"previous_error": job.error})
    hook = JOB_KINDS[job.kind].on_requeue
    if hook is not None:
        hook(job)
    _enqueue(job)
    return job


def job_start(*, job_id: str) -> InferenceJob | None:
    """Claim the job for this worker; ``None`` when there is nothing to do (finished or queued again later)."""
    # A finished job stays finished (a retry queues it with a message of its own): the messages of jobs that ran in
    # another job's batch end here, in one query without a transaction.
    if InferenceJob.objects.filter(pk=job_id, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).exists():
        return None
    return _job_start_locked(job_id=job_id)


@transaction.atomic
def _job_start_locked(*, job_id: str) -> InferenceJob | None:
    job = InferenceJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status in {JobStatus.SUCCEEDED, JobStatus.FAILED}:
        return None
    now = timezone.now()
    if job.status == JobStatus.RUNNING and job.lease_expires_at and job.lease_expires_at > now:
        raise JobBusy((job.lease_expires_at - now).total_seconds())
    event = _claim(job, now=now, payload={"took_over": job.status == JobStatus.RUNNING})
    job.save(update_fields=_CLAIM_FIELDS)
    audit_record_many([event])
    return job


def _claim(job: InferenceJob, *, now: datetime, payload: dict[str, Any]) -> PendingEvent:
    """A new attempt of ``job`` under this worker's lease (saved by the caller, in its transaction), and its audit
    event."""
    job.status = JobStatus.RUNNING
    job.attempts += 1
    job.started_at = now
    job.lease_expires_at = now + timedelta(seconds=settings.VLP_JOB_LEASE_SECONDS)
    return PendingEvent(action="job.start", target=job, payload={"attempt": job.attempts, **payload})


@transaction.atomic
def job_claim_companions(*, job: InferenceJob, limit: int) -> list[InferenceJob]:
    """Claim up to ``limit`` more queued jobs of ``job``'s kind and model version, oldest first, to run with it in
    one batch: each gets its own attempt, lease and audit event. Their own queue messages find them running (under
    this worker's lease) or finished and leave them be; if this worker dies, the leases run out and those messages
    run them."""
    if limit < 1:
        return []
    companions = list(
        InferenceJob.objects.select_for_update(skip_locked=True)
        .filter(kind=job.kind, model_version=job.model_version, status=JobStatus.QUEUED)
        .exclude(pk=job.pk)
        .order_by("created_at")[:limit]
    )
    if not companions:
        return []
    now = timezone.now()
    events = [_claim(each, now=now, payload={"took_over": False, "batched_with": str(job.pk)}) for each in companions]
    InferenceJob.objects.filter(pk__in=[each.pk for each in companions]).update(
        status=JobStatus.RUNNING,
        attempts=F("attempts") + 1,
        started_at=now,
        lease_expires_at=companions[0].lease_expires_at,
    )
    audit_record_many(events)
    return companions


def job_report_progress(*, job: InferenceJob, done: int, total: int) -> None:
    """Store progress (0-99 while running) and extend the lease: a working worker keeps its job."""
    progress = min(99, int(100 * done / max(total, 1)))
    InferenceJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts).update(
        progress=progress,
        lease_expires_at=timezone.now() + timedelta(seconds=settings.VLP_JOB_LEASE_SECONDS),
    )


@transaction.atomic
def _jobs_finish(outcomes: Sequence[JobOutcome]) -> set[Any]:
    """Store the outcomes of claimed attempts in one transaction: the jobs, their kinds' rows (``on_finish``) and an
    audit event each. An attempt that another one took over (or finished) is dropped. Returns the stored jobs' ids."""
    current = InferenceJob.objects.select_for_update(of=("self",)).select_related("model_version")
    jobs = {job.pk: job for job in current.filter(pk__in=[outcome.job.pk for outcome in outcomes]).order_by("pk")}
    now = timezone.now()
    stored: list[JobOutcome] = []
    for outcome in outcomes:
        job = jobs[outcome.job.pk]
        if job.status != JobStatus.RUNNING or job.attempts != outcome.job.attempts:
            logger.warning("dropping the outcome of a superseded attempt", extra={"attempt": outcome.job.attempts})
            continue
        job.finished_at, job.lease_expires_at = now, None
        if outcome.error:
            job.status, job.error = JobStatus.FAILED, outcome.error
        else:
            job.status, job.result, job.error, job.progress = JobStatus.SUCCEEDED, outcome.result, "", 100
        stored.append(JobOutcome(job=job, result=None if outcome.error else outcome.result, error=outcome.error))
    for outcome in stored:  # one UPDATE each: cheaper than bulk_update's CASE over JSON results
        outcome.job.save(update_fields=_FINISH_FIELDS)
    for kind in dict.fromkeys(outcome.job.kind for outcome in stored):
        hook = JOB_KINDS[kind].on_finish
        if hook is not None:
            hook([outcome for outcome in stored if outcome.job.kind == kind])
    audit_record_many(
        [
            PendingEvent(
                action="job.fail" if outcome.error else "job.succeed",
                target=outcome.job,
                payload={
                    "attempt": outcome.job.attempts,
                    "model": outcome.job.model_version.label,
                    "run_seconds": outcome.job.run_seconds,
                    **({"error": outcome.error} if outcome.error else {}),
                },
            )
            for outcome in stored
        ]
    )
    return {outcome.job.pk for outcome in stored}


def _finish(outcomes: Sequence[JobOutcome]) -> set[Any]:
    """``_jobs_finish``; when storing a batch raises, each job is stored on its own, and a job whose own storing
    raises fails with that error (its attempt ran, but its result could not be kept)."""
    try:
        return _jobs_finish(outcomes)
    except Exception as error:
        if len(outcomes) == 1:
            logger.exception("storing the job's outcome failed")
            failed = f"storing the result failed: {type(error).__name__}: {error}"
            return _jobs_finish([JobOutcome(job=outcomes[0].job, result=None, error=failed)])
        logger.exception("storing the batch's outcomes failed; storing them one by one", extra={"jobs": len(outcomes)})
    stored: set[Any] = set()
    for outcome in outcomes:
        stored |= _finish([outcome])
    return stored


def job_work(*, job: InferenceJob) -> None:
    """Run a claimed job; when its kind runs batches, first claim queued companions and run them all in one call,
    each finished in its own transaction. A batch that raises is run again job by job, so that one bad input fails
    only its own job."""
    kind = JOB_KINDS[job.kind]
    if kind.run_batch is None or kind.max_batch < 2:
        job_run(job=job)
        return
    jobs = [job, *job_claim_companions(job=job, limit=kind.max_batch - 1)]
    if len(jobs) == 1:
        job_run(job=job)
        return
    with log_context(job_id=str(job.pk), job_kind=job.kind, model_version=job.model_version.label):
        started = time.monotonic()
        try:
            results = kind.run_batch([each.input for each in jobs], job.model_version)
            if len(results) != len(jobs):
                raise RuntimeError(f"{kind.name} returned {len(results)} results for {len(jobs)} jobs")
        except Exception:
            logger.exception("batch failed; running its jobs one by one", extra={"jobs": len(jobs)})
            for each in jobs:
                job_run(job=each)
            return
        stored = _finish([JobOutcome(job=each, result=result) for each, result in zip(jobs, results, strict=True)])
        logger.info(
            "batch finished",
            extra={"jobs": len(jobs), "stored": len(stored), "seconds": round(time.monotonic() - started, 3)},
        )


def job_run(*, job: InferenceJob) -> bool:
    """Run a claimed job's model and store its outcome; a model error fails the job and keeps the error."""
    kind = JOB_KINDS[job.kind]
    with log_context(job_id=str(job.pk), job_kind=job.kind, model_version=job.model_version.label):
        logger.info("job started", extra={"attempt": job.attempts})
        started = time.monotonic()
        try:
            result = kind.run(
                job.input,
                job.model_version,
                lambda done, total: job_report_progress(job=job, done=done, total=total),
            )
        except Exception as error:
            logger.exception("job failed")
            return bool(_finish([JobOutcome(job=job, result=None, error=f"{type(error).__name__}: {error}")]))
        stored = bool(_finish([JobOutcome(job=job, result=result)]))
        logger.info("job finished", extra={"seconds": round(time.monotonic() - started, 3), "stored": stored})
        return stored
