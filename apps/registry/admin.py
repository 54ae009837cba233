from django.contrib import admin

from apps.registry.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Read-mostly: status changes go through the model console, which audits them."""

    list_display = ["name", "version", "family", "status", "verified_ok", "created_at"]
    list_filter = ["status", "family"]
    readonly_fields = [
        "status",
        "sha256",
        "source",
        "spec",
        "promoted_at",
        "demoted_at",
        "verified_at",
        "verified_ok",
    ]
