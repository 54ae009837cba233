"""Moderation signals from the real offline pack: evidence and fixed-layout features per post."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import ml
from ml.tasks.moderation import ZERO_SHOT_PROMPTS, Post, SignalModels, combined_text, extract_signals
from ml.tiny import build_tiny_open_clip


@pytest.fixture(scope="module")
def models() -> SignalModels:
    return SignalModels.load()


def poster(words: str) -> Image.Image:
    image = Image.new("RGB", (640, 240), "white")
    ImageDraw.Draw(image).text((30, 80), words, fill="black", font=ImageFont.load_default(size=64))
    return image


def test_each_kind_of_post_gets_the_signals_it_has(models: SignalModels) -> None:
    posts = [Post(text="have a lovely day"), Post(image=poster("FREE MONEY")), Post(text="look", image=poster("WIN"))]

    text_only, image_only, both = extract_signals(models, posts)

    assert text_only.image is None and text_only.image_features is None
    assert text_only.text_features is not None and text_only.text_features.shape == (models.text_dim,)
    assert image_only.image is not None and "FREE MONEY" in image_only.image.ocr.text.upper()
    assert image_only.text == image_only.image.ocr.text  # the OCR'd words are what the text models read
    assert image_only.text_features is not None
    assert both.text.startswith("look\n") and "WIN" in both.text.upper()
    assert both.image_features is not None and both.image_features.shape == (len(models.image_feature_names),)
    names = models.image_feature_names
    assert both.image_features[names.index("ocr_text")] == 1.0
    assert 0.0 <= both.image_features[names.index("nsfw")] < 0.5  # black letters on white are not adult content
    assert set(both.model_versions) == {"sentence", "profanity", "nsfw", "body_parts", "faces", "ocr"}
    assert all("@" in label for label in both.model_versions.values())


def test_profanity_reads_the_words(models: SignalModels) -> None:
    polite, rude = extract_signals(models, [Post(text="thank you so much"), Post(text="you are a fucking idiot")])

    assert polite.profanity is not None and rude.profanity is not None
    assert rude.profanity > 0.5 > polite.profanity
    assert np.isclose(rude.text_features[-1], rude.profanity)  # type: ignore[index]


def test_a_post_with_nothing_readable_has_no_text_features(models: SignalModels) -> None:
    (blank,) = extract_signals(models, [Post(text="   ", image=Image.new("RGB", (64, 64), "grey"))])

    assert blank.text == "" and blank.text_features is None and blank.profanity is None
    assert blank.image_features is not None


def test_combined_text_keeps_the_post_first() -> None:
    assert combined_text("  caption ", "") == "caption"
    assert combined_text("", "read") == "read"
    assert combined_text("caption", "read") == "caption\nread"


def test_without_the_full_pack_there_is_no_clip_signal(models: SignalModels) -> None:
    assert models.clip is None  # clip-vit-b-32-laion2b is not installed here: skipped, not an error
    assert not [name for name in models.image_feature_names if name.startswith("clip:")]
    assert "clip" not in models.versions


def test_an_installed_clip_adds_zero_shot_scores_per_category(models: SignalModels, tmp_path: Path) -> None:
    spec = build_tiny_open_clip(tmp_path / "clip", name="tiny-open-clip")
    with_clip = dataclasses.replace(models, clip=ml.load(spec.name, spec=spec))

    (post,) = extract_signals(with_clip, [Post(text="look", image=poster("WIN"))])

    names = with_clip.image_feature_names
    assert names[: len(models.image_feature_names)] == models.image_feature_names  # the offline layout, then CLIP's
    assert names[len(models.image_feature_names) :] == tuple(f"clip:{name}" for name in ZERO_SHOT_PROMPTS)
    assert post.image is not None and set(post.image.zero_shot) == set(ZERO_SHOT_PROMPTS)
    assert all(0.0 < value < 1.0 for value in post.image.zero_shot.values())
    assert post.image_features is not None and post.image_features.shape == (len(names),)
    assert post.image_features[names.index("clip:spam")] == pytest.approx(post.image.zero_shot["spam"])
    assert with_clip.versions["clip"] == "tiny-open-clip@" + spec.version
