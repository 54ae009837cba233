from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import ApiKey
from apps.accounts.roles import Role
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_api_key_lifecycle(client_for, minilm_champion) -> None:
    owner = client_for(Role.MERCHANDISER)
    created = owner.post(
        "/api/v1/api-keys", {"name": "storefront", "scopes": ["jobs:read", "jobs:write"]}, format="json"
    )
    assert created.status_code == 201
    raw_key = created.json()["key"]
    key_id = created.json()["id"]
    stored = ApiKey.objects.get(pk=key_id)
    assert raw_key.startswith(f"vlp_{stored.prefix}_") and raw_key not in stored.key_hash
    assert "key" not in owner.get("/api/v1/api-keys").json()[0], "the raw key is shown once only"
    assert stored.last_used_at is None

    storefront = APIClient()
    storefront.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    submitted = storefront.post("/api/v1/jobs", {"kind": "text_embedding", "input": {"texts": ["hi"]}}, format="json")
    assert submitted.status_code == 201
    assert storefront.get(f"/api/v1/jobs/{submitted.json()['id']}").status_code == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None

    header_client = APIClient()
    header_client.credentials(HTTP_X_API_KEY=raw_key)
    assert header_client.get("/api/v1/jobs").status_code == 200

    assert storefront.get("/api/v1/models").status_code == 403, "a key without models:read is refused"
    assert storefront.get("/api/v1/audit/events").status_code == 403, "endpoints without a scope refuse keys"

    assert owner.post(f"/api/v1/api-keys/{key_id}/revoke").json()["revoked_at"] is not None
    refused = storefront.get("/api/v1/jobs")
    assert refused.status_code == 401 and refused.json()["error"]["message"] == "API key revoked"
    assert list(AuditEvent.objects.filter(target_type="accounts.apikey").values_list("action", flat=True)) == [
        "api_key.create",
        "api_key.revoke",
    ]


def test_wrong_and_malformed_keys_are_401() -> None:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY="vlp_deadbeef_not-a-real-secret")
    assert client.get("/api/v1/jobs").status_code == 401
    client.credentials(HTTP_X_API_KEY="garbage")
    assert client.get("/api/v1/jobs").json()["error"]["message"] == "malformed API key"


def test_unknown_scope_is_a_field_error(client_for) -> None:
    response = client_for(Role.ML_ADMIN).post("/api/v1/api-keys", {"name": "x", "scopes": ["root"]}, format="json")
    assert response.status_code == 400
    assert "scopes" in response.json()["error"]["fields"]
    assert not ApiKey.objects.exists()


def test_users_cannot_revoke_each_others_keys(client_for) -> None:
    alice = client_for(Role.MERCHANDISER)
    key_id = alice.post("/api/v1/api-keys", {"name": "a", "scopes": ["jobs:read"]}, format="json").json()["id"]
    bob = client_for(Role.ML_ADMIN)
    assert bob.post(f"/api/v1/api-keys/{key_id}/revoke").status_code == 404
    assert ApiKey.objects.get(pk=key_id).revoked_at is None


def test_bearer_token(make_user) -> None:
    make_user(Role.AUDITOR)
    client = APIClient()
    bad = client.post("/api/v1/auth/token", {"username": "auditor", "password": "nope"}, format="json")
    assert bad.status_code == 401
    from tests.conftest import PASSWORD

    token = client.post("/api/v1/auth/token", {"username": "auditor", "password": PASSWORD}, format="json").json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token['token']}")
    assert client.get("/api/v1/me").json() == {"username": "auditor", "roles": ["auditor"]}


def test_api_keys_page_shows_a_new_key_once(client_for) -> None:
    client = client_for(Role.MERCHANDISER)
    page = client.post("/accounts/api-keys/", {"name": "shop", "scopes": ["jobs:read"]})
    assert page.status_code == 200 and "shown once" in page.content.decode()
    key = ApiKey.objects.get()
    assert f"vlp_{key.prefix}_" in page.content.decode()
    again = client.get("/accounts/api-keys/").content.decode()
    assert "shown once" not in again and "active" in again
