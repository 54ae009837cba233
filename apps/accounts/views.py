"""Pages: login, logout, the role home redirect, storefront API keys."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from apps.accounts.apis import KEY_MANAGERS
from apps.accounts.permissions import RoleRequiredMixin, request_user
from apps.accounts.roles import ALL_ROLES, API_KEY_SCOPES, user_home
from apps.accounts.selectors import api_keys_visible_to
from apps.accounts.services import api_key_create, api_key_revoke


class LoginView(auth_views.LoginView):
    public = True
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    public = True


class HomeView(RoleRequiredMixin, View):
    """Send each user to their role's home page."""

    allowed_roles = ALL_ROLES

    def get(self, request: HttpRequest) -> HttpResponseBase:
        home = user_home(request.user)
        if home is None:
            raise PermissionDenied("your account has no role")
        return redirect(home)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {help}") for scope, help in API_KEY_SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
    )


class ApiKeysPage(RoleRequiredMixin, View):
    allowed_roles = KEY_MANAGERS

    def render_page(self, request: HttpRequest, form: ApiKeyForm, raw_key: str = "") -> HttpResponse:
        context: dict[str, Any] = {
            "form": form,
            "api_keys": api_keys_visible_to(user=request_user(request)),
            "raw_key": raw_key,
        }
        return render(request, "accounts/api_keys.html", context)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render_page(request, ApiKeyForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ApiKeyForm(request.POST)
        if not form.is_valid():
            return self.render_page(request, form)
        _, raw_key = api_key_create(
            user=request_user(request), name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
        )
        return self.render_page(request, ApiKeyForm(), raw_key=raw_key)


class ApiKeyRevokePage(RoleRequiredMixin, View):
    allowed_roles = KEY_MANAGERS

    def post(self, request: HttpRequest, key_id: int) -> HttpResponse:
        user = request_user(request)
        api_key = get_object_or_404(api_keys_visible_to(user=user), pk=key_id)
        api_key_revoke(api_key=api_key, actor=user)
        messages.success(request, f"Revoked {api_key.name}.")
        return redirect("accounts:api_keys")
