"""Storefront API keys: shown once, stored as a sha256 hash, scoped, revocable."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The public part of the key (``vlp_<prefix>_<secret>``), used to find the row; the secret is never stored.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    rate_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="requests per minute; empty: the platform default (VLP_API_KEY_RATE_PER_MINUTE)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
