"""Zero-shot classification, exact retrieval, captioning/VQA and OCR text: the task layer over the models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ml
from ml import tiny
from ml.encoders.base import l2_normalise
from ml.tasks.captioning import NO_CAPTIONER_REASON, caption_or_explain
from ml.tasks.ocr import read_texts
from ml.tasks.retrieval import CatalogIndex, search_texts_to_images, top_k
from ml.tasks.zero_shot import DEFAULT_LOGIT_SCALE, build_classifier, classify, probabilities

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
# Each template pushes its prompt's embedding along the red axis, one forwards and one backwards.
TEMPLATE_BIAS = {"a warm photo of a {}.": 0.5, "a cold photo of a {}.": -0.5}


class ColourEncoder:
    """A deterministic stand-in for CLIP: an image is its mean RGB; a prompt is its colour word plus its template's
    red bias. Both L2-normalised, as the encoder contract requires."""

    dim = 3

    def __init__(self, logit_scale: float | None = 10.0) -> None:
        if logit_scale is not None:
            self.logit_scale = logit_scale
        self.prompts: list[str] = []

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        means = [np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for image in images]
        return l2_normalise(np.array(means).reshape(-1, 3))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.prompts += texts
        vectors = []
        for text in texts:
            colour = next(name for name in COLOURS if name in text)
            bias = next((b for template, b in TEMPLATE_BIAS.items() if text.startswith(template[:10])), 0.0)
            vectors.append(np.array(COLOURS[colour]) + np.array([bias, 0.0, 0.0]))
        return l2_normalise(np.array(vectors, dtype=np.float32))


def solid(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), rgb)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- zero-shot ------------------------------------------------------------------------------------------------------
def test_prompt_ensemble_averages_normalised_prompt_embeddings() -> None:
    encoder = ColourEncoder()
    labels = ["red", "green", "blue"]
    classifier = build_classifier(encoder, labels, list(TEMPLATE_BIAS))

    assert encoder.prompts[:2] == ["a warm photo of a red.", "a cold photo of a red."]
    warm_green = l2_normalise(np.array([[0.5, 1.0, 0.0]]))[0]
    cold_green = l2_normalise(np.array([[-0.5, 1.0, 0.0]]))[0]
    expected_green = l2_normalise(((warm_green + cold_green) / 2)[None])[0]
    assert np.allclose(classifier[1], expected_green, atol=1e-6)
    assert np.allclose(classifier, np.eye(3), atol=1e-6), "opposite biases cancel in the ensemble"
    assert np.allclose(np.linalg.norm(classifier, axis=1), 1, atol=1e-6)


def test_zero_shot_picks_the_colour_and_the_ensemble_beats_one_biased_prompt() -> None:
    encoder = ColourEncoder(logit_scale=10.0)
    labels = ["red", "green", "blue"]
    images = [solid((250, 10, 10)), solid((10, 10, 240)), solid((255, 230, 0))]

    result = classify(encoder, images, labels, templates=list(TEMPLATE_BIAS))
    warm_only = classify(encoder, images, labels, templates=["a warm photo of a {}."])

    assert result.top_labels == ["red", "blue", "red"]
    # Orange-yellow is nearer red than green, but the warm prompt's bias drags green towards it.
    assert warm_only.top_labels[2] == "green"
    image_vectors = encoder.encode_images(images)
    expected = np.exp(10.0 * image_vectors @ np.eye(3))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(result.probabilities, expected, atol=1e-6)
    assert np.allclose(result.similarities, image_vectors, atol=1e-6)
    assert np.allclose(result.top_probabilities, expected.max(axis=1), atol=1e-6)


def test_zero_shot_without_a_learnt_scale_uses_100_and_accepts_a_cached_classifier() -> None:
    encoder = ColourEncoder(logit_scale=None)
    labels = ["red", "green", "blue"]
    classifier = build_classifier(encoder, labels, list(TEMPLATE_BIAS))
    prompts_seen = len(encoder.prompts)
    result = classify(encoder, [solid((200, 100, 0))], labels, classifier=classifier)
    assert len(encoder.prompts) == prompts_seen, "a cached classifier is not re-embedded"
    assert np.allclose(result.probabilities, probabilities(result.similarities, DEFAULT_LOGIT_SCALE))
    with pytest.raises(ValueError, match="2 classes for 3 labels"):
        classify(encoder, [solid((1, 2, 3))], labels, classifier=classifier[:2])


def test_zero_shot_on_a_tiny_random_clip(tmp_path: Path) -> None:
    spec = tiny.build_tiny_open_clip(tmp_path)
    encoder = ml.load(spec.name, spec=spec)
    labels = ["cat", "dog", "chest x-ray", "invoice"]
    result = classify(encoder, [solid((200, 30, 30)), solid((30, 30, 200))], labels)
    assert result.probabilities.shape == (2, 4) and result.similarities.shape == (2, 4)
    assert np.allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)
    assert all(label in labels for label in result.top_labels)
    assert np.allclose(result.probabilities, probabilities(result.similarities, encoder.logit_scale), atol=1e-6)


# --- retrieval ------------------------------------------------------------------------------------------------------
def test_top_k_matches_a_stable_brute_force_sort_including_ties() -> None:
    rng = np.random.default_rng(0)
    # Small integers make many exact ties, which must come out in index order.
    queries = rng.integers(-2, 3, size=(7, 5)).astype(np.float32)
    index = rng.integers(-2, 3, size=(60, 5)).astype(np.float32)
    scores = queries @ index.T
    for k in (1, 5, 60, 100):
        indices, top_scores = top_k(queries, index, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, 60)]
        assert np.array_equal(indices, expected)
        assert np.array_equal(top_scores, np.take_along_axis(scores, expected, axis=1))


def test_text_to_image_search_finds_the_named_colour() -> None:
    encoder = ColourEncoder()
    image_vectors = encoder.encode_images([solid((0, 0, 255)), solid((255, 0, 0)), solid((0, 255, 0))])
    indices, scores = search_texts_to_images(encoder, ["red", "blue"], image_vectors, k=2)
    assert indices[:, 0].tolist() == [1, 0]
    assert np.all(scores[:, 0] >= scores[:, 1])


def _unit(*rows: Sequence[float]) -> np.ndarray:
    return l2_normalise(np.array(rows, dtype=np.float32))


def test_the_index_pulls_back_an_image_that_sits_close_to_every_text() -> None:
    # Image 0 is a hub: near every text of the bank. Image 1 belongs to the query alone, a little less close.
    images = _unit([1, 1, 1], [0, 0, 1])
    bank = _unit([1, 0.9, 0.6], [0.9, 1, 0.6], [1, 1, 0.4], [0.6, 0.9, 1], [0, 0.3, 1])
    query = _unit([0.4, 0.4, 1])
    plain = CatalogIndex.build(images, logit_scale=10.0)
    index = CatalogIndex.build(images, logit_scale=10.0, bank=bank)

    assert plain.search_texts(query, 1)[0][0, 0] == 0, "plain cosine ranks the hub first"
    assert index.search_texts(query, 2)[0][0].tolist() == [1, 0]
    hubness = np.log(np.exp(10.0 * bank @ images.T).sum(axis=0)) / 10.0
    assert np.allclose(index.text_scores(query), query @ images.T - hubness, atol=1e-5)
    assert np.array_equal(plain.text_scores(query), query @ images.T)

    many = l2_normalise(np.random.default_rng(0).normal(size=(600, 3)).astype(np.float32))  # several chunks
    expected = np.log(np.exp(10.0 * (bank @ many.T).astype(np.float64)).sum(axis=0)) / 10.0
    assert np.allclose(CatalogIndex.build(many, logit_scale=10.0, bank=bank).hubness, expected, atol=1e-5)


def test_look_alike_attributes_break_a_tie_between_equally_close_images() -> None:
    # The query is exactly as close to image 0 as to image 1; only image 1 is of the query's colour.
    colour = _unit([1, 0, 0.5], [0, 1, -0.5])  # the attribute's two values: "red", "green"
    images = _unit([0, 1, 1], [1, 0, 1])
    query = _unit([0.5, 0.5, 1])
    scores = query @ images.T
    index = CatalogIndex.build(images, logit_scale=20.0, classifiers={"baseColour": colour})

    assert scores[0, 0] == pytest.approx(scores[0, 1]) and top_k(query, images, 2)[0][0].tolist() == [0, 1]
    agree = probabilities(query @ colour.T, 20.0) @ probabilities(images @ colour.T, 20.0).T
    assert index.search_images(query, 2)[0][0].tolist() == [1, 0]
    assert np.allclose(index.image_scores(query), scores + agree, atol=1e-5)
    assert np.array_equal(CatalogIndex.build(images).image_scores(query), scores)


# --- captioning and VQA ---------------------------------------------------------------------------------------------
def test_without_a_caption_model_there_is_an_explanation_not_text() -> None:
    result = caption_or_explain([solid((1, 2, 3))], None)
    assert result.texts is None and not result.available
    assert result.reason == NO_CAPTIONER_REASON
    assert "no text generator" in result.reason and "manage.py models pull blip-caption-base" in result.reason


def test_tiny_blip_captions_and_answers(tmp_path: Path) -> None:
    images = [solid((250, 0, 0)), solid((0, 0, 250)), solid((0, 250, 0))]
    captioner_spec = tiny.build_tiny_blip_caption(tmp_path / "caption")
    captioner = ml.load(captioner_spec.name, spec=captioner_spec)
    captions = captioner.caption(images, max_new_tokens=4, batch_size=2)
    assert len(captions) == 3 and all(isinstance(caption, str) for caption in captions)
    assert captioner.caption(images[:1], max_new_tokens=4) == captions[:1], "greedy decoding is deterministic"

    result = caption_or_explain(images[:2], captioner, max_new_tokens=3)
    assert result.available and result.texts is not None and len(result.texts) == 2
    assert result.model == f"{captioner_spec.name}@{captioner_spec.version}"

    vqa_spec = tiny.build_tiny_blip_vqa(tmp_path / "vqa")
    answerer = ml.load(vqa_spec.name, spec=vqa_spec)
    answers = answerer.answer(images, ["what colour is it?", "is it blue?", "how many?"], max_new_tokens=3)
    assert len(answers) == 3 and all(isinstance(answer, str) for answer in answers)
    with pytest.raises(ValueError, match="one question per image"):
        answerer.answer(images, ["only one question"])


# --- OCR text -------------------------------------------------------------------------------------------------------
@dataclass
class Read:
    text: str | None


class FakeReader:
    def read(self, images: Sequence[Image.Image]) -> list[Read]:
        return [Read("  BUY NOW  \n"), Read(None)][: len(images)]


def test_ocr_text_per_image() -> None:
    assert read_texts(FakeReader(), [solid((0, 0, 0)), solid((9, 9, 9))]) == ["BUY NOW", ""]
    with pytest.raises(ValueError, match="2 results for 3 images"):
        read_texts(FakeReader(), [solid((0, 0, 0))] * 3)
