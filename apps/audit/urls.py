from django.urls import path

from apps.audit import views

app_name = "audit"

urlpatterns = [path("", views.AuditBrowserPage.as_view(), name="browser")]
