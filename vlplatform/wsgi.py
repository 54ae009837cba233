"""WSGI entry point (gunicorn in production, runserver in the embedded demo)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vlplatform.settings")

application = get_wsgi_application()
