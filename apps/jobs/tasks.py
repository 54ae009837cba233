"""Celery tasks: take ids, re-fetch, call one service."""

from __future__ import annotations

from celery import Task, shared_task

from apps.jobs import services


@shared_task(name="jobs.run_inference_job", bind=True, max_retries=None)
def run_inference_job(self: Task, job_id: str) -> None:
    try:
        job = services.job_start(job_id=job_id)
    except services.JobBusy as busy:
        # Another worker holds the lease; look again when it runs out (the job may be finished by then).
        raise self.retry(countdown=busy.seconds_left + 1) from busy
    if job is not None:
        services.job_work(job=job)
