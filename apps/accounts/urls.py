from django.urls import path

from apps.accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("home/", views.HomeView.as_view(), name="home"),
    path("api-keys/", views.ApiKeysPage.as_view(), name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", views.ApiKeyRevokePage.as_view(), name="api_key_revoke"),
]
