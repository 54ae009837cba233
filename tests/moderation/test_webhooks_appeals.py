"""Webhooks on final decisions (signed, retried with backoff, logged) and appeals to a second moderator."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from apps.moderation.models import Appeal, Category, ContentItem, DeliveryStatus, ItemStatus, WebhookDelivery
from apps.moderation.services import (
    SIGNATURE_HEADER,
    AppealNotAllowed,
    appeal_submit,
    moderation_item_submit,
    review_task_decide,
    review_task_next,
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_signature,
)
from tests.conftest import wait_for
from tests.moderation.test_scoring import finish_scoring

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver:
    """A loopback HTTP server that answers ``fail_first`` requests with 500, then 200, and keeps what it got."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[Any, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.headers, body))  # header names are case-insensitive
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/moderation"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def removing_scores(category: str = "spam") -> dict[str, float]:
    scores = dict.fromkeys(Category.objects.values_list("slug", flat=True), 0.01)
    return {**scores, category: 0.999}


def verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.mark.worker
def test_submit_score_review_decide_and_the_webhook_arrives_signed(
    minilm_champion, start_worker, make_user, receiver
) -> None:
    start_worker()
    integrator, moderator = make_user("moderator", username="integrator"), make_user("moderator", username="mod")
    endpoint = webhook_endpoint_create(owner=integrator, url=receiver.url)

    item = moderation_item_submit(text="win a prize, click now", author_ref="u-3", actor=integrator)
    wait_for(lambda: ContentItem.objects.get(pk=item.pk).status == ItemStatus.IN_REVIEW, 120, "scored and routed")
    task = review_task_next(reviewer=moderator)
    assert task is not None and task.item_id == item.pk
    review_task_decide(task=task, reviewer=moderator, decision="remove", violated=["spam"], reason="scam")
    wait_for(lambda: len(receiver.received) == 1, 60, "the webhook")

    headers, body = receiver.received[0]
    assert verify(endpoint.secret, headers[SIGNATURE_HEADER], body)
    assert not verify("whsec_someone_else", headers[SIGNATURE_HEADER], body)
    payload = json.loads(body)
    assert payload["event"] == "item.decided" and payload["item_id"] == str(item.pk)
    assert (payload["decision"], payload["automatic"], payload["author_ref"]) == ("remove", False, "u-3")
    wait_for(lambda: WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED, 30, "the delivery log")
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts == 1 and delivery.log[0]["status"] == 200


def test_a_failing_receiver_is_retried_with_backoff_then_marked_failed(
    minilm_champion, make_user, settings, receiver
) -> None:
    settings.VLP_WEBHOOK_MAX_ATTEMPTS, settings.VLP_WEBHOOK_BACKOFF_SECONDS = 3, 2.0
    receiver.fail_first = 99
    integrator = make_user("moderator", username="integrator")
    webhook_endpoint_create(owner=integrator, url=receiver.url)
    item = finish_scoring(moderation_item_submit(text="win a prize", actor=integrator), removing_scores())
    delivery = WebhookDelivery.objects.get(item=item)

    waits = [webhook_delivery_attempt(delivery_id=delivery.pk) for _ in range(3)]

    assert waits == [2.0, 4.0, None]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 3
    assert [entry["status"] for entry in delivery.log] == [500, 500, 500]
    item.refresh_from_db()
    assert item.decision == "remove", "a failed webhook leaves the decision as it was"
    assert webhook_delivery_attempt(delivery_id=delivery.pk) is None and len(receiver.received) == 3


def test_an_unreachable_receiver_is_logged_and_retried(minilm_champion, make_user) -> None:
    integrator = make_user("moderator", username="integrator")
    webhook_endpoint_create(owner=integrator, url="http://127.0.0.1:9/nothing-listens-here")
    item = finish_scoring(moderation_item_submit(text="win a prize", actor=integrator), removing_scores())
    delivery = WebhookDelivery.objects.get(item=item)

    assert webhook_delivery_attempt(delivery_id=delivery.pk) is not None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and "error" in delivery.log[0]


def test_the_signature_is_an_hmac_of_timestamp_and_body() -> None:
    body = b'{"event":"item.decided"}'
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook_signature("whsec_x", 1700000000, body) == f"t=1700000000,v1={expected}"


def test_an_appeal_goes_to_a_second_moderator(minilm_champion, make_user) -> None:
    alice, bob = make_user("moderator", username="alice"), make_user("moderator", username="bob")
    item = finish_scoring(moderation_item_submit(text="my art", author_ref="u-9", actor=None), {})
    first = review_task_next(reviewer=alice)
    assert first is not None
    review_task_decide(task=first, reviewer=alice, decision="remove", violated=["adult_content"])
    item.refresh_from_db()

    appeal = appeal_submit(item=item, statement="it is a painting in a museum", actor=None)

    assert review_task_next(reviewer=alice, queue="appeals") is None, "the moderator who decided cannot hear it"
    task = review_task_next(reviewer=bob, queue="appeals")
    assert task is not None and task.pk == appeal.task_id
    review_task_decide(task=task, reviewer=bob, decision="approve", reason="art, not explicit")
    appeal.refresh_from_db()
    item.refresh_from_db()
    assert appeal.status == "overturned" and appeal.decision_appealed == "remove"
    assert (item.decision, item.decided_by) == ("approve", bob)


def test_an_appeal_needs_a_decided_item_and_only_one_at_a_time(minilm_champion, make_user) -> None:
    undecided = finish_scoring(moderation_item_submit(text="pending", actor=None), {})
    with pytest.raises(AppealNotAllowed, match="only decided items"):
        appeal_submit(item=undecided, statement="please", actor=None)
    decided = finish_scoring(moderation_item_submit(text="ad", actor=None), removing_scores())
    appeal_submit(item=decided, statement="not an ad", actor=None)
    with pytest.raises(AppealNotAllowed, match="already has an open appeal"):
        appeal_submit(item=decided, statement="again", actor=None)
    with pytest.raises(AppealNotAllowed, match="say why"):
        appeal_submit(item=decided, statement="  ", actor=None)
    assert Appeal.objects.count() == 1
