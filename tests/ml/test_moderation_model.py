"""The moderation model on hand-made signals: what it scores, what it refuses to guess, and how it saves."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

import ml
from apps.moderation.demo_corpus import hateful, ordinary, spam
from ml.tasks.moderation import PostSignals
from ml.tasks.moderation_model import (
    LabelledSignals,
    LayoutMismatch,
    ModerationTrainingConfig,
    _standardisation,
    save_moderation_model,
    source_balanced,
    train_moderation_model,
)

CATEGORIES = ["adult_content", "hate_speech", "spam"]
IMAGE_FEATURES = ["nsfw", "faces"]
TEXT_DIM = 8


def _signals(text: str, kind: int, rng: np.random.Generator, image: list[float] | None = None) -> PostSignals:
    features = rng.normal(0, 0.8, TEXT_DIM).astype(np.float32)
    features[kind] += 2.0  # the "embedding" knows what the text is about
    return PostSignals(
        text=text,
        image=None,
        text_features=features if text else None,
        image_features=None if image is None else np.asarray(image, dtype=np.float32),
        profanity=0.0,
    )


def _posts(images: bool = False) -> list[LabelledSignals]:
    """Two single-category sources, as the shipped datasets are: tweets labelled for hate speech only, texts
    labelled for spam only; with ``images``, image-only posts labelled for adult content."""
    rng, draw = np.random.default_rng(0), random.Random(0)
    posts = []
    for _ in range(80):
        posts.append(LabelledSignals(_signals(hateful(draw), 0, rng), {"hate_speech": 1}, "tweets"))
        posts.append(LabelledSignals(_signals(ordinary(draw), 1, rng), {"hate_speech": 0}, "tweets"))
        posts.append(LabelledSignals(_signals(spam(draw), 2, rng), {"spam": 1}, "sms"))
        posts.append(LabelledSignals(_signals(ordinary(draw), 1, rng), {"spam": 0}, "sms"))
        if images:
            explicit = draw.random() < 0.5
            nsfw = draw.uniform(0.6, 1.0) if explicit else draw.uniform(0.0, 0.4)
            picture = _signals("", 3, rng, [nsfw, 0.0])
            posts.append(LabelledSignals(picture, {"adult_content": int(explicit)}, "images", key=f"{len(posts)}"))
    return posts


def _train(posts: list[LabelledSignals]):
    return train_moderation_model(
        posts,
        categories=CATEGORIES,
        image_feature_names=IMAGE_FEATURES,
        text_signal_dim=TEXT_DIM,
        config=ModerationTrainingConfig(epochs=40, hidden=16),
    )


@pytest.fixture(scope="module")
def text_trained():
    return _train(_posts())


def test_a_text_trained_model_scores_text_and_leaves_images_to_the_detector(text_trained, tmp_path: Path) -> None:
    assert text_trained.reads_image is False and list(text_trained.fallbacks) == ["adult_content"]
    # The head reads the profanity score and the n-gram and tower logits (two per learnt category), no embedding.
    assert text_trained.tower is not None and text_trained.reads_embedding is False
    assert text_trained.standardisation["text_mean"].shape == (1 + 2 * 2,)
    assert text_trained.metrics["test"]["categories"]["hate_speech"]["f1"] > 0.9
    assert text_trained.metrics["test"]["categories"]["spam"]["f1"] > 0.9
    model = text_trained.model()
    rng, draw = np.random.default_rng(1), random.Random(1)

    hate, picture, meme = model.predict(
        [
            _signals(hateful(draw), 0, rng),
            _signals("", 3, rng, [0.93, 0.0]),
            _signals(spam(draw), 2, rng, [0.05, 0.0]),
        ]
    )

    assert hate.scores["hate_speech"] > 0.9
    assert hate.scores["spam"] < 0.1, "a tweet is presumed no spam: no source labelled tweets for spam"
    assert hate.not_scored == {"adult_content": pytest.approx(hate.not_scored["adult_content"])}
    assert "no image" in hate.not_scored["adult_content"]
    assert (
        picture.scores == {"adult_content": pytest.approx(0.93)} and picture.sources["adult_content"] == "detector:nsfw"
    )
    assert picture.decisions["adult_content"] is True  # OpenNSFW's 0.8
    assert set(picture.not_scored) == {"hate_speech", "spam"}, "no text, and the head never learnt from images"
    assert meme.scores["spam"] > 0.9 and meme.scores["adult_content"] == pytest.approx(0.05)
    assert meme.explanation["modality_attribution"] == {"image": 0.0, "text": 1.0}


def test_a_saved_model_loads_and_scores_the_same(text_trained, tmp_path: Path) -> None:
    spec = save_moderation_model(text_trained, tmp_path / "model", name="moderation-test", version="1")
    loaded = ml.load("moderation-test", spec=spec)
    rng = np.random.default_rng(2)
    posts = [_signals("you are vermin", 0, rng), _signals("", 3, rng, [0.5, 0.0])]

    assert [p.scores for p in loaded.predict(posts)] == [p.scores for p in text_trained.model().predict(posts)]
    assert spec.family == "moderation-model" and spec.labels == ["hate_speech", "spam", "adult_content"]
    loaded.check_layout(IMAGE_FEATURES, TEXT_DIM)
    with pytest.raises(LayoutMismatch, match="retrain"):
        loaded.check_layout(["nsfw", "new_detector"], TEXT_DIM)  # "faces" is gone
    with pytest.raises(LayoutMismatch, match="retrain"):
        loaded.check_layout(IMAGE_FEATURES, TEXT_DIM + 1)


def test_signals_with_an_extra_image_feature_are_projected_to_the_learnt_layout(text_trained) -> None:
    model = text_trained.model()
    rng = np.random.default_rng(3)
    post = _signals("", 3, rng, [0.5, 0.0])
    wider = dataclasses.replace(post, image_features=np.array([0.5, 0.9, 0.0], dtype=np.float32))
    names = ["nsfw", "clip:violence", "faces"]  # a model installed after training adds a feature in between

    model.check_layout(names, TEXT_DIM)
    (projected,) = model.project([wider], names)

    assert projected.image_features.tolist() == [0.5, 0.0]
    assert model.predict([projected])[0].scores == model.predict([post])[0].scores


def test_labelled_images_teach_the_head_to_read_them() -> None:
    trained = _train(_posts(images=True))

    assert trained.reads_image and "adult_content" not in trained.fallbacks
    rng = np.random.default_rng(3)
    explicit, benign = trained.model().predict([_signals("", 3, rng, [0.95, 0.0]), _signals("", 3, rng, [0.1, 0.0])])
    assert explicit.scores["adult_content"] > 0.8 > 0.2 > benign.scores["adult_content"]
    assert explicit.sources["adult_content"] == "fusion"
    assert explicit.explanation["modality_attribution"]["image"] == 1.0


def test_training_needs_a_category_with_enough_labels() -> None:
    rng = np.random.default_rng(0)
    few = [LabelledSignals(_signals("hello", 1, rng), {"spam": 0}, "sms") for _ in range(30)]
    with pytest.raises(ValueError, match="no category has enough labelled posts"):
        _train(few)


def test_source_balancing_weighs_a_source_of_n_posts_as_n_to_the_exponent() -> None:
    # Column 0: 100 tweets and 4 comments stated; column 1: the tweets stated, the comments presumed (weight 0.25).
    sources = ["tweets"] * 100 + ["comments"] * 4
    stated = np.zeros((104, 2), dtype=bool)
    stated[:, 0], stated[:100, 1] = True, True
    weight = np.where(stated, 1.0, 0.25).astype(np.float32)
    balanced = source_balanced(sources, stated, weight, exponent=0.5)
    tweets, comments = balanced[:100, 0].sum(), balanced[100:, 0].sum()
    assert tweets / comments == pytest.approx(np.sqrt(100) / np.sqrt(4))
    assert balanced[:, 0].sum() == pytest.approx(104)  # the category's total weight is kept
    np.testing.assert_allclose(balanced[:, 1], weight[:, 1])  # one stated source, and presumed labels, unchanged
    np.testing.assert_allclose(source_balanced(sources, stated, weight, exponent=1.0), weight)


def test_source_balancing_caps_what_a_tiny_source_gains() -> None:
    sources = ["tweets"] * 1000 + ["reviewed"]
    stated = np.ones((1001, 1), dtype=bool)
    balanced = source_balanced(sources, stated, np.ones((1001, 1), dtype=np.float32), exponent=0.5)
    assert balanced[1000, 0] / balanced[0, 0] == pytest.approx(10.0)  # sqrt(1000) ~ 31.6, capped


def test_source_experts_learn_each_sources_reading_and_whose_post_it_is(tmp_path: Path) -> None:
    # Two sources label hate speech; in the comments' convention, spam-like texts count too.
    rng, draw = np.random.default_rng(0), random.Random(0)
    posts = _posts()
    for _ in range(40):
        posts.append(LabelledSignals(_signals(f"in my view {spam(draw)}", 2, rng), {"hate_speech": 1}, "comments"))
        posts.append(LabelledSignals(_signals(f"in my view {ordinary(draw)}", 1, rng), {"hate_speech": 0}, "comments"))
    trained = train_moderation_model(
        posts,
        categories=CATEGORIES,
        image_feature_names=IMAGE_FEATURES,
        text_signal_dim=TEXT_DIM,
        config=ModerationTrainingConfig(epochs=40, hidden=16, source_experts=True),
    )
    readers = ["hate_speech", "spam", "hate_speech@comments", "hate_speech@tweets", "source:comments", "source:tweets"]
    assert trained.ngrams.categories == readers and trained.tower is not None and trained.tower.categories == readers
    assert trained.head.categories == ["hate_speech", "spam"]
    logits = dict(zip(readers, trained.ngrams.logits([f"in my view {spam(draw)}", hateful(draw)]).T, strict=True))
    assert logits["source:comments"][0] > logits["source:comments"][1]
    assert logits["hate_speech@comments"][0] > logits["hate_speech@tweets"][0]  # spam is hate in comments only

    spec = save_moderation_model(trained, tmp_path / "model", name="moderation-test", version="1")
    signals = [_signals(f"in my view {spam(draw)}", 2, rng), _signals(hateful(draw), 0, rng)]
    loaded = ml.load("moderation-test", spec=spec).predict(signals)
    assert [p.scores for p in loaded] == [p.scores for p in trained.model().predict(signals)]
    assert set(loaded[0].scores) == {"hate_speech", "spam"}


def test_a_feature_constant_in_training_reads_as_zero_on_new_posts() -> None:
    # A reader column that was 0 for every training post (a category a fold could not learn) must not be blown up
    # on new posts, where the reader trained on all the posts gives it values.
    rng = np.random.default_rng(0)
    posts = [LabelledSignals(_signals("hello", 1, rng), {"spam": 0}, "sms") for _ in range(20)]
    logits = np.stack([rng.normal(size=20), np.zeros(20)], axis=1).astype(np.float32)
    moments = _standardisation(posts, logits, len(IMAGE_FEATURES), TEXT_DIM, reads_embedding=False)
    new = (np.array([0.0, 0.5, 3.0]) - moments["text_mean"]) / moments["text_std"]
    assert np.isfinite(moments["text_std"][:2]).all() and new[2] == 0.0
