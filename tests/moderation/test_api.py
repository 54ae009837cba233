"""The integrators' API: submit as JSON or multipart, typed 400s that store nothing, scopes, visibility."""

from __future__ import annotations

import base64
import io

import pytest
from rest_framework.test import APIClient

from apps.accounts.roles import Role
from apps.accounts.services import api_key_create
from apps.jobs.models import InferenceJob
from apps.moderation.models import ContentItem
from tests.moderation.test_scoring import poster

pytestmark = pytest.mark.django_db
ITEMS = "/api/v1/moderation/items"


@pytest.fixture
def moderator(client_for, minilm_champion) -> APIClient:
    return client_for(Role.MODERATOR)


def test_a_text_post_as_json_is_queued_for_scoring(moderator: APIClient) -> None:
    response = moderator.post(
        ITEMS, {"text": "hello there", "author_ref": "u-1", "metadata": {"lang": "en"}}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "scoring" and body["result"] is None and body["image_url"] is None
    assert body["metadata"] == {"lang": "en"} and body["author_ref"] == "u-1"
    assert InferenceJob.objects.get(pk=body["job_id"]).kind == "moderation_score"
    assert moderator.get(f"{ITEMS}/{body['id']}").json()["id"] == body["id"]


def test_an_image_as_a_multipart_file_or_base64_is_stored_as_sent(moderator: APIClient) -> None:
    png = poster("HELLO")
    upload = io.BytesIO(png)
    upload.name = "poster.png"

    as_file = moderator.post(ITEMS, {"text": "look", "image": upload}, format="multipart")
    as_json = moderator.post(ITEMS, {"image_base64": base64.b64encode(png).decode()}, format="json")

    assert as_file.status_code == 201 and as_json.status_code == 201, (as_file.content, as_json.content)
    for body in (as_file.json(), as_json.json()):
        image = moderator.get(body["image_url"])
        assert image.status_code == 200 and b"".join(image.streaming_content) == png  # type: ignore[attr-defined]
    assert as_file.json()["image_sha256"] == as_json.json()["image_sha256"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "empty_item"),
        ({"text": "   "}, "empty_item"),
        ({"text": "x" * 20_001}, "text_too_long"),
        ({"image_base64": base64.b64encode(b"GIF89a broken").decode()}, "image_undecodable"),
        ({"image_base64": "%%% not base64"}, "invalid"),
        ({"text": "hi", "metadata": ["not", "an", "object"]}, "invalid"),
    ],
)
def test_bad_posts_get_a_typed_400_and_nothing_is_stored(moderator: APIClient, payload: dict, code: str) -> None:
    response = moderator.post(ITEMS, payload, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert not ContentItem.objects.exists() and not InferenceJob.objects.exists()


def test_an_api_key_needs_the_moderation_scope(make_user, minilm_champion) -> None:
    owner = make_user(Role.MODERATOR, username="integrator")
    _, writer_secret = api_key_create(user=owner, name="writer", scopes=["moderation:write", "moderation:read"])
    _, reader_secret = api_key_create(user=owner, name="reader", scopes=["jobs:read"])
    client = APIClient()

    allowed = client.post(ITEMS, {"text": "from the integration"}, format="json", HTTP_X_API_KEY=writer_secret)
    refused = client.post(ITEMS, {"text": "from the integration"}, format="json", HTTP_X_API_KEY=reader_secret)

    assert allowed.status_code == 201, allowed.content
    assert refused.status_code == 403 and "moderation:write" in refused.json()["error"]["message"]
    assert client.get(f"{ITEMS}/{allowed.json()['id']}", HTTP_X_API_KEY=writer_secret).status_code == 200


def test_webhook_endpoints_show_their_secret_once_and_log_deliveries(moderator: APIClient, make_user) -> None:
    created = moderator.post("/api/v1/moderation/webhooks", {"url": "https://example.test/hook"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["secret"].startswith("whsec_")
    listed = moderator.get("/api/v1/moderation/webhooks").json()
    assert [e["url"] for e in listed] == ["https://example.test/hook"] and "secret" not in listed[0]
    deliveries = moderator.get(f"/api/v1/moderation/webhooks/{created.json()['id']}/deliveries")
    assert deliveries.status_code == 200 and deliveries.json() == []
    other = APIClient()
    other.force_login(make_user(Role.MODERATOR, username="someone_else"))
    assert other.get(f"/api/v1/moderation/webhooks/{created.json()['id']}/deliveries").status_code == 404
    bad = moderator.post("/api/v1/moderation/webhooks", {"url": "not a url"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"


def test_an_undecided_item_cannot_be_appealed(moderator: APIClient) -> None:
    item = moderator.post(ITEMS, {"text": "hello"}, format="json").json()

    response = moderator.post(f"{ITEMS}/{item['id']}/appeals", {"statement": "unfair"}, format="json")

    assert response.status_code == 400 and response.json()["error"]["code"] == "appeal_not_allowed"
