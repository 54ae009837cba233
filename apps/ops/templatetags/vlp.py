"""Template helpers shared by every app's pages."""

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def tojson(value: Any) -> str:
    """JSON text of a value (payloads, metrics), as users see it in the API."""
    return json.dumps(value, sort_keys=True, default=str)
