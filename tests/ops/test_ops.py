from __future__ import annotations

import json
import logging

import pytest
from rest_framework.test import APIClient

from apps.accounts.roles import Role
from apps.jobs.models import InferenceJob
from vlplatform.logging import ContextFilter, JsonFormatter, log_context


def test_healthz() -> None:
    response = APIClient().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_without_a_worker_is_503_and_says_why() -> None:
    response = APIClient().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok" and checks["broker"] == "ok"
    assert checks["workers"] == "error: no live worker"


@pytest.mark.worker
def test_readyz_with_a_worker_is_200(start_worker) -> None:
    start_worker()
    response = APIClient().get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["workers"] == "1 live"


@pytest.mark.django_db
def test_openapi_schema_and_docs() -> None:
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/models", "/api/v1/audit/events"} <= set(paths)
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_malformed_json_is_400_and_writes_nothing(client_for, minilm_champion) -> None:
    client = client_for(Role.MODERATOR)
    broken = client.post("/api/v1/jobs", data="{not json", content_type="application/json")
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "parse_error"
    invalid = client.post("/api/v1/jobs", {"kind": "text_embedding", "input": {"texts": []}}, format="json")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["fields"]["input"]["texts"] == ["Ensure this field has at least 1 elements."]
    unknown = client.post("/api/v1/jobs", {"kind": "nope", "input": {}}, format="json")
    assert unknown.status_code == 400 and "kind" in unknown.json()["error"]["fields"]
    assert not InferenceJob.objects.exists()


@pytest.mark.django_db
def test_unknown_ids_are_404_in_the_api_error_shape(client_for) -> None:
    client = client_for(Role.ML_ADMIN)
    for url in ["/api/v1/jobs/00000000-0000-0000-0000-000000000000", "/api/v1/models/999999", "/api/v1/nothing"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found", url
    assert client.post("/api/v1/models/nothing/rollback").status_code == 404
    assert client.get("/registry/999999/").status_code == 404


def test_json_logs_carry_the_job_context(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("vlp.test")
    with caplog.at_level(logging.INFO, logger="vlp.test"), log_context(job_id="j-1", model_version="m@1"):
        logger.info("hello", extra={"attempt": 2})
    record = caplog.records[0]
    ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello" and line["job_id"] == "j-1" and line["model_version"] == "m@1"
    assert line["attempt"] == 2
