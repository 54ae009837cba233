"""Writing audit events. Call inside the transaction of the change being recorded."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent

GENESIS_HASH = "0" * 64
# Serialises appends so that each event chains to the one committed before it.
_CHAIN_LOCK_KEY = 7_424_001


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
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    if target is not None:
        target_type = target._meta.label_lower
        target_id = target.pk
    user = actor if actor is not None and actor.is_authenticated else None
    # Round-trip the payload through JSON so the hash is computed over what the database will return.
    clean_payload = json.loads(json.dumps(payload or {}, default=str))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    event = AuditEvent(
        actor=user,
        actor_username=user.get_username() if user is not None else "",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        payload=clean_payload,
        created_at=timezone.now(),
        prev_hash=last or GENESIS_HASH,
    )
    event.hash = event.compute_hash()
    event.save()
    return event
