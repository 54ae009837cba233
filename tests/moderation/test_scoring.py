"""Submitting posts, scoring them on a real worker with the offline pack, and routing the scores by policy."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from apps.audit.models import AuditEvent
from apps.jobs.kinds import JobOutcome
from apps.jobs.models import InferenceJob, JobStatus
from apps.jobs.services import _jobs_finish, job_start
from apps.moderation.models import (
    Category,
    ContentItem,
    EvidenceImage,
    ItemStatus,
    ModerationResult,
    ReviewReason,
    ReviewTask,
)
from apps.moderation.services import (
    FUSION_MODEL_NAME,
    ModerationInputError,
    moderation_item_submit,
    policy_create,
)
from apps.registry.services import model_version_promote, model_version_register
from ml.images import MAX_PIXELS
from tests.conftest import wait_for
from tests.ml.test_moderation_signals import poster as poster_image


def finish_scoring(
    item: ContentItem, scores: dict[str, float] | None, error: str = "", evidence: dict[str, Any] | None = None
) -> ContentItem:
    """Finish the item's job as a worker would (the job's finishing transaction runs the kind's hook), with these
    scores (and evidence) in place of what ``score_post`` would return, or this error."""
    job = job_start(job_id=str(item.job_id))
    assert job is not None
    result: dict[str, Any] = {
        "scores": scores,
        "evidence": evidence or {},
        "pictures": [],
        "model_versions": {},
        "timings": {},
    }
    assert _jobs_finish([JobOutcome(job=job, result=None if error else result, error=error)]) == {job.pk}
    item.refresh_from_db()
    return item


def poster(words: str) -> bytes:
    """``tests.ml.test_moderation_signals.poster`` as the PNG bytes an integrator uploads."""
    buffer = io.BytesIO()
    poster_image(words).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_post_is_scored_on_a_worker_and_without_a_fusion_head_goes_to_review(
    minilm_champion, start_worker, make_user
) -> None:
    start_worker()
    author = make_user("moderator")

    item = moderation_item_submit(text="click here", image=poster("FREE MONEY"), author_ref="u-17", actor=author)
    wait_for(lambda: ContentItem.objects.get(pk=item.pk).status != ItemStatus.SCORING, 120, "scoring")

    item.refresh_from_db()
    assert item.job is not None
    assert item.status == ItemStatus.IN_REVIEW, item.job.error
    result = ModerationResult.objects.get(item=item)
    assert result.scores == {} and result.fusion_model is None
    assert result.evidence["fusion"]["available"] is False
    assert "FREE MONEY" in result.evidence["image"]["ocr_text"].upper()
    assert result.evidence["text"].startswith("click here\n")
    assert set(result.model_versions) == {"sentence", "profanity", "nsfw", "body_parts", "faces", "ocr"}
    assert all(entry["route"] == "review" and entry["score"] is None for entry in result.routes.values())
    assert set(result.routes) == set(Category.objects.values_list("slug", flat=True))
    task = ReviewTask.objects.get(item=item)
    assert task.reason == ReviewReason.NO_MODEL and task.status == "open"
    assert item.job is not None and item.job.status == JobStatus.SUCCEEDED
    actions = list(AuditEvent.objects.filter(target_id=str(item.pk)).order_by("id").values_list("action", flat=True))
    assert actions == ["moderation.item_submit", "moderation.item_route"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_backlog_is_scored_in_batches_and_a_worker_killed_mid_batch_loses_no_post(
    minilm_champion, start_worker, make_user
) -> None:
    author = make_user("moderator")
    # Posters with words, so each post costs OCR: a batch of them takes seconds, long enough to be killed in.
    items = [moderation_item_submit(image=poster(f"POST {n} WORDS"), actor=author) for n in range(12)]
    first = start_worker()
    jobs = InferenceJob.objects.filter(pk__in=[item.job_id for item in items])
    wait_for(lambda: jobs.filter(status=JobStatus.RUNNING).count() > 1, 120, "a batch to be claimed")
    first.kill()
    claimed = set(jobs.filter(status=JobStatus.RUNNING).values_list("pk", flat=True))

    start_worker()
    # Unacknowledged messages come back after the visibility timeout (35 s), and claimed jobs after their lease (30 s).
    wait_for(lambda: not jobs.exclude(status=JobStatus.SUCCEEDED).exists(), 300, "every post to be scored")

    for item in items:
        assert ModerationResult.objects.filter(item=item).count() == 1, "each post scored and stored once"
        item.refresh_from_db()
        assert item.status != ItemStatus.SCORING
    for job in jobs:
        succeeded = AuditEvent.objects.filter(target_id=str(job.pk), action="job.succeed").count()
        assert succeeded == 1 and job.attempts == (2 if job.pk in claimed else 1)
    assert AuditEvent.objects.filter(action="job.start", payload__has_key="batched_with").count() >= len(claimed) - 1


@pytest.mark.django_db(transaction=True)
def test_scores_are_routed_by_the_policy_in_force(minilm_champion) -> None:
    spam = Category.objects.get(slug="spam")
    policy_create(category=spam, allow_below=0.3, block_above=0.8, audit_sample_rate=0.0, actor=None)
    for category in Category.objects.exclude(slug="spam"):
        policy_create(category=category, allow_below=0.5, block_above=0.99, audit_sample_rate=0.0, actor=None)

    def scored(scores: dict[str, float]) -> ContentItem:
        return finish_scoring(moderation_item_submit(text=f"post {scores}", actor=None), scores)

    calm = dict.fromkeys(Category.objects.values_list("slug", flat=True), 0.01)
    approved = scored(calm)
    assert (approved.status, approved.decision, approved.decided_automatically) == ("decided", "approve", True)
    removed = scored({**calm, "spam": 0.93})
    assert (removed.status, removed.decision) == ("decided", "remove")
    assert ModerationResult.objects.get(item=removed).routes["spam"]["policy"]["version"] == 2
    uncertain = scored({**calm, "spam": 0.5})
    assert uncertain.status == "in_review" and ReviewTask.objects.get(item=uncertain).reason == "uncertain"
    missing = scored({slug: score for slug, score in calm.items() if slug != "violence"})
    assert missing.status == "in_review", "a category the head does not score goes to a human"
    assert not ReviewTask.objects.filter(item__in=[approved, removed]).exists()


@pytest.mark.django_db(transaction=True)
def test_a_category_the_champion_does_not_score_neither_approves_nor_holds_the_post(minilm_champion) -> None:
    spec = {"name": FUSION_MODEL_NAME, "version": "1", "family": "moderation-model", "source": "file:/x", "sha256": "0"}
    model_version_promote(version=model_version_register(spec=spec, actor=None), actor=None)
    for category in Category.objects.all():
        policy_create(category=category, allow_below=0.5, block_above=0.9, audit_sample_rate=0.0, actor=None)
    calm = {slug: 0.01 for slug in Category.objects.values_list("slug", flat=True) if slug != "adult_content"}

    item = finish_scoring(moderation_item_submit(text="hello", actor=None), calm)

    result = ModerationResult.objects.get(item=item)
    assert result.fusion_model is not None and result.routes["adult_content"]["route"] == "not_scored"
    assert "not trained" in result.routes["adult_content"]["why"]
    assert (item.status, item.decision) == ("decided", "approve")


@pytest.mark.django_db(transaction=True)
def test_every_automatic_decision_is_sampled_at_rate_one(minilm_champion) -> None:
    for category in Category.objects.all():
        policy_create(category=category, allow_below=0.5, block_above=0.9, audit_sample_rate=1.0, actor=None)
    scores = dict.fromkeys(Category.objects.values_list("slug", flat=True), 0.0)
    item = finish_scoring(moderation_item_submit(text="hello", actor=None), scores)
    assert item.decision == "approve"
    assert ReviewTask.objects.get(item=item).reason == ReviewReason.AUDIT_SAMPLE


@pytest.mark.django_db(transaction=True)
def test_a_failed_scoring_marks_the_item_failed(minilm_champion) -> None:
    item = finish_scoring(moderation_item_submit(text="hello", actor=None), None, "RuntimeError: boom")
    assert item.status == ItemStatus.FAILED
    assert not ModerationResult.objects.filter(item=item).exists() and not EvidenceImage.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "image", "code"),
    [
        ("", None, "empty_item"),
        ("   ", None, "empty_item"),
        ("x" * 20_001, None, "text_too_long"),
        ("hi", b"not an image at all", "image_undecodable"),
        ("hi", poster("cut")[:200], "image_undecodable"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(minilm_champion, text: str, image: bytes | None, code: str) -> None:
    with pytest.raises(ModerationInputError) as refused:
        moderation_item_submit(text=text, image=image, actor=None)
    assert refused.value.code == code
    assert not ContentItem.objects.exists() and not InferenceJob.objects.exists()


@pytest.mark.django_db
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(minilm_champion) -> None:
    side = int(MAX_PIXELS**0.5) + 10
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")  # a few KB on disk, 40+ megapixels decoded
    with pytest.raises(ModerationInputError) as refused:
        moderation_item_submit(image=buffer.getvalue(), actor=None)
    assert refused.value.code == "image_too_large"
    assert not ContentItem.objects.exists()


def test_an_image_score_worth_explaining_gets_an_occlusion_heatmap(monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.moderation import inference

    monkeypatch.setattr(inference, "NSFW_EXPLAIN_ABOVE", 0.0)  # no test image of ours scores high, and none should

    scored = inference.score_post(text="", image=poster("HELLO"), fusion=None)

    heatmap = scored.evidence["image"]["nsfw_heatmap"]
    assert heatmap["kind"] == "occlusion" and heatmap["grid"] == [7, 7]
    assert heatmap["model_version"] == scored.model_versions["nsfw"]
    (picture,) = [p for p in scored.pictures if p.kind == "heatmap"]
    rendered = Image.open(io.BytesIO(picture.png))
    assert rendered.format == "PNG" and rendered.height == 240 and rendered.width > 640  # the image plus a colour bar
    assert "nsfw_heatmap_s" in scored.timings


def test_an_ordinary_image_is_not_explained() -> None:
    from apps.moderation import inference

    scored = inference.score_post(text="", image=poster("HELLO"), fusion=None)

    assert scored.evidence["image"]["nsfw"] < inference.NSFW_EXPLAIN_ABOVE
    assert "nsfw_heatmap" not in scored.evidence["image"] and not scored.pictures


def test_posts_scored_together_get_what_each_gets_alone() -> None:
    from apps.moderation import inference

    posts = [("you absolute idiot", None), ("", poster("FREE MONEY")), ("lunch with friends", poster("HELLO"))]

    together = inference.score_posts(posts, fusion=None)
    alone = [inference.score_post(text=text, image=image, fusion=None) for text, image in posts]

    for batched, single in zip(together, alone, strict=True):
        assert batched.evidence["text"] == single.evidence["text"]
        assert batched.evidence["profanity"] == pytest.approx(single.evidence["profanity"], abs=1e-6)
        if "image" in single.evidence:
            assert batched.evidence["image"]["ocr_text"] == single.evidence["image"]["ocr_text"]
            assert batched.evidence["image"]["nsfw"] == pytest.approx(single.evidence["image"]["nsfw"], abs=1e-4)
        assert batched.model_versions == single.model_versions
    assert "image" not in together[0].evidence and together[1].evidence["image"]["ocr_text"] == "FREE MONEY"
