"""Django settings. Every value that varies comes from the environment through ``vlplatform.env``."""

import secrets
from pathlib import Path
from urllib.parse import unquote

from django.core.exceptions import ImproperlyConfigured

from vlplatform import embedded
from vlplatform.env import BASE_DIR, DATA_DIR, EMBEDDED, VAR_DIR, env
from vlplatform.env import DATABASE_URL as _DATABASE_URL
from vlplatform.env import REDIS_URL as _REDIS_URL

DATABASE_URL = _DATABASE_URL or embedded.postgres_url(VAR_DIR)
REDIS_URL = _REDIS_URL or embedded.redis_url(VAR_DIR)


def _embedded_secret_key() -> str:
    """The embedded demo keeps a random key under var/ so sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
if EMBEDDED:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
else:
    SECRET_KEY = env.str("SECRET_KEY", default="")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
    if not SECRET_KEY or not ALLOWED_HOSTS:
        raise ImproperlyConfigured("SECRET_KEY and ALLOWED_HOSTS must be set when DATABASE_URL is set")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "apps.accounts",
    "apps.audit",
    "apps.registry",
    "apps.jobs",
    "apps.moderation",
    "apps.ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "vlplatform.urls"
WSGI_APPLICATION = "vlplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.accounts.context_processors.roles",
            ],
        },
    },
]

DATABASES = {"default": env.db_url_config(DATABASE_URL)}
# A unix-socket directory travels percent-encoded in the URL's host (postgresql://user@%2Fpath%2Fto%2Fdir/db).
DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
# Web threads and workers keep their connection for DB_CONN_MAX_AGE seconds (a new one costs ~4 ms here), checked
# before reuse; 0 opens one per request or task.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
if EMBEDDED:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise serves from the finders; the folder may stay empty
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "media/"
# A 20 MB image sent as base64 in JSON is about 27 MB of body; uploads (multipart) stream to disk past 2.5 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 28 * 1024 * 1024

VLP_DATA_DIR = DATA_DIR
VLP_VAR_DIR = VAR_DIR

# --- API -------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.ApiKeyAuthentication",
        "apps.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.accounts.permissions.HasRole"],
    "DEFAULT_THROTTLE_CLASSES": ["apps.accounts.throttling.ApiKeyRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.ops.errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "vlplatform API",
    "DESCRIPTION": "Jobs, model registry, audit log and storefront API keys of vlplatform.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Celery ----------------------------------------------------------------------------------------------
# The longest task may run CELERY_TASK_TIME_LIMIT seconds; a message not acknowledged within the broker's
# visibility timeout is delivered again, so the timeout must stay above the limit (checked below).
CELERY_BROKER_URL = embedded.celery_broker_url(REDIS_URL)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=1800)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=CELERY_TASK_TIME_LIMIT - 60)
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 600)
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# Celery's Django fixup would close the database connection before and after every task, whatever CONN_MAX_AGE
# says; with this set it only does so every 1,000 tasks, and vlplatform.celery closes connections that are past
# CONN_MAX_AGE or broken, as Django does around a request.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"jobs.run_inference_job": {"queue": "inference"}}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A job whose worker vanished is taken over once its lease has run out.
VLP_JOB_LEASE_SECONDS = env.int("VLP_JOB_LEASE_SECONDS", default=CELERY_TASK_TIME_LIMIT)
# Requests per minute an API key may make unless the key sets its own limit (over it: 429 with Retry-After).
VLP_API_KEY_RATE_PER_MINUTE = env.int("VLP_API_KEY_RATE_PER_MINUTE", default=600)
# A worker with a backlog of moderation posts scores up to this many in one batch (1: one at a time).
VLP_MODERATION_BATCH = env.int("VLP_MODERATION_BATCH", default=16)
# How long a review task handed to a moderator stays theirs; an expired lease returns it to the queue.
VLP_REVIEW_LEASE_SECONDS = env.int("VLP_REVIEW_LEASE_SECONDS", default=600)
# Webhooks: attempts per delivery, the wait before the second (doubling after each failure), the request timeout.
VLP_WEBHOOK_MAX_ATTEMPTS = env.int("VLP_WEBHOOK_MAX_ATTEMPTS", default=6)
VLP_WEBHOOK_BACKOFF_SECONDS = env.float("VLP_WEBHOOK_BACKOFF_SECONDS", default=30.0)
VLP_WEBHOOK_TIMEOUT_SECONDS = env.float("VLP_WEBHOOK_TIMEOUT_SECONDS", default=10.0)

# --- Logging ---------------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "vlplatform.logging.ContextFilter"}},
    "formatters": {"json": {"()": "vlplatform.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}
