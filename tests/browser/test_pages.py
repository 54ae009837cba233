"""What a person sees in the browser: logging in, the role home pages, promoting a model in the console."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from playwright.sync_api import Page, expect

from apps.accounts.roles import ROLE_HOME, Role
from apps.audit.models import AuditEvent
from apps.registry.services import model_version_promote, model_version_register
from ml.specs import load_spec
from tests.conftest import PASSWORD, ROLES

MakeUser = Callable[..., User]

pytestmark = pytest.mark.browser


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto(reverse("accounts:login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


@pytest.mark.parametrize("role", ROLES)
def test_login_lands_on_role_home(page: Page, make_user: MakeUser, shots: Path, role: str) -> None:
    user = make_user(role)
    log_in(page, user.username)

    home = reverse(ROLE_HOME[role])
    page.wait_for_url(lambda url: urlsplit(url).path == home)
    assert path_of(page) == home
    expect(page.locator("[data-testid=username]")).to_have_text(user.username)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.screenshot(path=str(shots / f"home_{role}.png"), full_page=True)


def test_wrong_password_stays_on_login_page(page: Page, make_user: MakeUser) -> None:
    user = make_user(Role.MODERATOR)
    log_in(page, user.username, "not-the-password")

    expect(page.get_by_text("Wrong username or password.")).to_be_visible()
    assert path_of(page) == reverse("accounts:login")
    expect(page.locator("[data-testid=username]")).to_have_count(0)


def test_ml_admin_promotes_a_candidate(page: Page, make_user: MakeUser, shots: Path) -> None:
    spec = load_spec("minilm-l6-v2").to_dict()
    old = model_version_promote(
        version=model_version_register(spec={**spec, "version": "1.0.0"}, actor=None), actor=None
    )
    new = model_version_register(spec={**spec, "version": "1.1.0"}, actor=None)
    assert (old.status, new.status) == ("champion", "candidate")
    admin = make_user(Role.ML_ADMIN)

    log_in(page, admin.username)
    page.wait_for_url(lambda url: urlsplit(url).path == reverse("registry:console"))
    card = page.locator(f'section[data-model="{spec["name"]}"]')
    expect(card.locator(f"[data-testid=status-{old.pk}]")).to_have_text("champion")
    expect(card.locator(f"[data-testid=status-{new.pk}]")).to_have_text("candidate")
    page.screenshot(path=str(shots / "console.png"), full_page=True)

    card.get_by_role("link", name="1.1.0", exact=True).click()
    page.wait_for_url(lambda url: urlsplit(url).path == reverse("registry:detail", args=[new.pk]))
    expect(page.locator("[data-testid=status]")).to_have_text("candidate")
    page.locator("[data-testid=promote]").click()

    expect(page.locator("[data-testid=status]")).to_have_text("champion")
    expect(page.locator("[data-testid=promote]")).to_have_count(0)
    assert path_of(page) == reverse("registry:detail", args=[new.pk])
    page.screenshot(path=str(shots / "detail.png"), full_page=True)

    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == ("candidate", "champion")
    assert AuditEvent.objects.filter(
        action="model.promote",
        actor_username=admin.username,
        target_type="registry.modelversion",
        target_id=str(new.pk),
    ).exists()


def test_moderator_cannot_open_model_console(page: Page, make_user: MakeUser) -> None:
    moderator = make_user(Role.MODERATOR)
    log_in(page, moderator.username)
    page.wait_for_url(lambda url: urlsplit(url).path == reverse(ROLE_HOME[Role.MODERATOR]))

    response = page.goto(reverse("registry:console"))
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_contain_text("Not allowed")
    expect(page.get_by_role("link", name="Models")).to_have_count(0)
