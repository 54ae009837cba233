"""The Celery application: queue ``inference`` for model work, ``default`` for light work."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vlplatform.settings")

app = Celery("vlplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**_: Any) -> None:
    """Drop a database connection past CONN_MAX_AGE or unusable before and after each task (the fixup's closing
    every time is off: ``CELERY_DB_REUSE_MAX``)."""
    close_old_connections()
