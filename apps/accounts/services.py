"""Writes for accounts: API key lifecycle, demo users."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.accounts.roles import ALL_ROLES, API_KEY_SCOPES
from apps.audit.services import audit_record

LAST_USED_RESOLUTION = timedelta(seconds=60)


class InvalidScopes(ValueError):
    pass


def api_key_hash(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (as for GitHub's tokens).
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, user: User, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is shown once and never stored."""
    unknown = sorted(set(scopes) - set(API_KEY_SCOPES))
    if unknown or not scopes:
        raise InvalidScopes(f"unknown scopes: {', '.join(unknown)}" if unknown else "at least one scope is required")
    prefix = secrets.token_hex(4)
    raw_key = f"vlp_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        user=user, name=name, prefix=prefix, key_hash=api_key_hash(raw_key), scopes=sorted(set(scopes))
    )
    audit_record(actor=user, action="api_key.create", target=api_key, payload={"name": name, "scopes": scopes})
    return api_key, raw_key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: User) -> ApiKey:
    api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="api_key.revoke", target=api_key, payload={"name": api_key.name})
    return api_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record the last use, at most once a minute per key so busy storefronts do not write on every call."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


@transaction.atomic
def user_ensure_with_roles(*, username: str, password: str, roles: list[str], email: str = "") -> User:
    """Create or update a user with exactly ``roles`` (used by the demo and by operators' scripts)."""
    unknown = sorted(set(roles) - ALL_ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}")
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(password)
    user.save()
    # Groups are created on demand too, so a database flushed by tests (or restored partially) still works.
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    audit_record(
        actor=None,
        action="user.create" if created else "user.update",
        target=user,
        payload={"username": username, "roles": sorted(roles)},
    )
    return user
