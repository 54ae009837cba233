from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent, AuditLogIsAppendOnly
from apps.audit.selectors import audit_chain_first_break
from apps.audit.services import GENESIS_HASH, audit_record

pytestmark = pytest.mark.django_db


def _record(n: int) -> list[AuditEvent]:
    events = []
    for i in range(n):
        with transaction.atomic():
            events.append(audit_record(actor=None, action="test.event", target_type="t", target_id=i, payload={"i": i}))
    return events


def test_events_chain_to_each_other() -> None:
    first, second, third = _record(3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert audit_chain_first_break() is None
    call_command("audit_verify")


@pytest.mark.django_db(transaction=True)
def test_audit_record_refuses_to_run_outside_a_transaction() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(actor=None, action="x")


def test_orm_refuses_update_and_delete() -> None:
    (event,) = _record(1)
    event.action = "changed"
    with pytest.raises(AuditLogIsAppendOnly):
        event.save()
    with pytest.raises(AuditLogIsAppendOnly):
        event.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="changed")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.all().delete()


def test_database_refuses_update_and_delete() -> None:
    (event,) = _record(1)
    for sql in ("UPDATE audit_auditevent SET action = 'x' WHERE id = %s", "DELETE FROM audit_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.pk])


def test_raw_sql_change_makes_audit_verify_fail_and_name_the_row() -> None:
    events = _record(5)
    tampered = events[2]
    with connection.cursor() as cursor:
        # An attacker with superuser rights can switch the guard off; the hash chain still gives them away.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute("UPDATE audit_auditevent SET payload = '{\"i\": 99}' WHERE id = %s", [tampered.pk])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
    with pytest.raises(CommandError, match=rf"event id={tampered.pk}: content does not match"):
        call_command("audit_verify")


def test_deleted_row_breaks_the_next_link() -> None:
    events = _record(4)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
    broken = audit_chain_first_break()
    assert broken is not None and broken.event_id == events[2].pk and "prev_hash" in broken.reason


def test_audit_api_filters_and_verifies(client_for) -> None:
    _record(3)
    client = client_for(Role.AUDITOR)
    with transaction.atomic():
        audit_record(actor=None, action="other.thing", target_type="t", target_id="x")
    body = client.get("/api/v1/audit/events", {"action": "test."}).json()
    assert body["count"] == 3 and {e["action"] for e in body["results"]} == {"test.event"}
    assert client.get("/api/v1/audit/events", {"target_id": "x"}).json()["count"] == 1
    assert client.get("/api/v1/audit/events", {"since": "not a date"}).status_code == 400
    assert client.get("/api/v1/audit/verify").json() == {"ok": True, "first_broken_event_id": None, "reason": None}


def test_audit_browser_page_filters_and_shows_chain_state(client_for) -> None:
    _record(2)
    client = client_for(Role.AUDITOR)
    page = client.get("/audit/", {"action": "test.", "verify": "1"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Chain intact" in html and html.count("<code>test.event</code>") == 2
