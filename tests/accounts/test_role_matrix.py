"""Walk every URL pattern against every role: anonymous 401 (API) or login redirect (pages), wrong role 403."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apps.accounts.permissions import view_roles
from apps.accounts.roles import ALL_ROLES, Role
from apps.accounts.services import api_key_create
from apps.jobs.services import job_submit
from apps.moderation.services import moderation_item_submit
from tests.conftest import ROLES

pytestmark = pytest.mark.django_db
METHODS = ["get", "post", "put", "patch", "delete"]


def _walk(patterns: list, prefix: str = "") -> Iterator[tuple[str, object]]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if route.startswith("admin/"):
                continue  # Django's admin has its own staff check (tested below)
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def _view_class(callback: object) -> type:
    return getattr(callback, "view_class", None) or callback.cls  # type: ignore[attr-defined]


ENDPOINTS = [(route, _view_class(callback)) for route, callback in _walk(get_resolver().url_patterns)]


def test_every_endpoint_declares_who_may_use_it() -> None:
    undeclared = [
        route
        for route, view in ENDPOINTS
        if not getattr(view, "public", False) and not getattr(view, "allowed_roles", None)
    ]
    assert not undeclared, f"views without allowed_roles or public=True: {undeclared}"
    assert len(ENDPOINTS) > 25


@pytest.fixture
def sample_ids(make_user, minilm_champion) -> dict[str, str]:
    owner = make_user(Role.MERCHANDISER, username="owner")
    api_key, _ = api_key_create(user=owner, name="k", scopes=["jobs:read"])
    job, _ = job_submit(kind="text_embedding", job_input={"texts": ["x"]}, actor=owner)
    item = moderation_item_submit(text="a post", actor=owner)
    return {
        "item_id": str(item.pk),
        "evidence_id": "1",
        "endpoint_id": "1",
        "key_id": str(api_key.pk),
        "version_id": str(minilm_champion.pk),
        "job_id": str(job.pk),
        "name": minilm_champion.name,
        "action": "verify",
        "task_id": "1",
        "queue": "default",
    }


def _url(route: str, ids: dict[str, str]) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: ids[m.group(1)], route).lstrip("^").rstrip("$")


@pytest.mark.parametrize("role", [*ROLES, None], ids=[*ROLES, "anonymous"])
def test_role_permission_matrix(role: str | None, make_user, sample_ids: dict[str, str]) -> None:
    user = make_user(role, username=f"matrix_{role}") if role else None
    checked = 0
    for route, view in ENDPOINTS:
        if getattr(view, "public", False):
            continue
        is_api = route.startswith("api/")
        client = APIClient() if is_api else Client()
        if user is not None:
            client.force_login(user)
        for method in METHODS:
            if not hasattr(view, method):
                continue
            url = _url(route, sample_ids)
            response = getattr(client, method)(url, {}, format="json") if is_api else getattr(client, method)(url)
            allowed = view_roles(view, method.upper())
            where = f"{method.upper()} {url} as {role or 'anonymous'}"
            if role is None:
                if is_api:
                    assert response.status_code == 401, where
                    assert response.json()["error"]["code"] == "not_authenticated", where
                else:
                    assert response.status_code == 302 and "/accounts/login/" in response["Location"], where
            elif role in allowed:
                assert response.status_code not in (401, 403), f"{where}: {response.status_code}"
            else:
                assert response.status_code == 403, f"{where}: {response.status_code}"
                if is_api:
                    assert response.json()["error"]["code"] == "permission_denied", where
            checked += 1
    assert checked > 25


def test_admin_site_is_for_staff_only(make_user) -> None:
    client = Client()
    client.force_login(make_user(*ALL_ROLES, username="everything"))
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_user_without_role_gets_403(make_user) -> None:
    client = Client()
    client.force_login(make_user(username="nobody"))
    assert client.get("/accounts/home/").status_code == 403
    api = APIClient()
    api.force_login(make_user(username="nobody2"))
    assert api.get("/api/v1/me").status_code == 403
