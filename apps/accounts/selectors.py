from django.contrib.auth.models import User
from django.db.models import QuerySet

from apps.accounts.models import ApiKey


def api_keys_visible_to(*, user: User) -> QuerySet[ApiKey]:
    """A user manages their own keys."""
    return ApiKey.objects.filter(user=user).order_by("-created_at")
