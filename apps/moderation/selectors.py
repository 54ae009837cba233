"""Moderation reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.accounts.roles import Role, user_roles
from apps.audit.models import AuditEvent
from apps.moderation.models import ContentItem, ModerationResult, ReviewStatus, ReviewTask

SEE_ALL_ITEMS: frozenset[str] = frozenset({Role.MODERATOR, Role.ML_ADMIN, Role.AUDITOR})


def items_visible_to(*, user: User) -> QuerySet[ContentItem]:
    """Moderators, ML admins and auditors see every item; anyone else the items they submitted."""
    items = ContentItem.objects.select_related("job")
    if SEE_ALL_ITEMS & user_roles(user):
        return items
    return items.filter(submitted_by=user)


def item_latest_result(*, item: ContentItem) -> ModerationResult | None:
    """The item's most recent scoring (an item rescored by a newer model has several)."""
    return item.results.order_by("-created_at").first()


def reviewed_labels() -> list[tuple[ContentItem, dict[str, int]]]:
    """Every item a human decided, with the labels of its latest decided review (a reversal replaces the first
    judgement): the reviewed training data of ``moderation_train``."""
    latest: dict[str, tuple[ContentItem, dict[str, int]]] = {}
    tasks = (
        ReviewTask.objects.filter(status=ReviewStatus.DONE)
        .exclude(labels={})
        .select_related("item")
        .order_by("decided_at", "pk")
    )
    for task in tasks:
        latest[str(task.item_id)] = (task.item, {name: int(value) for name, value in task.labels.items()})
    return list(latest.values())


def queue_sizes() -> dict[str, dict[str, int]]:
    """queue -> {"open": tasks waiting, "leased": tasks someone holds now}, for every queue with open tasks (the
    three standard queues always)."""
    now = timezone.now()
    sizes = {queue: {"open": 0, "leased": 0} for queue in ("default", "escalated", "appeals")}
    rows = (
        ReviewTask.objects.filter(status=ReviewStatus.OPEN)
        .values("queue")
        .annotate(total=Count("id"), leased=Count("id", filter=Q(leased_to__isnull=False, lease_expires_at__gt=now)))
    )
    for row in rows:
        sizes.setdefault(row["queue"], {"open": 0, "leased": 0})
        sizes[row["queue"]] = {"open": row["total"] - row["leased"], "leased": row["leased"]}
    return sizes


def decisions_per_day(*, days: int = 14) -> list[dict[str, Any]]:
    """The last ``days`` days (oldest first): items decided automatically and by people, and removals."""
    since = timezone.now() - timedelta(days=days - 1)
    start = since.date()
    counts = {start + timedelta(days=offset): {"automatic": 0, "human": 0, "removed": 0} for offset in range(days)}
    rows = (
        ContentItem.objects.filter(decided_at__date__gte=start)
        .annotate(day=TruncDate("decided_at"))
        .values("day", "decided_automatically", "decision")
        .annotate(n=Count("id"))
    )
    for row in rows:
        if row["day"] not in counts:
            continue
        counts[row["day"]]["automatic" if row["decided_automatically"] else "human"] += row["n"]
        if row["decision"] != "approve":
            counts[row["day"]]["removed"] += row["n"]
    return [{"day": day, **figures} for day, figures in counts.items()]


def reviewed_scores() -> dict[str, tuple[list[float], list[int]]]:
    """category -> (model scores, reviewer labels) over every reviewed item the model scored for it: the data of
    the dashboard's precision/recall curves."""
    curves: dict[str, tuple[list[float], list[int]]] = {}
    reviewed = reviewed_labels()
    latest_scores: dict[str, dict[str, float]] = {}
    results = ModerationResult.objects.filter(item__in=[item.pk for item, _ in reviewed]).order_by("created_at", "pk")
    for item_id, scores in results.values_list("item_id", "scores"):
        latest_scores[str(item_id)] = scores  # ordered by time: the last one stays, as item_latest_result's
    for item, labels in reviewed:
        if str(item.pk) not in latest_scores:
            continue
        for category, label in labels.items():
            score = latest_scores[str(item.pk)].get(category)
            if score is not None:
                scores, truth = curves.setdefault(category, ([], []))
                scores.append(float(score))
                truth.append(int(label))
    return dict(sorted(curves.items()))


def item_history(*, item: ContentItem) -> QuerySet[AuditEvent]:
    """The audit events about the item and about its review tasks, oldest first."""
    task_ids = [str(pk) for pk in item.review_tasks.values_list("pk", flat=True)]
    return AuditEvent.objects.filter(
        Q(target_type="moderation.contentitem", target_id=str(item.pk))
        | Q(target_type="moderation.reviewtask", target_id__in=task_ids)
    ).order_by("id")
