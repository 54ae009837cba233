from typing import Any

from django.http import HttpRequest

from apps.accounts.permissions import user_may
from apps.accounts.roles import user_roles

# The top navigation: each link shows only to users whose roles its view admits.
NAVIGATION = [
    ("Review queue", "moderation:queue"),
    ("Moderation dashboard", "moderation:dashboard"),
    ("Jobs", "jobs:list"),
    ("Models", "registry:console"),
    ("Audit log", "audit:browser"),
    ("API keys", "accounts:api_keys"),
]


def roles(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_roles": frozenset(), "navigation": []}
    return {
        "user_roles": user_roles(user),
        "navigation": [(label, url_name) for label, url_name in NAVIGATION if user_may(user, url_name)],
    }
