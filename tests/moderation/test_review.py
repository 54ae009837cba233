"""The review queue: leases (never two moderators on one item), decisions as training labels, escalation."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.moderation.models import Category, ContentItem, ReviewReason, ReviewTask
from apps.moderation.services import (
    ReviewNotAllowed,
    moderation_item_submit,
    review_task_decide,
    review_task_next,
)
from tests.moderation.test_scoring import finish_scoring

pytestmark = pytest.mark.django_db(transaction=True)


def queued(text: str) -> ContentItem:
    """An item routed to review (no fusion head: every category unscored)."""
    return finish_scoring(moderation_item_submit(text=text, actor=None), {})


def test_two_moderators_asking_at_once_get_different_items(minilm_champion, make_user) -> None:
    first, second = queued("one"), queued("two")
    alice, bob = make_user("moderator", username="alice"), make_user("moderator", username="bob")
    alice_has_the_row = threading.Event()
    bob_done = threading.Event()
    got: dict[str, object] = {}

    def alice_leasing() -> None:
        """Alice's request in the middle of leasing the oldest task: its row locked, nothing committed yet."""
        try:
            with transaction.atomic():
                ReviewTask.objects.select_for_update().get(item=first)
                alice_has_the_row.set()
                # Were rows not skipped when locked, bob would wait on this one and alice would wait here in vain.
                got["bob_was_blocked"] = not bob_done.wait(15)
        finally:
            connection.close()

    def bob_asks() -> None:
        try:
            alice_has_the_row.wait(30)
            task = review_task_next(reviewer=bob)
            got["bob"] = task.item_id if task else None
        finally:
            bob_done.set()
            connection.close()

    threads = [threading.Thread(target=alice_leasing), threading.Thread(target=bob_asks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert got == {"bob_was_blocked": False, "bob": second.pk}
    alice_task = review_task_next(reviewer=alice)
    assert alice_task is not None and alice_task.item_id == first.pk
    again = review_task_next(reviewer=alice)
    assert again is not None and again.pk == alice_task.pk, "asking again returns the task you hold"


def test_an_expired_lease_returns_the_task_to_the_queue(minilm_champion, make_user) -> None:
    item = queued("one")
    alice, bob = make_user("moderator", username="alice"), make_user("moderator", username="bob")
    task = review_task_next(reviewer=alice)
    assert task is not None and review_task_next(reviewer=bob) is None

    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    taken_over = review_task_next(reviewer=bob)
    assert taken_over is not None and taken_over.pk == task.pk and taken_over.item_id == item.pk
    with pytest.raises(ReviewNotAllowed):
        review_task_decide(task=task, reviewer=alice, decision="approve")


def test_decisions_become_labels_for_every_active_category(minilm_champion, make_user) -> None:
    spam_item, fine_item = queued("buy now"), queued("nice photo")
    alice = make_user("moderator", username="alice")
    categories = sorted(Category.objects.values_list("slug", flat=True))

    removed = review_task_decide(
        task=review_task_next(reviewer=alice),  # type: ignore[arg-type]
        reviewer=alice,
        decision="remove",
        reason="link farm",
        violated=["spam"],
        seconds_spent=12.5,
    )
    approved = review_task_decide(task=review_task_next(reviewer=alice), reviewer=alice, decision="approve")  # type: ignore[arg-type]

    assert removed.labels == {slug: int(slug == "spam") for slug in categories}
    assert approved.labels == dict.fromkeys(categories, 0)
    spam_item.refresh_from_db()
    fine_item.refresh_from_db()
    assert (spam_item.status, spam_item.decision, spam_item.decided_by) == ("decided", "remove", alice)
    assert (fine_item.status, fine_item.decision, fine_item.decided_automatically) == ("decided", "approve", False)
    event = AuditEvent.objects.filter(action="moderation.review_decide", target_id=str(spam_item.pk)).get()
    assert event.payload["violated"] == ["spam"] and event.payload["seconds_spent"] == 12.5


def test_a_removal_must_name_what_it_violates(minilm_champion, make_user) -> None:
    queued("one")
    alice = make_user("moderator", username="alice")
    task = review_task_next(reviewer=alice)
    assert task is not None
    with pytest.raises(ValueError, match="which categories"):
        review_task_decide(task=task, reviewer=alice, decision="remove")
    with pytest.raises(ValueError, match="unknown categories"):
        review_task_decide(task=task, reviewer=alice, decision="remove", violated=["rudeness"])
    with pytest.raises(ValueError, match="decision must be one of"):
        review_task_decide(task=task, reviewer=alice, decision="delete")
    assert ReviewTask.objects.get(pk=task.pk).status == "open", "a refused decision changes nothing"


def test_escalation_moves_the_item_to_the_escalation_queue(minilm_champion, make_user) -> None:
    item = queued("borderline")
    alice, senior = make_user("moderator", username="alice"), make_user("moderator", username="senior")
    review_task_decide(task=review_task_next(reviewer=alice), reviewer=alice, decision="escalate", reason="unsure")  # type: ignore[arg-type]

    item.refresh_from_db()
    assert item.status == "in_review" and item.decision == ""
    assert review_task_next(reviewer=senior) is None, "the default queue is empty now"
    escalated = review_task_next(reviewer=senior, queue="escalated")
    assert escalated is not None and escalated.item_id == item.pk and escalated.reason == ReviewReason.ESCALATION


def test_a_reviewer_reverses_an_automatic_decision_from_the_audit_sample(minilm_champion, make_user) -> None:
    from apps.moderation.services import policy_create

    for category in Category.objects.all():
        policy_create(category=category, allow_below=0.5, block_above=0.9, audit_sample_rate=1.0, actor=None)
    scores = dict.fromkeys(Category.objects.values_list("slug", flat=True), 0.1)
    item = finish_scoring(moderation_item_submit(text="sneaky ad", actor=None), scores)
    assert (item.decision, item.decided_automatically) == ("approve", True)
    alice = make_user("moderator", username="alice")

    review_task_decide(task=review_task_next(reviewer=alice), reviewer=alice, decision="remove", violated=["spam"])  # type: ignore[arg-type]

    item.refresh_from_db()
    assert (item.decision, item.decided_automatically) == ("remove", False)
    event = AuditEvent.objects.get(action="moderation.review_decide", target_id=str(item.pk))
    assert event.payload["previous"] == {"decision": "approve", "automatic": True}
