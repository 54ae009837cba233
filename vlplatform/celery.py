"""The Celery application: queue ``inference`` for model work, ``default`` for light work."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vlplatform.settings")

app = Celery("vlplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
