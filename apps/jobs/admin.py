from django.contrib import admin

from apps.jobs.models import InferenceJob


@admin.register(InferenceJob)
class InferenceJobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress", "model_version", "attempts", "created_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in InferenceJob._meta.fields]
