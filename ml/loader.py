"""``ml.load(name)``: one factory for every model; lazy, cached once per process, checksum-verified."""

from __future__ import annotations

import threading
from typing import Any

from ml.sources import verify_checksum
from ml.specs import ModelSpec, load_spec

_cache: dict[tuple[str, str, str], Any] = {}
_lock = threading.Lock()


def load(name: str, *, device: str = "cpu", spec: ModelSpec | None = None) -> Any:
    """Load model ``name`` (or the given ``spec``) on ``device``, once per process."""
    spec = spec or load_spec(name)
    key = (spec.name, spec.version, device)
    with _lock:
        if key not in _cache:
            path = verify_checksum(spec)
            _cache[key] = _build(spec, path, device)
        return _cache[key]


def _build(spec: ModelSpec, path: Any, device: str) -> Any:
    if spec.family == "sentence-transformers":
        from ml.encoders.sentence import SentenceEncoder

        return SentenceEncoder(path, spec=spec, device=device)
    raise ValueError(f"model {spec.name!r} has family {spec.family!r}, which no loader handles")
