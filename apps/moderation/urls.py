from django.urls import path

from apps.moderation import views

app_name = "moderation"

urlpatterns = [
    path("", views.QueuePage.as_view(), name="queue"),
    path("next/<str:queue>", views.TakeNextAction.as_view(), name="next"),
    path("tasks/<int:task_id>/", views.TaskPage.as_view(), name="task"),
    path("items/<uuid:item_id>/", views.ItemPage.as_view(), name="item"),
    path("dashboard/", views.DashboardPage.as_view(), name="dashboard"),
]
