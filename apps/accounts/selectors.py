from django.db.models import QuerySet

from apps.accounts.models import ApiKey
from apps.accounts.roles import UserLike


def api_keys_visible_to(*, user: UserLike) -> QuerySet[ApiKey]:
    """A user manages their own keys."""
    return ApiKey.objects.filter(user=user).order_by("-created_at")
