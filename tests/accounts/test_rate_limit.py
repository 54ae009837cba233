"""API keys over their per-minute limit get 429 with Retry-After; other keys and people are not affected."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.accounts import throttling
from apps.accounts.models import ApiKey
from apps.accounts.roles import Role
from apps.accounts.services import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttling, "clock", lambda: 1_800_000_030.0)  # 30 s into a window


def test_a_key_over_its_limit_gets_429_and_other_keys_do_not(make_user, minilm_champion) -> None:
    owner = make_user(Role.ML_ADMIN, username="integrator")
    limited, limited_secret = api_key_create(user=owner, name="limited", scopes=["models:read"])
    ApiKey.objects.filter(pk=limited.pk).update(rate_per_minute=3)
    _, other_secret = api_key_create(user=owner, name="other", scopes=["models:read"])
    client = APIClient()

    answers = [client.get("/api/v1/models", HTTP_X_API_KEY=limited_secret).status_code for _ in range(4)]

    assert answers == [200, 200, 200, 429]
    refused = client.get("/api/v1/models", HTTP_X_API_KEY=limited_secret)
    assert refused.json()["error"]["code"] == "throttled"
    assert refused["Retry-After"] == "30"
    assert client.get("/api/v1/models", HTTP_X_API_KEY=other_secret).status_code == 200
    person = APIClient()
    person.force_login(owner)
    assert all(person.get("/api/v1/models").status_code == 200 for _ in range(5)), "sessions are not limited"


def test_the_platform_default_applies_to_keys_without_their_own(make_user, minilm_champion, settings) -> None:
    settings.VLP_API_KEY_RATE_PER_MINUTE = 2
    owner = make_user(Role.ML_ADMIN, username="integrator")
    _, secret = api_key_create(user=owner, name="default", scopes=["models:read"])
    client = APIClient()

    answers = [client.get("/api/v1/models", HTTP_X_API_KEY=secret).status_code for _ in range(3)]

    assert answers == [200, 200, 429]
