"""API authentication: storefront API keys and bearer tokens (sessions come from DRF)."""

from __future__ import annotations

import hmac

from django.http import HttpRequest
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_hash, api_key_mark_used


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key vlp_<prefix>_<secret>`` or ``X-API-Key: vlp_...``; ``request.auth`` is the key."""

    keyword = "Api-Key"

    def authenticate(self, request: HttpRequest) -> tuple[object, ApiKey] | None:  # type: ignore[override]
        raw_key = request.META.get("HTTP_X_API_KEY", "")
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not raw_key and header.startswith(f"{self.keyword} "):
            raw_key = header.removeprefix(f"{self.keyword} ").strip()
        if not raw_key:
            return None
        parts = raw_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "vlp":
            raise exceptions.AuthenticationFailed("malformed API key")
        api_key = ApiKey.objects.select_related("user").filter(prefix=parts[1]).first()
        if api_key is None or not hmac.compare_digest(api_key.key_hash, api_key_hash(raw_key)):
            raise exceptions.AuthenticationFailed("invalid API key")
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("API key revoked")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("API key owner is inactive")
        api_key_mark_used(api_key=api_key)
        return api_key.user, api_key

    def authenticate_header(self, request: HttpRequest) -> str:  # type: ignore[override]
        return self.keyword


class BearerTokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Bearer <token>`` with a token from ``POST /api/v1/auth/token``."""

    keyword = "Bearer"
