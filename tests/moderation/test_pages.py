"""The review pages through Django's test client: who may see them, leasing from the queue, deciding, errors."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from apps.moderation.models import Category, ContentItem, ReviewTask
from apps.moderation.services import moderation_item_submit
from apps.moderation.views import _curve, highlight
from tests.moderation.test_scoring import finish_scoring

pytestmark = pytest.mark.django_db(transaction=True)


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def in_review(text: str) -> ContentItem:
    return finish_scoring(moderation_item_submit(text=text, actor=None), {})


def test_a_moderator_takes_the_next_task_decides_it_and_gets_the_next(minilm_champion, make_user) -> None:
    first, second = in_review("first post"), in_review("second post")
    client = client_of(make_user("moderator"))

    queue = client.get(reverse("moderation:queue"))
    assert queue.status_code == 200 and 'data-testid="queue-default-open">2<' in queue.content.decode()
    opened = client.post(reverse("moderation:next", args=["default"]))
    task = ReviewTask.objects.get(item=first)
    assert opened.status_code == 302 and opened["Location"] == reverse("moderation:task", args=[task.pk])
    page = client.get(opened["Location"]).content.decode()
    assert "first post" in page and 'data-testid="decide-form"' in page and 'data-testid="no-model"' in page

    refused = client.post(opened["Location"], {"decision": "remove", "reason": "x"})
    assert refused.status_code == 400 and "say which categories the post violates" in refused.content.decode()
    decided = client.post(opened["Location"], {"decision": "remove", "violated": ["spam"], "seconds_spent": "4.5"})
    assert decided["Location"] == reverse("moderation:task", args=[ReviewTask.objects.get(item=second).pk])
    task.refresh_from_db()
    assert task.decision == "remove" and task.seconds_spent == 4.5 and task.labels["spam"] == 1

    item_page = client.get(reverse("moderation:item", args=[first.pk])).content.decode()
    assert "moderation.review_decide" in item_page and "moderation.item_submit" in item_page


def test_the_item_page_lists_clip_zero_shot_scores_when_the_full_pack_gave_them(minilm_champion, make_user) -> None:
    evidence = {"image": {"nsfw": 0.02, "body_parts": [], "faces": [], "zero_shot": {"violence": 0.81, "spam": 0.07}}}
    item = finish_scoring(moderation_item_submit(text="a post", actor=None), {}, evidence=evidence)

    page = client_of(make_user("moderator")).get(reverse("moderation:item", args=[item.pk])).content.decode()

    assert 'data-testid="zero-shot"' in page and "Violence 0.81" in page and "Spam 0.07" in page


def test_someone_elses_task_shows_no_decision_form(minilm_champion, make_user) -> None:
    in_review("a post")
    client_of(make_user("moderator", username="ann")).post(reverse("moderation:next", args=["default"]))
    task = ReviewTask.objects.get()
    other = client_of(make_user("moderator", username="ben"))

    page = other.get(reverse("moderation:task", args=[task.pk])).content.decode()

    assert "held by ann" in page and "decide-form" not in page
    refused = other.post(reverse("moderation:task", args=[task.pk]), {"decision": "approve"})
    assert refused.status_code == 400 and "not leased to you" in refused.content.decode()


def test_the_dashboard_counts_queues_and_draws_curves_from_reviewed_items(minilm_champion, make_user) -> None:
    moderator = make_user("moderator")
    client = client_of(moderator)
    for number, spam_score in enumerate([0.9, 0.8, 0.3, 0.1]):
        scores = dict.fromkeys(Category.objects.values_list("slug", flat=True), 0.5) | {"spam": spam_score}
        item = finish_scoring(moderation_item_submit(text=f"post {number}", actor=None), scores)
        assert item.status == "in_review"
    for number in range(4):
        client.post(reverse("moderation:next", args=["default"]))
        task = ReviewTask.objects.get(status="open", leased_to=moderator)
        violated = ["spam"] if number in (0, 2) else []
        client.post(
            reverse("moderation:task", args=[task.pk]),
            {"decision": "remove" if violated else "approve", "violated": violated},
        )

    page = client_of(make_user("ml_admin")).get(reverse("moderation:dashboard")).content.decode()

    assert 'data-testid="curve-spam"' in page and "4 reviewed, 2 violating" in page
    assert page.count("<polyline") == 1  # only spam has violating and clean reviewed items
    pending = page[page.index("No curve yet") :]
    assert '<span data-testid="curve-violence"><strong>Violence</strong> 4 reviewed, 0 violating' in pending
    assert 'data-testid="dash-default">0<' in page


def test_matching_terms_are_marked_case_insensitively_and_whole_words_only() -> None:
    assert highlight("Win a PRIZE, winner", ["prize", "win"]) == [
        ("Win", True),
        (" a ", False),
        ("PRIZE", True),
        (", winner", False),
    ]
    assert highlight("", ["x"]) == [] and highlight("plain", []) == [("plain", False)]


def test_a_curve_starts_at_full_precision_so_a_perfect_ranking_runs_along_the_top() -> None:
    curve = _curve("spam", [0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])

    assert curve["points"].split() == ["0.0,0.0", "110.0,0.0", "220.0,0.0", "220.0,73.3", "220.0,110.0"]
    # the top post is clean: precision 0 at recall 0, then 1/2 at recall 1/2, 2/3 and 1/2 at recall 1
    stepped = _curve("spam", [0.9, 0.8, 0.3, 0.1], [0, 1, 1, 0])["points"].split()
    assert stepped == ["0.0,0.0", "0.0,220.0", "0.0,110.0", "110.0,110.0", "110.0,73.3", "220.0,73.3", "220.0,110.0"]
    assert _curve("spam", [0.9, 0.1], [0, 0])["points"] == ""  # no violating item: no curve
