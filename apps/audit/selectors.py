"""Reading and checking the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from apps.audit.models import AuditEvent
from apps.audit.services import GENESIS_HASH


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str


def audit_events(
    *,
    actor: str = "",
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Events matching every given filter, newest first."""
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor_username=actor)
    if action:
        events = events.filter(action__startswith=action)
    if target_type:
        events = events.filter(target_type=target_type)
    if target_id:
        events = events.filter(target_id=target_id)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lte=until)
    return events.order_by("-id")


def audit_chain_first_break() -> ChainBreak | None:
    """Walk the chain from the first event; return the first event whose link or content does not verify."""
    expected_prev = GENESIS_HASH
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != expected_prev:
            return ChainBreak(event.pk, "prev_hash does not match the hash of the event before it")
        if event.compute_hash() != event.hash:
            return ChainBreak(event.pk, "content does not match its hash (the row was changed)")
        expected_prev = event.hash
    return None
