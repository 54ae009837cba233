"""The model console for ML admins: register, verify, promote, roll back, retire, compare."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import groupby
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from apps.accounts.permissions import RoleRequiredMixin, request_user, user_may
from apps.registry import services
from apps.registry.apis import READERS, WRITERS
from apps.registry.models import ModelStatus, ModelVersion
from apps.registry.selectors import model_metrics_compare, model_versions
from ml.specs import list_specs, load_spec


class RegisterForm(forms.Form):
    packaged_spec = forms.ChoiceField(required=False, label="Packaged spec")
    spec_json = forms.CharField(
        required=False, label="Or a spec as JSON", widget=forms.Textarea(attrs={"rows": 10, "class": "mono"})
    )
    metrics_json = forms.CharField(required=False, label="Metrics (JSON)", widget=forms.Textarea(attrs={"rows": 3}))
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "-")] + [(name, name) for name in list_specs()]
        self.fields["packaged_spec"].choices = choices  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("spec_json"):
            data["spec"] = self._json("spec_json", data["spec_json"])
        elif data.get("packaged_spec"):
            data["spec"] = load_spec(data["packaged_spec"]).to_dict()
        else:
            raise forms.ValidationError("choose a packaged spec or paste one")
        data["metrics"] = self._json("metrics_json", data["metrics_json"]) if data.get("metrics_json") else {}
        return data

    def _json(self, field: str, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError({field: f"not valid JSON: {error}"}) from error
        if not isinstance(value, dict):
            raise forms.ValidationError({field: "must be a JSON object"})
        return value


class ConsolePage(RoleRequiredMixin, View):
    allowed_roles = READERS

    def get(self, request: HttpRequest) -> HttpResponse:
        versions = model_versions()
        groups = []
        for name, items in groupby(versions, key=lambda v: v.name):
            group = list(items)
            can_roll_back = any(v.status == ModelStatus.CANDIDATE and v.demoted_at for v in group)
            groups.append((name, group, can_roll_back))
        return render(request, "registry/console.html", {"groups": groups, "can_write": _can_write(request)})


class RegisterPage(RoleRequiredMixin, View):
    allowed_roles = WRITERS

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "registry/register.html", {"form": RegisterForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = RegisterForm(request.POST)
        if form.is_valid():
            try:
                version = services.model_version_register(
                    spec=form.cleaned_data["spec"],
                    metrics=form.cleaned_data["metrics"],
                    notes=form.cleaned_data["notes"],
                    actor=request_user(request),
                )
            except services.RegistryError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Registered {version.label}.")
                return redirect("registry:detail", version_id=version.pk)
        return render(request, "registry/register.html", {"form": form}, status=400)


class DetailPage(RoleRequiredMixin, View):
    allowed_roles = READERS

    def get(self, request: HttpRequest, version_id: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=version_id)
        others = model_versions(name=version.name).exclude(pk=version.pk)
        context = {
            "version": version,
            "others": others,
            "can_roll_back": others.filter(status=ModelStatus.CANDIDATE, demoted_at__isnull=False).exists(),
            "spec_json": json.dumps(version.spec, indent=2, sort_keys=True),
            "metrics_json": json.dumps(version.metrics, indent=2),
            "can_write": _can_write(request),
        }
        return render(request, "registry/detail.html", context)


class ActionPage(RoleRequiredMixin, View):
    """POST-only buttons of the detail page."""

    allowed_roles = WRITERS
    actions: dict[str, Callable[..., ModelVersion]] = {
        "verify": services.model_version_verify,
        "promote": services.model_version_promote,
        "retire": services.model_version_retire,
    }

    def post(self, request: HttpRequest, version_id: int, action: str) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=version_id)
        if action not in self.actions:
            return HttpResponse(f"unknown action {action!r}", status=404)
        try:
            version = self.actions[action](version=version, actor=request_user(request))
        except services.RegistryError as error:
            messages.error(request, str(error))
        else:
            if action == "verify" and not version.verified_ok:
                messages.error(request, f"{version.label}: checksum verification failed.")
            else:
                messages.success(request, f"{version.label}: {action} done (status {version.status}).")
        return redirect("registry:detail", version_id=version.pk)


class RollbackPage(RoleRequiredMixin, View):
    allowed_roles = WRITERS

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        try:
            version = services.model_rollback(name=name, actor=request_user(request))
        except services.RegistryError as error:
            messages.error(request, str(error))
            return redirect("registry:console")
        messages.success(request, f"Rolled back {name} to {version.label}.")
        return redirect("registry:detail", version_id=version.pk)


class ComparePage(RoleRequiredMixin, View):
    allowed_roles = READERS

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            a = ModelVersion.objects.get(pk=int(request.GET.get("a", "")))
            b = ModelVersion.objects.get(pk=int(request.GET.get("b", "")))
        except (ValueError, ModelVersion.DoesNotExist):
            return render(
                request,
                "registry/compare.html",
                {"error": "choose two registered versions", "versions": model_versions()},
                status=400 if request.GET else 200,
            )
        rows = model_metrics_compare(a=a, b=b)
        return render(request, "registry/compare.html", {"a": a, "b": b, "rows": rows, "versions": model_versions()})


def _can_write(request: HttpRequest) -> bool:
    return user_may(request.user, "registry:register", "POST")
