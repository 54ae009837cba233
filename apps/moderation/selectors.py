"""Moderation reads."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from apps.accounts.roles import Role, user_roles
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
