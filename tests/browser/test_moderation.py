"""A moderator in the browser: the queue, the evidence, deciding with the keyboard, and what follows (the signed
webhook, training data for the next model, the dashboard)."""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from playwright.sync_api import Page, expect

from apps.moderation.demo_corpus import write_corpus
from apps.moderation.models import Category, ContentItem, ItemStatus, ReviewTask
from apps.moderation.services import SIGNATURE_HEADER, moderation_item_submit, policy_create, webhook_endpoint_create
from apps.registry.models import ModelVersion
from tests.browser.test_pages import log_in
from tests.conftest import wait_for
from tests.moderation.test_scoring import poster
from tests.moderation.test_webhooks_appeals import Receiver, verify

pytestmark = [pytest.mark.browser, pytest.mark.worker]
# One tower epoch: these tests are about the pages, and the tower is the slowest part of a training.
QUICK_TRAINING = ("--tower-epochs", "1")


@pytest.fixture(autouse=True)
def default_categories(transactional_db: None) -> None:
    importlib.import_module("apps.moderation.migrations.0002_default_categories").create(apps, None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def test_a_moderator_reviews_with_the_keyboard_and_the_decision_goes_out_and_back_into_training(
    page: Page,
    make_user: Callable[..., User],
    minilm_champion,
    start_worker,
    receiver,
    shots: Path,
    settings,
    tmp_path,
) -> None:
    settings.VLP_VAR_DIR = tmp_path / "var"
    start_worker()
    integrator, moderator = make_user("moderator", username="integrator"), make_user("moderator", username="mia")
    endpoint = webhook_endpoint_create(owner=integrator, url=receiver.url)
    item = moderation_item_submit(text="best deal today", image=poster("WIN A PRIZE"), actor=integrator)
    wait_for(lambda: ContentItem.objects.get(pk=item.pk).status == ItemStatus.IN_REVIEW, 180, "scored and routed")

    log_in(page, moderator.username)
    page.wait_for_url(lambda url: urlsplit(url).path == reverse("moderation:queue"))
    expect(page.get_by_test_id("queue-default-open")).to_have_text("1")
    page.screenshot(path=str(shots / "moderation_queue.png"), full_page=True)
    page.get_by_test_id("take-default").click()

    expect(page.get_by_test_id("post-text")).to_have_text("best deal today")
    image = page.get_by_test_id("post-image")
    assert "shown" not in (image.get_attribute("class") or ""), "the image starts blurred"
    expect(page.get_by_test_id("ocr-text")).to_contain_text("PRIZE")
    expect(page.get_by_test_id("no-model")).to_be_visible()
    page.keyboard.press("b")
    expect(image).to_have_class("blurred shown")
    page.screenshot(path=str(shots / "moderation_review.png"), full_page=True)

    spam = sorted(Category.objects.filter(active=True).values_list("slug", flat=True)).index("spam") + 1
    page.keyboard.press(str(spam))
    page.get_by_label("Reason").fill("prize scam")
    page.locator("body").click(position={"x": 5, "y": 5})  # the shortcut is not typed into the reason box
    page.keyboard.press("r")
    expect(page.get_by_text("Decided: remove.")).to_be_visible()
    expect(page.get_by_text("The default queue is empty.")).to_be_visible()

    task = ReviewTask.objects.get(item=item)
    assert (task.decision, task.decision_reason, task.decided_by_id) == ("remove", "prize scam", moderator.pk)
    assert task.labels["spam"] == 1 and sum(task.labels.values()) == 1
    assert task.seconds_spent is not None and task.seconds_spent > 0
    wait_for(lambda: len(receiver.received) == 1, 60, "the webhook")
    headers, body = receiver.received[0]
    assert verify(endpoint.secret, headers[SIGNATURE_HEADER], body)

    out = io.StringIO()
    corpus = str(write_corpus(tmp_path / "corpus"))
    call_command("moderation_train", "--data", corpus, *QUICK_TRAINING, stdout=out, stderr=io.StringIO())
    trained = ModelVersion.objects.get(name="moderation-fusion")
    counted = trained.metrics["reviewed_items_trained_on"] + trained.metrics["promotion"]["holdout_items"]
    assert counted == 1, "the decision made in the page is training (or hold-out) data for the next model"

    page.goto(reverse("moderation:item", args=[item.pk]))
    expect(page.get_by_test_id("history")).to_contain_text("moderation.review_decide")
    expect(page.get_by_test_id("item-decision")).to_have_text("remove")
    page.screenshot(path=str(shots / "moderation_item.png"), full_page=True)


def test_scores_evidence_and_the_dashboard_with_a_trained_model(
    page: Page, make_user: Callable[..., User], start_worker, shots: Path, settings, tmp_path
) -> None:
    settings.VLP_VAR_DIR = tmp_path / "var"
    corpus = str(write_corpus(tmp_path / "corpus"))
    call_command("moderation_train", "--data", corpus, *QUICK_TRAINING, stdout=io.StringIO(), stderr=io.StringIO())
    for category in Category.objects.all():  # every score between the thresholds: a human looks at each post
        policy_create(category=category, allow_below=0.0, block_above=1.0, audit_sample_rate=0.0, actor=None)
    start_worker()
    moderator = make_user("moderator", username="mo")
    texts = ["WINNER! claim a free cruise now, text CLAIM to 80010", "I enjoyed the match with friends on day 3"]
    items = [moderation_item_submit(text=text, actor=moderator) for text in texts]
    wait_for(lambda: all(ContentItem.objects.get(pk=i.pk).status == ItemStatus.IN_REVIEW for i in items), 180, "scored")

    log_in(page, moderator.username)
    for expected_spam in (True, False):
        page.goto(reverse("moderation:queue"))
        page.get_by_test_id("take-default").click()
        expect(page.get_by_test_id("score-spam")).to_be_visible()
        spam_score = float(page.get_by_test_id("score-spam").locator("td.mono").inner_text())
        assert (spam_score > 0.5) == expected_spam, spam_score
        expect(page.get_by_test_id("attribution")).to_contain_text("text 100%")
        expect(page.get_by_test_id("attribution").locator("span.image")).to_have_count(0)  # no sliver for 0 %
        if expected_spam:
            expect(page.get_by_test_id("post-text").locator("mark").first).to_be_visible()
            page.screenshot(path=str(shots / "moderation_scores.png"), full_page=True)
            page.get_by_label("Spam").check()
            page.get_by_test_id("remove").click()
        else:
            page.get_by_test_id("approve").click()
        expect(page.get_by_text("Decided:")).to_be_visible()

    page.goto(reverse("moderation:dashboard"))
    expect(page.get_by_test_id("curve-spam")).to_contain_text("2 reviewed, 1 violating")
    expect(page.get_by_test_id("curve-spam").locator("polyline")).to_have_count(1)
    expect(page.get_by_test_id("decisions-per-day")).to_be_visible()
    page.screenshot(path=str(shots / "moderation_dashboard.png"), full_page=True)
