"""The moderation app's adapter to the ML core: a post's text and image bytes in, scores with evidence out.

The signal models (the offline pack) are loaded once per worker process; the moderation model (``ml.tasks.
moderation_model``: n-grams, fusion head, detector fallbacks) is the registered version the caller names (the
champion when the job was queued). With no model the result carries the evidence and no scores, and says so: every
category then goes to human review.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import ml
from apps.registry.models import ModelVersion
from ml.detectors import Detection
from ml.explain.occlusion import occlusion_map
from ml.explain.render import draw_boxes, overlay, png_bytes
from ml.images import open_image
from ml.specs import ModelSpec
from ml.tasks.moderation import Post, PostSignals, SignalModels, extract_signals
from ml.tasks.moderation_model import ModerationScores

# Above this OpenNSFW score (Yahoo's "safe below 0.2") the score is explained by an occlusion map of the image.
NSFW_EXPLAIN_ABOVE = 0.2
OCCLUSION_GRID = (7, 7)

_models: SignalModels | None = None
_models_lock = threading.Lock()


@dataclass(frozen=True)
class EvidencePicture:
    kind: str  # "boxes" or "heatmap"
    label: str
    png: bytes


@dataclass(frozen=True)
class ScoredPost:
    scores: dict[str, float]  # calibrated probability per category the model scores; empty without a model
    evidence: dict[str, Any]  # JSON-ready
    pictures: list[EvidencePicture]
    model_versions: dict[str, str]  # role -> name@version, the fusion head included
    timings: dict[str, float] = field(default_factory=dict)


def signal_models() -> SignalModels:
    global _models
    with _models_lock:
        if _models is None:
            _models = SignalModels.load()
        return _models


def score_post(*, text: str, image: bytes | None, fusion: ModelVersion | None) -> ScoredPost:
    (scored,) = score_posts([(text, image)], fusion=fusion)
    return scored


def score_posts(posts: Sequence[tuple[str, bytes | None]], *, fusion: ModelVersion | None) -> list[ScoredPost]:
    """Score (text, image bytes) posts together: each signal model and the fusion head see them in one batch.
    Timings are the batch's, shared by its posts."""
    started = time.perf_counter()
    pictures = [open_image(image) if image is not None else None for _, image in posts]
    models = signal_models()
    signals = extract_signals(
        models, [Post(text=text, image=picture) for (text, _), picture in zip(posts, pictures, strict=True)]
    )
    timings = {"signals_s": round(time.perf_counter() - started, 4)}
    fused: list[ModerationScores] | None = None
    thresholds: dict[str, float] = {}
    fusion_label = ""
    if fusion is not None:
        fusion_started = time.perf_counter()
        model = ml.load(fusion.name, spec=ModelSpec.from_dict(fusion.spec))
        model.check_layout(models.image_feature_names, models.text_dim)
        fused = model.predict(model.project(signals, models.image_feature_names))
        thresholds, fusion_label = model.thresholds, fusion.label
        timings["fusion_s"] = round(time.perf_counter() - fusion_started, 4)
    results = []
    for index, (post_signals, picture) in enumerate(zip(signals, pictures, strict=True)):
        post_started = time.perf_counter()
        post_timings = dict(timings)
        evidence = _evidence(post_signals)
        versions = dict(post_signals.model_versions)
        scores: dict[str, float] = {}
        if fused is None:
            evidence["fusion"] = {"available": False, "note": "no moderation model is champion: a human decides"}
        else:
            scored = fused[index]
            scores = {category: round(score, 6) for category, score in scored.scores.items()}
            evidence["fusion"] = {
                "available": True,
                "thresholds": thresholds,
                "sources": scored.sources,
                "not_scored": scored.not_scored,
                **scored.explanation,
            }
            versions["fusion"] = fusion_label
        rendered = _render(picture, post_signals, evidence, post_timings, models) if picture is not None else []
        post_timings["evidence_s"] = round(time.perf_counter() - post_started, 4)
        post_timings["total_s"] = round(time.perf_counter() - started, 4)
        results.append(
            ScoredPost(
                scores=scores, evidence=evidence, pictures=rendered, model_versions=versions, timings=post_timings
            )
        )
    return results


def _render(
    picture: Image.Image,
    signals: PostSignals,
    evidence: dict[str, Any],
    timings: dict[str, float],
    models: SignalModels,
) -> list[EvidencePicture]:
    """The image's evidence pictures: its detections drawn, and an occlusion heatmap when the NSFW score is worth
    explaining (its map also goes into ``evidence``, its time into ``timings``)."""
    if signals.image is None:
        return []
    rendered = []
    boxes = [*signals.image.body_parts, *signals.image.faces]
    if boxes:
        rendered.append(EvidencePicture("boxes", "detections", png_bytes(draw_boxes(picture, boxes))))
    if signals.image.nsfw >= NSFW_EXPLAIN_ABOVE:
        explain_started = time.perf_counter()
        _, heatmap = occlusion_map(
            models.nsfw.score,
            picture,
            grid=OCCLUSION_GRID,
            label="adult_content: OpenNSFW score drop when covered",
            model_version=signals.model_versions["nsfw"],
        )
        evidence["image"]["nsfw_heatmap"] = heatmap.to_dict()
        rendered.append(EvidencePicture("heatmap", "nsfw", png_bytes(overlay(picture, heatmap, colour_bar=True))))
        timings["nsfw_heatmap_s"] = round(time.perf_counter() - explain_started, 4)
    return rendered


def _evidence(signals: PostSignals) -> dict[str, Any]:
    evidence: dict[str, Any] = {"text": signals.text, "profanity": signals.profanity}
    if signals.image is not None:
        evidence["image"] = {
            "nsfw": round(signals.image.nsfw, 6),
            "body_parts": [_detection(d) for d in signals.image.body_parts],
            "faces": [_detection(d) for d in signals.image.faces],
            "ocr_text": signals.image.ocr.text,
            **({"zero_shot": signals.image.zero_shot} if signals.image.zero_shot else {}),
            "ocr_lines": [
                {"text": line.text, "score": round(line.score, 4), "box": [round(v, 1) for v in line.box]}
                for line in signals.image.ocr.lines
            ],
        }
    return evidence


def _detection(detection: Detection) -> dict[str, Any]:
    return {
        "label": detection.label,
        "score": round(detection.score, 4),
        "box": [round(value, 1) for value in detection.box],
    }
