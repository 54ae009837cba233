"""Writing audit events. Call inside the transaction of the change being recorded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent

GENESIS_HASH = "0" * 64
# Serialises appends so that each event chains to the one committed before it.
_CHAIN_LOCK_KEY = 7_424_001


@dataclass(frozen=True)
class PendingEvent:
    """One event for ``audit_record_many``: the arguments of ``audit_record``."""

    action: str
    actor: User | None = None
    target: models.Model | None = None
    target_type: str = ""
    target_id: str | int = ""
    payload: dict[str, Any] | None = None


def audit_record(
    *,
    actor: User | None,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction."""
    (event,) = audit_record_many(
        [
            PendingEvent(
                action=action, actor=actor, target=target, target_type=target_type, target_id=target_id, payload=payload
            )
        ]
    )
    return event


def audit_record_many(pending: Sequence[PendingEvent]) -> list[AuditEvent]:
    """Append events to the chain in order, in the caller's transaction, with one lock and one insert."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    if not pending:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    previous = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
    now = timezone.now()
    events = []
    for each in pending:
        target_type, target_id = each.target_type, each.target_id
        if each.target is not None:
            target_type, target_id = each.target._meta.label_lower, each.target.pk
        user = each.actor if each.actor is not None and each.actor.is_authenticated else None
        event = AuditEvent(
            actor=user,
            actor_username=user.get_username() if user is not None else "",
            action=each.action,
            target_type=target_type,
            target_id=str(target_id),
            # Round-trip the payload through JSON so the hash is computed over what the database will return.
            payload=json.loads(json.dumps(each.payload or {}, default=str)),
            created_at=now,
            prev_hash=previous,
        )
        event.hash = previous = event.compute_hash()
        events.append(event)
    return AuditEvent.objects.bulk_create(events)
