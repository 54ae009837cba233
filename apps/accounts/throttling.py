"""Per API key request limits, counted in Redis so that every web process shares one count."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import redis
from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from apps.accounts.models import ApiKey

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60
clock = time.time  # tests pin it, so that a test never straddles two windows


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


class ApiKeyRateThrottle(BaseThrottle):
    """Fixed one-minute windows per key: ``ApiKey.rate_per_minute``, or ``VLP_API_KEY_RATE_PER_MINUTE``. Over it,
    DRF answers 429 with ``Retry-After``. Sessions and bearer tokens (people at a browser) are not limited here.

    If Redis cannot be reached the request is let through and a warning logged: a broker outage should not take the
    API down with it.
    """

    def __init__(self) -> None:
        self.seconds_left = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return True
        limit = key.rate_per_minute or settings.VLP_API_KEY_RATE_PER_MINUTE
        now = clock()
        window = int(now // WINDOW_SECONDS)
        name = f"vlp:rate:{key.pk}:{window}"
        try:
            client = _client(settings.REDIS_URL)
            pipeline = client.pipeline()
            pipeline.incr(name)
            pipeline.expire(name, 2 * WINDOW_SECONDS)
            count, _ = pipeline.execute()
        except redis.RedisError as error:
            logger.warning("rate limit not checked: %s", error, extra={"api_key": key.prefix})
            return True
        self.seconds_left = (window + 1) * WINDOW_SECONDS - now
        return int(count) <= limit

    def wait(self) -> float:
        return self.seconds_left
