"""Job pages: the list (with a form to embed texts) and one job with live progress."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from apps.accounts.permissions import RoleRequiredMixin, request_user, view_roles
from apps.accounts.roles import ALL_ROLES, user_roles
from apps.jobs import services
from apps.jobs.apis import SUBMITTERS
from apps.jobs.kinds import JOB_KINDS
from apps.jobs.selectors import job_audit_events, jobs_visible_to
from apps.registry.selectors import NoChampion


class EmbedTextsForm(forms.Form):
    texts = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "one text per line"}),
        help_text="One text per line; each line becomes one 384-d MiniLM embedding.",
    )

    def clean_texts(self) -> list[str]:
        texts = [line for line in self.cleaned_data["texts"].splitlines() if line.strip()]
        checked = JOB_KINDS["text_embedding"].input_serializer(data={"texts": texts})
        if not checked.is_valid():
            raise forms.ValidationError(str(checked.errors))
        return texts


class JobListPage(RoleRequiredMixin, View):
    allowed_roles = ALL_ROLES
    method_roles = {"POST": SUBMITTERS}

    def render_page(self, request: HttpRequest, form: EmbedTextsForm, status: int = 200) -> HttpResponse:
        page = Paginator(jobs_visible_to(user=request_user(request)), 25).get_page(request.GET.get("page"))
        can_submit = bool(view_roles(self, "POST") & user_roles(request.user))
        return render(request, "jobs/list.html", {"page": page, "form": form, "can_submit": can_submit}, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render_page(request, EmbedTextsForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = EmbedTextsForm(request.POST)
        if not form.is_valid():
            return self.render_page(request, form, status=400)
        try:
            job, created = services.job_submit(
                kind="text_embedding", job_input={"texts": form.cleaned_data["texts"]}, actor=request_user(request)
            )
        except NoChampion as error:
            form.add_error(None, str(error))
            return self.render_page(request, form, status=400)
        if not created:
            messages.info(request, "The same texts were already embedded with this model version: here is that job.")
        return redirect("jobs:detail", job_id=job.pk)


class JobDetailPage(RoleRequiredMixin, View):
    allowed_roles = ALL_ROLES

    def get(self, request: HttpRequest, job_id: str) -> HttpResponse:
        job = get_object_or_404(jobs_visible_to(user=request_user(request)), pk=job_id)
        context = {"job": job, "events": job_audit_events(job=job)}
        return render(request, "jobs/detail.html", context)
