"""Moderation signals: what the offline pack's models say about one post (text and/or image), as evidence a
moderator can read and as the fixed-layout feature vectors a fusion head is trained on.

Image: OpenNSFW's score, NudeNet's body-part boxes, MTCNN's faces and RapidOCR's text; with the full pack's CLIP
installed, also zero-shot scores per category (how much more the image looks like the category's prompts than like
an ordinary photo). Text: the post's text followed by the text read from its image, embedded with MiniLM and scored
by the profanity baseline. Every entry of the image
feature vector has a name (``SignalModels.image_feature_names``), recorded with a trained head so that a head is
never fed another layout than the one it learnt.

No model decides anything here: the trained fusion head (``ml.fusion``) turns the features into per-category
probabilities, and the domain app routes them by policy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ml.detectors import Detection
from ml.detectors.ocr import OcrResult
from ml.explain.maps import model_version_of

logger = logging.getLogger(__name__)

# The spec names each role loads by default; an app may pass others (a newer version, the full pack's).
SIGNAL_MODELS: dict[str, str] = {
    "sentence": "minilm-l6-v2",
    "profanity": "profanity-check",
    "nsfw": "open-nsfw",
    "body_parts": "nudenet",
    "faces": "mtcnn",
    "ocr": "rapidocr",
}
# Loaded when installed (the full pack); without them the signals are the offline pack's alone.
OPTIONAL_SIGNAL_MODELS: dict[str, str] = {"clip": "clip-vit-b-32-laion2b"}
# CLIP zero-shot prompts per category, each against the ordinary-photo prompts. A category added later without
# prompts here gets no zero-shot feature (its head still reads every other signal).
ZERO_SHOT_PROMPTS: dict[str, tuple[str, ...]] = {
    "violence": ("a photo of violence", "a photo of a fight", "a photo of a weapon", "a photo of blood and injuries"),
    "adult_content": ("a nude photo", "an explicit sexual photo", "a photo of a naked person"),
    "hate_speech": ("a hate symbol", "a racist meme", "a photo of an extremist rally"),
    "harassment": ("an insulting meme about a person", "a photo mocking someone"),
    "spam": ("an advertisement", "a promotional flyer with a phone number", "a screenshot of a prize scam"),
    "misinformation": ("a fake news screenshot", "a misleading meme about a miracle cure"),
}
ORDINARY_PROMPTS = (
    "an ordinary photo",
    "a photo of everyday life",
    "a photo of a landscape",
    "a photo of food",
    "a photo of a pet",
)
# The image feature vector: the NSFW score, the best score of each of the body-part detector's labels (read from its
# spec, so the layout follows the model version), then these.
IMAGE_SUMMARY_FEATURES = (
    "faces",  # log(1 + count)
    "face_score",  # the most confident face
    "ocr_text",  # 1 when text was read
    "ocr_chars",  # log(1 + characters read) / 10
)
# Texts are cut here before embedding: MiniLM reads 256 word pieces at most, and a post's first words carry it.
MAX_TEXT_CHARS = 2_000


@dataclass(frozen=True)
class Post:
    """One item to score: text, an image, or both (the image already opened through ``ml.images.open_image``)."""

    text: str = ""
    image: Image.Image | None = None


@dataclass(frozen=True)
class ImageEvidence:
    nsfw: float
    body_parts: list[Detection]
    faces: list[Detection]
    ocr: OcrResult
    zero_shot: dict[str, float] = field(default_factory=dict)  # category -> P(category vs ordinary); full pack only


@dataclass(frozen=True)
class PostSignals:
    """Evidence and features of one post. ``text`` is what the text models read (post text, then OCR text)."""

    text: str
    image: ImageEvidence | None
    text_features: np.ndarray | None  # [text_dim]: MiniLM embedding then the profanity score; None without text
    image_features: np.ndarray | None  # [len(image_feature_names)]; None without an image
    profanity: float | None
    model_versions: dict[str, str] = field(default_factory=dict)


@dataclass
class SignalModels:
    """The loaded models, one per role of ``SIGNAL_MODELS``, and those of ``OPTIONAL_SIGNAL_MODELS`` that are
    installed (``None`` otherwise)."""

    sentence: Any
    profanity: Any
    nsfw: Any
    body_parts: Any
    faces: Any
    ocr: Any
    clip: Any | None = None
    _zero_shot_classes: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def load(cls, *, device: str = "cpu", names: dict[str, str] | None = None) -> SignalModels:
        """``names`` overrides a role's spec name; an optional role named there must load, one left to its default
        is skipped when its weights are not installed."""
        import ml
        from ml.sources import ModelNotInstalled

        names = names or {}
        models = {role: ml.load(names.get(role, default), device=device) for role, default in SIGNAL_MODELS.items()}
        for role, default in OPTIONAL_SIGNAL_MODELS.items():
            try:
                models[role] = ml.load(names.get(role, default), device=device)
            except ModelNotInstalled as error:
                if role in names:
                    raise
                logger.info("optional signal model %s is not installed: %s", role, error)
        return cls(**models)

    @property
    def versions(self) -> dict[str, str]:
        """``role -> name@version`` of every loaded model, recorded with each result."""
        roles = [*SIGNAL_MODELS, *(role for role in OPTIONAL_SIGNAL_MODELS if getattr(self, role) is not None)]
        return {role: model_version_of(getattr(self, role)) for role in roles}

    @property
    def image_feature_names(self) -> tuple[str, ...]:
        zero_shot = tuple(f"clip:{name}" for name in ZERO_SHOT_PROMPTS) if self.clip is not None else ()
        body_parts = tuple(f"body_part:{label}" for label in self.body_part_labels)
        return ("nsfw", *body_parts, *IMAGE_SUMMARY_FEATURES, *zero_shot)

    def zero_shot(self, images: Sequence[Image.Image]) -> list[dict[str, float]]:
        """Per image and category of ``ZERO_SHOT_PROMPTS``: the softmax probability of the category's prompt
        ensemble against the ordinary-photo ensemble (CLIP's logit scale); empty dicts without CLIP."""
        if self.clip is None:
            return [{} for _ in images]
        from ml.encoders.base import l2_normalise
        from ml.tasks.zero_shot import DEFAULT_LOGIT_SCALE, probabilities, prompt_ensembles

        if self._zero_shot_classes is None:
            self._zero_shot_classes = prompt_ensembles(self.clip, [*ZERO_SHOT_PROMPTS.values(), ORDINARY_PROMPTS])
        similarity = l2_normalise(np.asarray(self.clip.encode_images(list(images)))) @ self._zero_shot_classes.T
        scale = float(getattr(self.clip, "logit_scale", None) or DEFAULT_LOGIT_SCALE)
        # Each category against the ordinary photos: a two-way softmax per category.
        pairs = np.stack([similarity[:, :-1], np.repeat(similarity[:, -1:], len(ZERO_SHOT_PROMPTS), axis=1)], axis=-1)
        scores = probabilities(pairs, scale)[..., 0]
        return [{name: float(row[i]) for i, name in enumerate(ZERO_SHOT_PROMPTS)} for row in scores]

    @property
    def body_part_labels(self) -> tuple[str, ...]:
        return tuple(self.body_parts.spec.labels)

    @property
    def text_dim(self) -> int:
        """MiniLM's embedding, then the profanity score."""
        return int(self.sentence.dim) + 1


def extract_signals(models: SignalModels, posts: Sequence[Post]) -> list[PostSignals]:
    """Every post's evidence and features; images and texts each go through their models in one batch."""
    with_image = [index for index, post in enumerate(posts) if post.image is not None]
    images = [image for image in (post.image for post in posts) if image is not None]
    evidence: dict[int, ImageEvidence] = {}
    if images:
        nsfw = models.nsfw.score(images)
        body_parts = models.body_parts.detect(images)
        faces = models.faces.detect(images)
        ocr = models.ocr.read(images)
        zero_shot = models.zero_shot(images)
        for position, index in enumerate(with_image):
            evidence[index] = ImageEvidence(
                nsfw=float(nsfw[position]),
                body_parts=body_parts[position],
                faces=faces[position],
                ocr=ocr[position],
                zero_shot=zero_shot[position],
            )
    texts = [
        combined_text(post.text, evidence[index].ocr.text if index in evidence else "")
        for index, post in enumerate(posts)
    ]
    with_text = [index for index, text in enumerate(texts) if text.strip()]
    text_features: dict[int, np.ndarray] = {}
    profanity: dict[int, float] = {}
    if with_text:
        batch = [texts[index][:MAX_TEXT_CHARS] for index in with_text]
        embeddings = models.sentence.encode_texts(batch)
        profane = models.profanity.score(batch)
        for position, index in enumerate(with_text):
            profanity[index] = float(profane[position])
            text_features[index] = np.concatenate([embeddings[position], [profane[position]]]).astype(np.float32)
    versions, labels = models.versions, models.body_part_labels
    return [
        PostSignals(
            text=texts[index],
            image=evidence.get(index),
            text_features=text_features.get(index),
            image_features=image_feature_vector(evidence[index], labels) if index in evidence else None,
            profanity=profanity.get(index),
            model_versions=versions,
        )
        for index in range(len(posts))
    ]


def combined_text(text: str, ocr_text: str) -> str:
    """The post's text, then what was read in its image (a meme's caption is part of what it says)."""
    return "\n".join(part for part in (text.strip(), ocr_text.strip()) if part)


def image_feature_vector(evidence: ImageEvidence, body_part_labels: Sequence[str]) -> np.ndarray:
    """float32 [len(image_feature_names)], in that order."""
    best = dict.fromkeys(body_part_labels, 0.0)
    for detection in evidence.body_parts:
        if detection.label in best:
            best[detection.label] = max(best[detection.label], detection.score)
    text = evidence.ocr.text or ""
    values = [
        evidence.nsfw,
        *best.values(),
        math.log1p(len(evidence.faces)),
        max((face.score for face in evidence.faces), default=0.0),
        1.0 if text.strip() else 0.0,
        math.log1p(len(text)) / 10,
        *evidence.zero_shot.values(),
    ]
    return np.asarray(values, dtype=np.float32)
