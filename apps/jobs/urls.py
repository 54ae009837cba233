from django.urls import path

from apps.jobs import views

app_name = "jobs"

urlpatterns = [
    path("", views.JobListPage.as_view(), name="list"),
    path("<uuid:job_id>/", views.JobDetailPage.as_view(), name="detail"),
]
