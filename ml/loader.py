"""``ml.load(name)``: one factory for every model; lazy, cached once per process, checksum-verified."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

from ml.sources import verify_checksum
from ml.specs import ModelSpec, load_spec

# family -> "module:callable"; the callable is ``builder(path, *, spec, device)`` and returns the loaded model.
# Modules are imported only when a model of that family is loaded (no loading at import).
FAMILIES: dict[str, str] = {
    "sentence-transformers": "ml.encoders.sentence:SentenceEncoder",
    "open_clip": "ml.encoders.clip:OpenClipEncoder",
    "hf-clip": "ml.encoders.clip:HfClipEncoder",
    "hf-siglip": "ml.encoders.clip:HfSiglipEncoder",
    "hf-blip-caption": "ml.tasks.captioning:BlipCaptioner",
    "hf-blip-vqa": "ml.tasks.captioning:BlipQuestionAnswerer",
    "lit-image-tower": "ml.lit.model:LitEncoder",
    "fusion-head": "ml.fusion.heads:load_head",
    "moderation-model": "ml.tasks.moderation_model:load_moderation_model",
    "onnx-open-nsfw": "ml.detectors.nsfw:OpenNsfwScorer",
    "onnx-nudenet": "ml.detectors.nudenet:NudeNetDetector",
    "mtcnn": "ml.detectors.faces:FaceDetector",
    "rapidocr": "ml.detectors.ocr:TextReader",
    "profanity": "ml.detectors.profanity:ProfanityScorer",
}

_cache: dict[tuple[str, str, str, str], Any] = {}
# Reentrant: a model may load its own parts (a LiT tower loads its text tower) while being built.
_lock = threading.RLock()


def load(name: str, *, device: str = "cpu", spec: ModelSpec | None = None) -> Any:
    """Load model ``name`` (or the given ``spec``) on ``device``, once per process."""
    spec = spec or load_spec(name)
    # The hash is part of the key: a spec that names the same version with other weights is checked, not served.
    key = (spec.name, spec.version, spec.sha256, device)
    with _lock:
        if key not in _cache:
            path = verify_checksum(spec)
            _cache[key] = build(spec, path, device)
        return _cache[key]


def build(spec: ModelSpec, path: Path, device: str = "cpu") -> Any:
    """Construct ``spec``'s model from weights already at ``path`` (no cache, no checksum)."""
    target = FAMILIES.get(spec.family)
    if target is None:
        raise ValueError(
            f"model {spec.name!r} has family {spec.family!r}, which no loader handles; "
            f"known families: {', '.join(sorted(FAMILIES))}"
        )
    module_name, _, attribute = target.partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    return builder(path, spec=spec, device=device)
