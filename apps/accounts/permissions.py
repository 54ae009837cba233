"""One permission check for every endpoint and page: the view names the roles it admits.

API views set ``allowed_roles`` (and ``method_roles`` where a method needs other roles) and, to admit
storefront API keys, ``required_scopes`` per method. Public views set ``public = True``. A view that declares
nothing refuses everyone, so a forgotten declaration fails closed (and the role-matrix test names it).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import AccessMixin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from django.urls import resolve, reverse
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.accounts.models import ApiKey
from apps.accounts.roles import UserLike, user_roles


def request_user(request: HttpRequest | Request) -> User:
    """The request's user, for services that record who acted; the permission checks ran before."""
    if not isinstance(request.user, User):
        raise PermissionDenied("log in first")
    return request.user


def view_roles(view: Any, method: str) -> frozenset[str]:
    method_roles = getattr(view, "method_roles", {}) or {}
    return frozenset(method_roles.get(method, getattr(view, "allowed_roles", frozenset())))


def user_may(user: UserLike, url_name: str, method: str = "GET") -> bool:
    """Whether the view behind ``url_name`` admits ``user`` for ``method``: links and buttons ask this, so what a
    page offers follows the same declarations as the permission check."""
    view = resolve(reverse(url_name)).func.view_class  # type: ignore[attr-defined]
    return bool(view_roles(view, method) & user_roles(user))


class HasRole(BasePermission):
    message = "your role does not allow this"

    def has_permission(self, request: Request, view: Any) -> bool:
        if getattr(view, "public", False):
            return True
        if not request.user or not request.user.is_authenticated:
            return False  # DRF answers 401 with the authenticate header
        if isinstance(request.auth, ApiKey):
            scope = (getattr(view, "required_scopes", {}) or {}).get(request.method)
            if scope is None or scope not in request.auth.scopes:
                self.message = f"this API key lacks the scope {scope}" if scope else "API keys cannot use this"
                return False
        return bool(view_roles(view, request.method or "GET") & user_roles(request.user))


class RoleRequiredMixin(AccessMixin):
    """For pages: anonymous users go to the login page, users without an admitted role get 403."""

    allowed_roles: frozenset[str] = frozenset()
    method_roles: dict[str, frozenset[str]] = {}

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not view_roles(self, request.method or "GET") & user_roles(request.user):
            raise PermissionDenied("your role does not allow this page")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
