"""Moderation signals: what the offline pack's models say about one post (text and/or image), as evidence a
moderator can read and as the fixed-layout feature vectors a fusion head is trained on.

Image: OpenNSFW's score, NudeNet's body-part boxes, MTCNN's faces and RapidOCR's text. Text: the post's text followed
by the text read from its image, embedded with MiniLM and scored by the profanity baseline. Every entry of the image
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
    """The loaded models, one per role of ``SIGNAL_MODELS``."""

    sentence: Any
    profanity: Any
    nsfw: Any
    body_parts: Any
    faces: Any
    ocr: Any

    @classmethod
    def load(cls, *, device: str = "cpu", names: dict[str, str] | None = None) -> SignalModels:
        import ml

        chosen = {**SIGNAL_MODELS, **(names or {})}
        return cls(**{role: ml.load(name, device=device) for role, name in chosen.items()})

    @property
    def versions(self) -> dict[str, str]:
        """``role -> name@version`` of every model, recorded with each result."""
        return {role: model_version_of(getattr(self, role)) for role in SIGNAL_MODELS}

    @property
    def image_feature_names(self) -> tuple[str, ...]:
        return ("nsfw", *(f"body_part:{label}" for label in self.body_part_labels), *IMAGE_SUMMARY_FEATURES)

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
    images = [posts[index].image for index in with_image]
    evidence: dict[int, ImageEvidence] = {}
    if images:
        nsfw = models.nsfw.score(images)
        body_parts = models.body_parts.detect(images)
        faces = models.faces.detect(images)
        ocr = models.ocr.read(images)
        for position, index in enumerate(with_image):
            evidence[index] = ImageEvidence(
                nsfw=float(nsfw[position]), body_parts=body_parts[position], faces=faces[position], ocr=ocr[position]
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
    ]
    return np.asarray(values, dtype=np.float32)
