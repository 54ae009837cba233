# vlplatform image: web (gunicorn) and Celery workers run from this one image (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Torch first, pinned (the same pins as pyproject.toml); PyPI's Linux wheels run on CPU and CUDA.
RUN pip install torch==2.14.1 torchvision==0.29.1

# The runtime dependencies live in one place: pyproject.toml's [project].dependencies.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .

# collectstatic does not connect to anything; these values only keep settings.py from starting the embedded
# Postgres/Redis (DATABASE_URL/REDIS_URL unset) and satisfy its production checks (SECRET_KEY, ALLOWED_HOSTS).
RUN DATABASE_URL=postgresql://x@localhost/x REDIS_URL=redis://localhost:6379/0 SECRET_KEY=build ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput

# Non-root user; the media and model-cache mount points are created owned by it, so fresh named volumes are too.
RUN useradd --create-home --uid 1000 vlp \
    && mkdir -p /data/media /models/hf /app/var \
    && chown -R vlp:vlp /data /models /app/var

USER vlp
EXPOSE 8000

CMD ["gunicorn", "vlplatform.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4"]
