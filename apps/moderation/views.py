"""Moderation pages: the review queue, one task under review, an item's page with its history, the dashboard."""

from __future__ import annotations

import re
from itertools import groupby, pairwise
from typing import Any

import numpy as np
from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views import View

from apps.accounts.permissions import RoleRequiredMixin, request_user
from apps.accounts.roles import Role
from apps.moderation import selectors, services
from apps.moderation.models import Category, ContentItem, ReviewStatus, ReviewTask
from ml.eval.classification import pr_curve

MODERATORS = frozenset({Role.MODERATOR})
DASHBOARD_ROLES = frozenset({Role.MODERATOR, Role.ML_ADMIN})
QUEUES = ("default", "escalated", "appeals")


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[(d, d) for d in services.REVIEW_DECISIONS])
    violated = forms.MultipleChoiceField(required=False, choices=(), widget=forms.CheckboxSelectMultiple)
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    seconds_spent = forms.FloatField(required=False, min_value=0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        categories = Category.objects.filter(active=True).order_by("slug")
        self.fields["violated"].choices = [(c.slug, c.name) for c in categories]  # type: ignore[attr-defined]


class QueuePage(RoleRequiredMixin, View):
    allowed_roles = MODERATORS

    def get(self, request: HttpRequest) -> HttpResponse:
        mine = (
            ReviewTask.objects.filter(
                status=ReviewStatus.OPEN, leased_to=request_user(request), lease_expires_at__gt=timezone.now()
            )
            .select_related("item")
            .order_by("created_at")
        )
        recent = (
            ReviewTask.objects.filter(status=ReviewStatus.DONE, decided_by=request_user(request))
            .select_related("item")
            .order_by("-decided_at")[:10]
        )
        context = {"sizes": selectors.queue_sizes(), "mine": mine, "recent": recent}
        return render(request, "moderation/queue.html", context)


class TakeNextAction(RoleRequiredMixin, View):
    """POST: lease the next task of a queue and open it."""

    allowed_roles = MODERATORS

    def post(self, request: HttpRequest, queue: str) -> HttpResponse:
        return _open_next(request, queue)


def _open_next(request: HttpRequest, queue: str) -> HttpResponse:
    task = services.review_task_next(reviewer=request_user(request), queue=queue)
    if task is None:
        messages.info(request, f"The {queue} queue is empty.")
        return redirect("moderation:queue")
    return redirect("moderation:task", task_id=task.pk)


class TaskPage(RoleRequiredMixin, View):
    allowed_roles = MODERATORS

    def get(self, request: HttpRequest, task_id: int) -> HttpResponse:
        task = get_object_or_404(ReviewTask.objects.select_related("item", "result"), pk=task_id)
        return self._render(request, task, DecisionForm())

    def post(self, request: HttpRequest, task_id: int) -> HttpResponse:
        task = get_object_or_404(ReviewTask.objects.select_related("item", "result"), pk=task_id)
        form = DecisionForm(request.POST)
        if not form.is_valid():
            return self._render(request, task, form, status=400)
        try:
            services.review_task_decide(
                task=task,
                reviewer=request_user(request),
                decision=form.cleaned_data["decision"],
                reason=form.cleaned_data["reason"],
                violated=form.cleaned_data["violated"],
                seconds_spent=form.cleaned_data["seconds_spent"],
            )
        except (ValueError, services.ReviewNotAllowed) as error:
            form.add_error(None, str(error))
            return self._render(request, task, form, status=400)
        messages.success(request, f"Decided: {form.cleaned_data['decision']}.")
        return _open_next(request, task.queue)

    def _render(self, request: HttpRequest, task: ReviewTask, form: DecisionForm, status: int = 200) -> HttpResponse:
        held = (
            task.status == ReviewStatus.OPEN
            and task.leased_to_id == request_user(request).pk
            and task.lease_expires_at is not None
            and task.lease_expires_at > timezone.now()
        )
        context = {"task": task, "form": form, "held": held, **_item_context(task.item)}
        appeal = getattr(task, "appeal", None)
        context["appeal"] = appeal
        return render(request, "moderation/task.html", context, status=status)


class ItemPage(RoleRequiredMixin, View):
    allowed_roles = frozenset({Role.MODERATOR, Role.ML_ADMIN, Role.AUDITOR})

    def get(self, request: HttpRequest, item_id: str) -> HttpResponse:
        item = get_object_or_404(selectors.items_visible_to(user=request_user(request)), pk=item_id)
        return render(request, "moderation/item.html", _item_context(item))


def _item_context(item: ContentItem) -> dict[str, Any]:
    result = selectors.item_latest_result(item=item)
    evidence = result.evidence if result else {}
    fusion = evidence.get("fusion", {})
    terms = sorted({term for words in fusion.get("terms", {}).values() for term in words})
    image_evidence = evidence.get("image", {})
    rows = []
    for category in Category.objects.filter(active=True).order_by("slug"):
        route = (result.routes.get(category.slug) if result else None) or {}
        score = route.get("score")
        policy = route.get("policy", {})
        rows.append(
            {
                "slug": category.slug,
                "name": category.name,
                "score": score,
                "percent": None if score is None else round(100 * score, 1),
                "route": route.get("route", ""),
                "why": route.get("why", ""),
                "allow": None if not policy else round(100 * policy["allow_below"], 1),
                "block": None if not policy else round(100 * policy["block_above"], 1),
                "source": fusion.get("sources", {}).get(category.slug, ""),
                "terms": fusion.get("terms", {}).get(category.slug, []),
            }
        )
    attribution = fusion.get("modality_attribution")
    names = {row["slug"]: row["name"] for row in rows}
    return {
        "item": item,
        "result": result,
        "categories": rows,
        "fusion": fusion,
        "attribution": {key: round(100 * value) for key, value in attribution.items()} if attribution else None,
        "text_marked": highlight(item.text, terms),
        "ocr_marked": highlight(image_evidence.get("ocr_text", ""), terms),
        "image_evidence": image_evidence,
        "zero_shot": [(names.get(slug, slug), p) for slug, p in image_evidence.get("zero_shot", {}).items()],
        "pictures": list(result.images.all()) if result else [],
        "tasks": item.review_tasks.select_related("decided_by", "leased_to").order_by("created_at"),
        "appeals": item.appeals.order_by("created_at"),
        "history": selectors.item_history(item=item),
    }


def highlight(text: str, terms: list[str]) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, is_a_matching_term) pieces, for the template to mark (it escapes every piece)."""
    if not text or not terms:
        return [(text, False)] if text else []
    pattern = re.compile(r"\b(" + "|".join(re.escape(term) for term in terms) + r")\b", re.IGNORECASE)
    pieces, last = [], 0
    for match in pattern.finditer(text):
        pieces.extend([(text[last : match.start()], False), (match.group(0), True)])
        last = match.end()
    pieces.append((text[last:], False))
    return [piece for piece in pieces if piece[0]]


class DashboardPage(RoleRequiredMixin, View):
    allowed_roles = DASHBOARD_ROLES

    def get(self, request: HttpRequest) -> HttpResponse:
        days = selectors.decisions_per_day()
        peak = max((day["automatic"] + day["human"] for day in days), default=0) or 1
        for day in days:
            day["automatic_percent"] = round(100 * day["automatic"] / peak, 1)
            day["human_percent"] = round(100 * day["human"] / peak, 1)
        names = dict(Category.objects.values_list("slug", "name"))
        curves = [
            {**_curve(category, scores, truth), "name": names.get(category, category)}
            for category, (scores, truth) in selectors.reviewed_scores().items()
        ]
        context = {
            "sizes": selectors.queue_sizes(),
            "days": days,
            "curves": [curve for curve in curves if curve["points"]],
            "pending": [curve for curve in curves if not curve["points"]],
        }
        return render(request, "moderation/dashboard.html", context)


CURVE_SIZE = 220


def _curve(category: str, scores: list[float], truth: list[int]) -> dict[str, Any]:
    """An SVG polyline of the precision/recall curve of one category's scores against reviewers' labels."""
    positives = sum(truth)
    entry: dict[str, Any] = {"category": category, "n": len(truth), "positives": positives, "points": ""}
    if positives == 0 or positives == len(truth):
        return entry
    precision, recall, _ = pr_curve(np.array(truth), np.array(scores))
    order = np.argsort(recall, kind="stable")
    # From (recall 0, precision 1), as scikit-learn's curves start, in steps (a step up in recall holds the precision
    # it is reached at, as scikit-learn draws them): a perfect ranking runs along the top, and a line never promises
    # a precision that no threshold gives.
    points = [(0.0, 1.0), *((float(recall[i]), float(precision[i])) for i in order)]
    steps = [points[0]]
    for before, after in pairwise(points):
        steps += [(before[0], after[1]), after]
    drawn = (f"{r * CURVE_SIZE:.1f},{(1 - p) * CURVE_SIZE:.1f}" for r, p in steps)
    entry["points"] = " ".join(point for point, _ in groupby(drawn))  # a corner on a point is drawn once
    return entry
