"""Model versions: what ran, from where, with which checksum and metrics, and which one is in charge."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelStatus(models.TextChoices):
    CANDIDATE = "candidate"
    CHAMPION = "champion"
    RETIRED = "retired"


class ModelVersion(models.Model):
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    family = models.CharField(max_length=50)
    source = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    spec = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=ModelStatus.choices, default=ModelStatus.CANDIDATE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_ok = models.BooleanField(null=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    # When this version last stopped being champion; rollback returns to the most recently demoted one.
    demoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="registry_unique_name_version"),
            models.UniqueConstraint(
                fields=["name"], condition=Q(status="champion"), name="registry_one_champion_per_name"
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"
