"""vlplatform: vision-language models at work where people review what the models say."""

from vlplatform.celery import app as celery_app

__all__ = ["celery_app"]
