from django.urls import path

from apps.registry import views

app_name = "registry"

urlpatterns = [
    path("", views.ConsolePage.as_view(), name="console"),
    path("register/", views.RegisterPage.as_view(), name="register"),
    path("compare/", views.ComparePage.as_view(), name="compare"),
    path("<int:version_id>/", views.DetailPage.as_view(), name="detail"),
    path("<int:version_id>/<str:action>/", views.ActionPage.as_view(), name="action"),
    path("rollback/<str:name>/", views.RollbackPage.as_view(), name="rollback"),
]
