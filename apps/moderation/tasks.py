"""Celery tasks: take ids, re-fetch, call one service."""

from __future__ import annotations

from celery import Task, shared_task

from apps.moderation import services


@shared_task(name="moderation.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook(self: Task, delivery_id: int) -> None:
    retry_in = services.webhook_delivery_attempt(delivery_id=delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)
