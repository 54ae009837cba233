"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views import View

from vlplatform.celery import app as celery_app


class HealthzView(View):
    """The process is up."""

    public = True

    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"status": "ok"})


class ReadyzView(View):
    """The database answers, the broker answers, and at least one worker replies to a ping."""

    public = True

    def get(self, request: HttpRequest) -> JsonResponse:
        checks: dict[str, str] = {}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"error: {error}"
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
            checks["broker"] = "ok"
        except Exception as error:
            checks["broker"] = f"error: {error}"
        if checks["broker"] == "ok":
            try:
                replies = celery_app.control.ping(timeout=1.0)
                checks["workers"] = f"{len(replies)} live" if replies else "error: no live worker"
            except Exception as error:
                checks["workers"] = f"error: {error}"
        else:
            checks["workers"] = "error: broker unreachable"
        ready = all(not value.startswith("error") for value in checks.values())
        return JsonResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503
        )
