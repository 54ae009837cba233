"""Moderation writes: submitting posts, storing their scores with evidence, routing them by policy.

Every state change is one transaction with its audit event. Scoring runs as an ``InferenceJob`` (kind
``moderation_score``); the job's hooks store the result and route the item in the transaction that finishes the job,
so a job is never succeeded without its result, nor a result stored for a job that failed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
import logging
import random
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from PIL import Image

from apps.audit.services import PendingEvent, audit_record, audit_record_many
from apps.jobs.kinds import JobOutcome
from apps.jobs.models import InferenceJob
from apps.jobs.services import job_submit
from apps.moderation.models import (
    Appeal,
    AppealStatus,
    Category,
    ContentItem,
    Decision,
    DeliveryStatus,
    EvidenceImage,
    ItemStatus,
    ModerationResult,
    Policy,
    PolicyAction,
    ReviewReason,
    ReviewStatus,
    ReviewTask,
    Route,
    WebhookDelivery,
    WebhookEndpoint,
)
from apps.moderation.selectors import item_latest_result
from apps.registry.models import ModelVersion
from apps.registry.selectors import NoChampion, model_champion
from ml.images import ImageRejected, ImageTooLarge, open_image

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000
SCORE_KIND = "moderation_score"
FUSION_MODEL_NAME = "moderation-fusion"
# Without a fusion head the job is recorded against the model whose signals it computes first: the text encoder.
SIGNALS_MODEL_NAME = "minilm-l6-v2"
IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
# When several categories act at once, the strongest action wins.
ACTION_SEVERITY = [PolicyAction.REMOVE, PolicyAction.RESTRICT, PolicyAction.LABEL]


@dataclass
class ModerationInputError(ValueError):
    """A post that cannot be accepted; ``code`` is machine-readable, ``message`` says why."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


@transaction.atomic
def moderation_item_submit(
    *,
    text: str = "",
    image: bytes | None = None,
    author_ref: str = "",
    source: str = "api",
    metadata: dict[str, Any] | None = None,
    actor: User | None,
) -> ContentItem:
    """Store a post and queue its scoring. Bad input raises ``ModerationInputError`` before anything is stored."""
    text = text or ""
    if not text.strip() and not image:
        raise ModerationInputError("empty_item", "an item needs text, an image, or both")
    if len(text) > MAX_TEXT_CHARS:
        raise ModerationInputError("text_too_long", f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    item = ContentItem(text=text, author_ref=author_ref, source=source, metadata=metadata or {}, submitted_by=actor)
    image_sha256 = ""
    if image:
        try:
            decoded = open_image(image)
        except ImageTooLarge as error:
            raise ModerationInputError("image_too_large", str(error)) from error
        except ImageRejected as error:
            raise ModerationInputError("image_undecodable", str(error)) from error
        image_sha256 = hashlib.sha256(image).hexdigest()
        item.image_sha256, item.image_width, item.image_height = image_sha256, decoded.width, decoded.height
        item.image.name = _store_once(f"moderation/images/{image_sha256}.{_extension(image)}", image)
    item.content_sha256 = hashlib.sha256(f"{text}\x00{image_sha256}".encode()).hexdigest()
    item.save()
    job, _ = job_submit(
        kind=SCORE_KIND, job_input={"item_id": str(item.pk)}, actor=actor, model_version=_scoring_version()
    )
    item.job = job
    item.save(update_fields=["job"])
    audit_record(
        actor=actor,
        action="moderation.item_submit",
        target=item,
        payload={"has_text": bool(text.strip()), "image_sha256": image_sha256, "source": source, "job": str(job.pk)},
    )
    return item


def _scoring_version() -> ModelVersion:
    try:
        return model_champion(name=FUSION_MODEL_NAME)
    except NoChampion:
        return model_champion(name=SIGNALS_MODEL_NAME)


def _extension(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as image:
        return IMAGE_EXTENSIONS.get(image.format or "", "img")


def _store_once(name: str, data: bytes) -> str:
    """Content-addressed storage: the same bytes are written once (a retried job writes nothing new)."""
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(data))


def evidence_picture_store(*, png: bytes) -> dict[str, str]:
    """Write one rendered evidence picture (from a worker, before its job finishes); its storage name and sha256."""
    sha256 = hashlib.sha256(png).hexdigest()
    return {"name": _store_once(f"moderation/evidence/{sha256}.png", png), "sha256": sha256}


# --- the scoring job's hooks (inside the job's finishing transaction) ------------------------------------------------
def moderation_scoring_finished(outcomes: Sequence[JobOutcome]) -> None:
    """Store each scored item's result with its evidence and route it by the policies in force; an item whose job
    failed is marked failed. A batch's items are written together."""
    items = {
        item.job_id: item
        for item in ContentItem.objects.select_for_update()
        .filter(job__in=[outcome.job.pk for outcome in outcomes])
        .order_by("pk")
    }
    policies = policies_in_force()
    events: list[PendingEvent] = []
    scored: list[tuple[ContentItem, ModerationResult]] = []
    pictures: list[EvidenceImage] = []
    for outcome in outcomes:
        item = items[outcome.job.pk]
        if outcome.error or outcome.result is None:
            item.status = ItemStatus.FAILED
            events.append(
                PendingEvent(action="moderation.item_score_fail", target=item, payload={"error": outcome.error})
            )
            continue
        version = outcome.job.model_version
        stored = ModerationResult(
            item=item,
            job=outcome.job,
            scores=outcome.result["scores"],
            evidence=outcome.result["evidence"],
            model_versions=outcome.result["model_versions"],
            fusion_model=version if version.name == FUSION_MODEL_NAME else None,
            timings=outcome.result["timings"],
        )
        stored.routes, stored.route = _routes(stored, policies)
        scored.append((item, stored))
        pictures.extend(
            EvidenceImage(
                result=stored,
                kind=picture["kind"],
                label=picture["label"],
                file=picture["name"],
                sha256=picture["sha256"],
            )
            for picture in outcome.result["pictures"]
        )
    ModerationResult.objects.bulk_create([stored for _, stored in scored])
    EvidenceImage.objects.bulk_create(pictures)
    tasks: list[ReviewTask] = []
    for item, stored in scored:
        tasks.extend(_act(item, stored))
        events.append(_route_event(item, stored))
    ReviewTask.objects.bulk_create(tasks)
    for item in items.values():
        item.save(update_fields=["status", "decision", "decided_automatically", "decided_at"])
    _decision_events([item for item, _ in scored if item.status == ItemStatus.DECIDED])
    audit_record_many(events)


def moderation_scoring_requeued(job: InferenceJob) -> None:
    ContentItem.objects.filter(job=job).update(status=ItemStatus.SCORING)


def policies_in_force() -> dict[str, Policy]:
    """category slug -> its highest policy version, for every active category that has one."""
    latest: dict[str, Policy] = {}
    for policy in Policy.objects.filter(category__active=True).select_related("category").order_by("-version"):
        latest.setdefault(policy.category.slug, policy)
    return latest


def _routes(result: ModerationResult, policies: dict[str, Policy]) -> tuple[dict[str, dict[str, Any]], str]:
    """Per category: below ``allow_below`` approve, above ``block_above`` act, between them a human looks. Without a
    moderation model every category goes to a human. A category the model does not score for this post (one it was
    never trained on, or a detector fallback on a post without an image) is ``not_scored``: it neither approves nor
    holds the post, and the result says why. Returns the routes per category and the post's route."""
    routes: dict[str, dict[str, Any]] = {}
    not_scored = result.evidence.get("fusion", {}).get("not_scored", {})
    for slug, policy in policies.items():
        score = result.scores.get(slug)
        entry: dict[str, Any] = {"score": score, "policy": policy.to_dict()}
        if score is None and result.fusion_model is not None:
            route = Route.NOT_SCORED
            entry["why"] = not_scored.get(slug, "the model was not trained on this category")
        elif score is None or policy.allow_below <= score <= policy.block_above:
            route = Route.REVIEW
        elif score < policy.allow_below:
            route = Route.APPROVE
        else:
            route = Route.ACT
        routes[slug] = {"route": str(route), **entry}
    if any(entry["route"] == Route.ACT for entry in routes.values()):
        return routes, Route.ACT
    if any(entry["route"] == Route.REVIEW for entry in routes.values()):
        return routes, Route.REVIEW
    return routes, Route.APPROVE


def _act(item: ContentItem, result: ModerationResult) -> list[ReviewTask]:
    """Apply a stored result's route to its item (saved by the caller): hold it for review, or decide it
    automatically; returns the review tasks to create."""
    if result.route == Route.REVIEW:
        item.status = ItemStatus.IN_REVIEW
        reason = ReviewReason.NO_MODEL if not result.scores else ReviewReason.UNCERTAIN
        return [ReviewTask(item=item, result=result, reason=reason)]
    actions = {result.routes[slug]["policy"]["action"] for slug in _acting(result)}
    decision = next((str(a) for a in ACTION_SEVERITY if a in actions), Decision.REMOVE) if actions else "approve"
    item.status, item.decision, item.decided_automatically = ItemStatus.DECIDED, decision, True
    item.decided_at = timezone.now()
    # A random share of automatic decisions is also looked at by a human, who may reverse it.
    rate = max((entry["policy"]["audit_sample_rate"] for entry in result.routes.values()), default=0.0)
    if random.Random(f"{item.pk}:{result.pk}").random() < rate:  # noqa: S311 - sampling, not security
        return [ReviewTask(item=item, result=result, reason=ReviewReason.AUDIT_SAMPLE)]
    return []


def _acting(result: ModerationResult) -> list[str]:
    """The categories whose policy acts on this result."""
    return [slug for slug, entry in result.routes.items() if entry["route"] == Route.ACT]


def _route_event(item: ContentItem, result: ModerationResult) -> PendingEvent:
    return PendingEvent(
        action="moderation.item_route",
        target=item,
        payload={
            "route": str(result.route),
            "decision": item.decision,
            "scores": result.scores,
            "acting": _acting(result),
            "model_versions": result.model_versions,
        },
    )


@transaction.atomic
def policy_create(
    *,
    category: Category,
    allow_below: float,
    block_above: float,
    action: str = PolicyAction.REMOVE,
    audit_sample_rate: float = 0.05,
    reason: str = "",
    actor: User | None,
) -> Policy:
    """A new version of ``category``'s policy (versions are never edited); in force from now on."""
    if not 0 <= allow_below <= block_above <= 1:
        raise ValueError(
            f"thresholds must satisfy 0 <= allow_below <= block_above <= 1, got {allow_below}, {block_above}"
        )
    if not 0 <= audit_sample_rate <= 1:
        raise ValueError(f"audit_sample_rate must be a share in [0, 1], got {audit_sample_rate}")
    latest = Policy.objects.select_for_update().filter(category=category).order_by("-version").first()
    policy = Policy.objects.create(
        category=category,
        version=(latest.version + 1) if latest else 1,
        allow_below=allow_below,
        block_above=block_above,
        action=action,
        audit_sample_rate=audit_sample_rate,
        reason=reason,
        created_by=actor,
    )
    audit_record(actor=actor, action="moderation.policy_create", target=policy, payload=policy.to_dict())
    return policy


# --- human review ----------------------------------------------------------------------------------------------------
class ReviewNotAllowed(ValueError):
    """The task is not (or no longer) this reviewer's to decide."""


REVIEW_DECISIONS = (*(str(d) for d in Decision), "escalate")
ESCALATION_QUEUE = "escalated"


@transaction.atomic
def review_task_next(*, reviewer: User, queue: str = "default") -> ReviewTask | None:
    """Lease the oldest open task of ``queue`` to ``reviewer`` (the one they already hold first); None when the queue
    is empty. Rows are locked with SKIP LOCKED, so two moderators asking at once get different tasks."""
    now = timezone.now()
    held = (
        ReviewTask.objects.select_for_update()
        .filter(status=ReviewStatus.OPEN, queue=queue, leased_to=reviewer, lease_expires_at__gt=now)
        .order_by("created_at")
        .first()
    )
    if held is not None:
        return held
    task = (
        ReviewTask.objects.select_for_update(skip_locked=True)
        .filter(status=ReviewStatus.OPEN, queue=queue)
        .filter(Q(leased_to__isnull=True) | Q(lease_expires_at__lte=now))
        .exclude(excluded_reviewer=reviewer)
        .order_by("created_at")
        .first()
    )
    if task is None:
        return None
    previous = task.leased_to_id
    task.leased_to = reviewer
    task.lease_expires_at = now + timedelta(seconds=settings.VLP_REVIEW_LEASE_SECONDS)
    task.save(update_fields=["leased_to", "lease_expires_at"])
    audit_record(
        actor=reviewer,
        action="moderation.review_lease",
        target=task,
        payload={"item": str(task.item_id), "queue": queue, "expired_lease_of": previous},
    )
    return task


@transaction.atomic
def review_task_decide(
    *,
    task: ReviewTask,
    reviewer: User,
    decision: str,
    reason: str = "",
    violated: Sequence[str] = (),
    seconds_spent: float | None = None,
) -> ReviewTask:
    """Record a reviewer's decision on a task they hold. ``violated`` names the categories the post breaks (a removal
    needs at least one); every other active category is recorded as not violated, which is what the next
    ``moderation_train`` learns from. ``escalate`` passes the item to the escalation queue undecided."""
    if decision not in REVIEW_DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(REVIEW_DECISIONS)}, got {decision!r}")
    task = ReviewTask.objects.select_for_update().get(pk=task.pk)
    if task.status != ReviewStatus.OPEN:
        raise ReviewNotAllowed("this task is already decided")
    if task.leased_to_id != reviewer.pk or task.lease_expires_at is None or task.lease_expires_at <= timezone.now():
        raise ReviewNotAllowed("this task is not leased to you (or the lease ran out): take it from the queue again")
    active = set(Category.objects.filter(active=True).values_list("slug", flat=True))
    unknown = sorted(set(violated) - active)
    if unknown:
        raise ValueError(f"unknown categories {unknown}; active ones: {sorted(active)}")
    if decision not in ("approve", "escalate") and not violated:
        raise ValueError("say which categories the post violates")
    if decision == "approve" and violated:
        raise ValueError("an approved post violates no category")
    item = ContentItem.objects.select_for_update().get(pk=task.item_id)
    previous = {"decision": item.decision, "automatic": item.decided_automatically}
    task.status, task.decision, task.decision_reason = ReviewStatus.DONE, decision, reason
    task.decided_by, task.decided_at, task.seconds_spent = reviewer, timezone.now(), seconds_spent
    if decision != "escalate":
        task.labels = {slug: int(slug in violated) for slug in sorted(active)}
    task.save()
    if decision == "escalate":
        ReviewTask.objects.create(item=item, result=task.result, queue=ESCALATION_QUEUE, reason=ReviewReason.ESCALATION)
    else:
        item.status, item.decision, item.decided_automatically = ItemStatus.DECIDED, decision, False
        item.decided_by, item.decided_at = reviewer, task.decided_at
        item.save(update_fields=["status", "decision", "decided_automatically", "decided_by", "decided_at"])
        if task.reason == ReviewReason.APPEAL:
            _appeal_close(task, decision)
        _decision_events([item])
    audit_record(
        actor=reviewer,
        action="moderation.review_decide",
        target=item,
        payload={
            "task": task.pk,
            "task_reason": task.reason,
            "decision": decision,
            "reason": reason,
            "violated": sorted(violated),
            "previous": previous,
            "seconds_spent": seconds_spent,
        },
    )
    return task


# --- appeals ---------------------------------------------------------------------------------------------------------
class AppealNotAllowed(ValueError):
    pass


APPEAL_QUEUE = "appeals"


@transaction.atomic
def appeal_submit(*, item: ContentItem, statement: str, actor: User | None) -> Appeal:
    """The author asks for a second look at a decision: a review task for anyone but the moderator who decided."""
    statement = statement.strip()
    if not statement:
        raise AppealNotAllowed("say why the decision is wrong")
    item = ContentItem.objects.select_for_update().get(pk=item.pk)
    if item.status != ItemStatus.DECIDED:
        raise AppealNotAllowed(f"only decided items can be appealed; this one is {item.status}")
    if Appeal.objects.filter(item=item, status=AppealStatus.OPEN).exists():
        raise AppealNotAllowed("this item already has an open appeal")
    if ReviewTask.objects.filter(item=item, status=ReviewStatus.OPEN).exists():
        raise AppealNotAllowed("this item is being reviewed already")
    task = ReviewTask.objects.create(
        item=item,
        result=item_latest_result(item=item),
        queue=APPEAL_QUEUE,
        reason=ReviewReason.APPEAL,
        excluded_reviewer=item.decided_by,
    )
    appeal = Appeal.objects.create(
        item=item, statement=statement, decision_appealed=item.decision, task=task, submitted_by=actor
    )
    audit_record(
        actor=actor,
        action="moderation.appeal_submit",
        target=item,
        payload={"appeal": appeal.pk, "decision_appealed": item.decision, "excluded_reviewer": item.decided_by_id},
    )
    return appeal


def _appeal_close(task: ReviewTask, decision: str) -> None:
    appeal = Appeal.objects.select_for_update().filter(task=task).first()
    if appeal is None:
        return
    appeal.status = AppealStatus.UPHELD if decision == appeal.decision_appealed else AppealStatus.OVERTURNED
    appeal.decided_at = task.decided_at
    appeal.save(update_fields=["status", "decided_at"])


# --- webhooks --------------------------------------------------------------------------------------------------------
DECISION_EVENT = "item.decided"
SIGNATURE_HEADER = "X-VLP-Signature"


@transaction.atomic
def webhook_endpoint_create(*, owner: User, url: str) -> WebhookEndpoint:
    """A new endpoint for ``owner``'s items; its ``secret`` is returned here and shown once."""
    endpoint = WebhookEndpoint.objects.create(owner=owner, url=url, secret=f"whsec_{secrets.token_urlsafe(32)}")
    audit_record(actor=owner, action="moderation.webhook_create", target=endpoint, payload={"url": url})
    return endpoint


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``: what a receiver recomputes to trust a delivery."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _decision_events(items: Sequence[ContentItem]) -> None:
    """Queue each item's final decision for every active endpoint of its submitter (in the deciding transaction)."""
    submitters = {item.submitted_by_id for item in items if item.submitted_by_id is not None}
    if not submitters:
        return
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(owner_id__in=submitters, active=True).order_by("pk"):
        endpoints.setdefault(endpoint.owner_id, []).append(endpoint)
    deliveries = [
        WebhookDelivery(endpoint=endpoint, item=item, event=DECISION_EVENT, payload=_decision_payload(item))
        for item in items
        for endpoint in endpoints.get(item.submitted_by_id or 0, [])
    ]
    for delivery in WebhookDelivery.objects.bulk_create(deliveries):
        transaction.on_commit(functools.partial(_enqueue_delivery, delivery.pk))


def _decision_payload(item: ContentItem) -> dict[str, Any]:
    return {
        "event": DECISION_EVENT,
        "item_id": str(item.pk),
        "author_ref": item.author_ref,
        "decision": item.decision,
        "automatic": item.decided_automatically,
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
    }


def _enqueue_delivery(delivery_id: int) -> None:
    from apps.moderation.tasks import deliver_webhook

    deliver_webhook.delay(delivery_id)


def webhook_delivery_attempt(*, delivery_id: int) -> float | None:
    """POST the delivery once (outside any transaction), then record the attempt. Returns the seconds to wait before
    the next attempt, or None when the delivery is finished (delivered, failed for good, or already done)."""
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return None
    body = json.dumps({**delivery.payload, "delivery_id": delivery.pk}, sort_keys=True, separators=(",", ":")).encode()
    signature = webhook_signature(delivery.endpoint.secret, int(time.time()), body)
    request = urllib.request.Request(  # noqa: S310 - the integrator's own URL, http(s) only (URLField)
        delivery.endpoint.url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature, "User-Agent": "vlplatform"},
    )
    outcome: dict[str, Any] = {"at": timezone.now().isoformat()}
    try:
        with urllib.request.urlopen(request, timeout=settings.VLP_WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            outcome["status"] = response.status
    except urllib.error.HTTPError as error:
        outcome["status"], outcome["error"] = error.code, str(error.reason)[:200]
    except (urllib.error.URLError, OSError) as error:
        outcome["error"] = str(getattr(error, "reason", error))[:200]
    return _delivery_record(delivery_id=delivery_id, outcome=outcome)


@transaction.atomic
def _delivery_record(*, delivery_id: int, outcome: dict[str, Any]) -> float | None:
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return None
    delivery.attempts += 1
    delivery.log = [*delivery.log, outcome]
    retry_in: float | None = None
    if 200 <= int(outcome.get("status") or 0) < 300:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
            DeliveryStatus.DELIVERED,
            timezone.now(),
            None,
        )
    elif delivery.attempts >= settings.VLP_WEBHOOK_MAX_ATTEMPTS:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
    else:
        retry_in = settings.VLP_WEBHOOK_BACKOFF_SECONDS * 2 ** (delivery.attempts - 1)
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=retry_in)
    delivery.save(update_fields=["attempts", "log", "status", "delivered_at", "next_attempt_at"])
    if delivery.status != DeliveryStatus.PENDING:
        audit_record(
            actor=None,
            action=f"moderation.webhook_{delivery.status}",
            target=delivery,
            payload={"item": str(delivery.item_id), "attempts": delivery.attempts, "last": outcome},
        )
    return retry_in
