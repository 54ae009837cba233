"""Jobs through a real Celery worker process, on the real broker and database."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.jobs.models import InferenceJob, JobStatus
from tests.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _job(job_id: str) -> InferenceJob:
    return InferenceJob.objects.get(pk=job_id)


def test_job_submitted_through_api_runs_on_worker(client_for, minilm_champion, start_worker) -> None:
    start_worker()
    client = client_for(Role.MODERATOR)
    texts = ["a red summer dress", "a crimson gown for the evening", "quarterly tax filing deadline"]

    response = client.post("/api/v1/jobs", {"kind": "text_embedding", "input": {"texts": texts}}, format="json")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    wait_for(lambda: _job(job_id).is_finished, 120, "the job to finish")

    body = client.get(f"/api/v1/jobs/{job_id}").json()
    assert body["status"] == "succeeded", body["error"]
    assert body["model_version"] == "minilm-l6-v2@1.0.0"
    assert body["model_version_id"] == minilm_champion.pk
    assert body["progress"] == 100 and body["attempts"] == 1
    vectors = body["result"]["embeddings"]
    assert body["result"]["dim"] == 384 and len(vectors) == 3
    similarity = [[sum(a * b for a, b in zip(u, v, strict=True)) for v in vectors] for u in vectors]
    assert similarity[0][1] > similarity[0][2] + 0.3, "the two dresses must be closer than a dress and tax law"
    assert [e["action"] for e in body["events"]] == ["job.submit", "job.start", "job.succeed"]
    assert body["events"][0]["actor_username"] == "moderator"

    again = client.post("/api/v1/jobs", {"kind": "text_embedding", "input": {"texts": texts}}, format="json")
    assert again.status_code == 200 and again.json()["id"] == job_id, "the same input must not run twice"
    assert InferenceJob.objects.count() == 1


def test_worker_killed_mid_job_completes_exactly_once(client_for, minilm_champion, start_worker) -> None:
    client = client_for(Role.ML_ADMIN)
    # Long texts in many batches: the job runs for several seconds with progress reported after each batch.
    texts = [f"item {i}: " + " ".join(f"word{(i * 7 + j) % 997}" for j in range(120)) for i in range(700)]
    first: WorkerProcess = start_worker()
    job_id = client.post("/api/v1/jobs", {"kind": "text_embedding", "input": {"texts": texts}}, format="json").json()[
        "id"
    ]
    wait_for(lambda: _job(job_id).status == JobStatus.RUNNING and _job(job_id).progress > 0, 120, "progress")
    first.kill()
    assert _job(job_id).status == JobStatus.RUNNING, "the job must have been killed mid-way"

    start_worker()
    # The broker delivers the unacknowledged message again once its visibility timeout (35 s here) passes.
    wait_for(lambda: _job(job_id).is_finished, 240, "the redelivered job to finish")

    job = _job(job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2
    assert job.result is not None and len(job.result["embeddings"]) == 700
    actions = list(
        AuditEvent.objects.filter(target_id=job_id).order_by("id").values_list("action", "payload__took_over")
    )
    assert actions == [("job.submit", None), ("job.start", False), ("job.start", True), ("job.succeed", None)]


def test_failed_job_keeps_its_error_and_can_be_retried(
    client_for, minilm_champion, start_worker: Callable[[], WorkerProcess], settings, tmp_path
) -> None:
    client = client_for(Role.CLINICIAN)
    # Break the registered weights' location: the worker's load fails, and the job records why.
    spec = dict(minilm_champion.spec, source=f"file:{tmp_path / 'missing'}")
    type(minilm_champion).objects.filter(pk=minilm_champion.pk).update(spec=spec)
    start_worker()
    job_id = client.post("/api/v1/jobs", {"kind": "text_embedding", "input": {"texts": ["x"]}}, format="json").json()[
        "id"
    ]
    wait_for(lambda: _job(job_id).is_finished, 120, "the job to fail")
    failed = client.get(f"/api/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed"
    assert "ModelNotInstalled" in failed["error"] and "manage.py models pull minilm-l6-v2" in failed["error"]

    type(minilm_champion).objects.filter(pk=minilm_champion.pk).update(spec=minilm_champion.spec)
    retried = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    wait_for(lambda: _job(job_id).status == JobStatus.SUCCEEDED, 120, "the retried job to succeed")
    assert _job(job_id).attempts == 2 and _job(job_id).error == ""
