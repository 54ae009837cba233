"""Roles are Django groups. Every page and endpoint names the roles it admits (see permissions.py)."""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


class Role(StrEnum):
    MODERATOR = "moderator"
    CLINICIAN = "clinician"
    MERCHANDISER = "merchandiser"
    ML_ADMIN = "ml_admin"
    AUDITOR = "auditor"


ALL_ROLES: frozenset[str] = frozenset(role.value for role in Role)

UserLike = AbstractBaseUser | AnonymousUser

# Where each role lands after login (URL names). A user with several roles lands on the first in this order.
ROLE_HOME: dict[str, str] = {
    Role.ML_ADMIN: "registry:console",
    Role.AUDITOR: "audit:browser",
    Role.MERCHANDISER: "accounts:api_keys",
    Role.MODERATOR: "moderation:queue",
    Role.CLINICIAN: "jobs:list",
}

# Scopes a storefront API key may carry; an endpoint without a scope refuses API keys.
API_KEY_SCOPES: dict[str, str] = {
    "jobs:read": "read inference jobs created with this key's owner",
    "jobs:write": "submit inference jobs",
    "models:read": "read the model registry",
    "moderation:read": "read moderation items, their scores, decisions and evidence",
    "moderation:write": "submit moderation items",
}


def user_roles(user: UserLike) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    if getattr(user, "is_superuser", False):
        return ALL_ROLES
    cached: frozenset[str] | None = getattr(user, "_vlp_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True))  # type: ignore[attr-defined]
        user._vlp_roles = cached  # type: ignore[attr-defined]  # one query per request, not per check
    return cached


def user_home(user: UserLike) -> str | None:
    roles = user_roles(user)
    for role, url_name in ROLE_HOME.items():
        if role in roles:
            return url_name
    return None
