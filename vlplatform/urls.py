"""URLs: pages, the v1 API, OpenAPI schema and docs, probes."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.accounts import apis as accounts_apis
from apps.audit import apis as audit_apis
from apps.jobs import apis as jobs_apis
from apps.moderation import apis as moderation_apis
from apps.ops.views import HealthzView, ReadyzView
from apps.registry import apis as registry_apis


class PublicSchemaView(SpectacularAPIView):
    public = True


class PublicSwaggerView(SpectacularSwaggerView):
    public = True


class IndexView(RedirectView):
    public = True
    pattern_name = "accounts:home"


api_v1 = [
    path("me", accounts_apis.MeApi.as_view(), name="me"),
    path("auth/token", accounts_apis.TokenObtainApi.as_view(), name="auth-token"),
    path("api-keys", accounts_apis.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>/revoke", accounts_apis.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("jobs", jobs_apis.JobListCreateApi.as_view(), name="jobs"),
    path("jobs/<uuid:job_id>", jobs_apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/retry", jobs_apis.JobRetryApi.as_view(), name="job-retry"),
    path("models", registry_apis.ModelVersionListCreateApi.as_view(), name="models"),
    path("models/<int:version_id>", registry_apis.ModelVersionDetailApi.as_view(), name="model-detail"),
    path("models/<int:version_id>/verify", registry_apis.ModelVersionVerifyApi.as_view(), name="model-verify"),
    path(
        "models/<int:version_id>/promote",
        registry_apis.ModelVersionPromoteApi.as_view(),
        name="model-promote",
    ),
    path("models/<int:version_id>/retire", registry_apis.ModelVersionRetireApi.as_view(), name="model-retire"),
    path("models/<str:name>/rollback", registry_apis.ModelRollbackApi.as_view(), name="model-rollback"),
    path("moderation/items", moderation_apis.ItemCreateApi.as_view(), name="moderation-items"),
    path("moderation/items/<uuid:item_id>", moderation_apis.ItemDetailApi.as_view(), name="moderation-item"),
    path("moderation/items/<uuid:item_id>/image", moderation_apis.ItemImageApi.as_view(), name="moderation-item-image"),
    path(
        "moderation/items/<uuid:item_id>/evidence/<int:evidence_id>",
        moderation_apis.EvidenceImageApi.as_view(),
        name="moderation-evidence",
    ),
    path(
        "moderation/items/<uuid:item_id>/appeals", moderation_apis.AppealCreateApi.as_view(), name="moderation-appeals"
    ),
    path("moderation/webhooks", moderation_apis.WebhookListCreateApi.as_view(), name="moderation-webhooks"),
    path(
        "moderation/webhooks/<int:endpoint_id>/deliveries",
        moderation_apis.WebhookDeliveriesApi.as_view(),
        name="moderation-webhook-deliveries",
    ),
    path("audit/events", audit_apis.AuditEventListApi.as_view(), name="audit-events"),
    path("audit/verify", audit_apis.AuditVerifyApi.as_view(), name="audit-verify"),
]

urlpatterns = [
    path("", IndexView.as_view(), name="index"),
    path("healthz", HealthzView.as_view(), name="healthz"),
    path("readyz", ReadyzView.as_view(), name="readyz"),
    path("accounts/", include("apps.accounts.urls")),
    path("jobs/", include("apps.jobs.urls")),
    path("registry/", include("apps.registry.urls")),
    path("moderation/", include("apps.moderation.urls")),
    path("audit/", include("apps.audit.urls")),
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", PublicSchemaView.as_view(), name="schema"),
    path("api/docs/", PublicSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
]

handler404 = "apps.ops.errors.not_found"
handler500 = "apps.ops.errors.server_error"
