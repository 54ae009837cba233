"""Moderation reads."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from apps.accounts.roles import Role, user_roles
from apps.moderation.models import ContentItem, ModerationResult

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
