"""Detectors and scorers of the offline pack: real models that PyPI packages ship inside their wheels.

Each module holds one family (see ``ml.loader.FAMILIES``); heavy packages are imported in constructors only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.specs import ModelSpec

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One detected region: ``box`` is (x0, y0, x1, y1) in the original image's pixels."""

    label: str
    score: float
    box: Box


def weight_file(path: Path, spec: ModelSpec, role: str) -> Path:
    """The weight file playing ``role`` in ``spec`` (its ``files`` entry), inside the verified source ``path``."""
    files = spec.extra.get("files") or {}
    if role not in files:
        raise ValueError(f"model {spec.name!r}: its spec names no {role!r} file under 'files'")
    file = path / files[role]
    if not file.is_file():
        raise FileNotFoundError(f"model {spec.name!r}: {role} weights {files[role]!r} are not in {path}")
    return file


def onnx_providers(device: str) -> list[Any]:
    """ONNX Runtime providers for ``device``: CUDA (with its device id) when asked for and available, else CPU."""
    import onnxruntime

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            _, _, index = device.partition(":")
            return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
        logger.warning("device %s asked for, but onnxruntime has no CUDA provider here; running on CPU", device)
    return ["CPUExecutionProvider"]


def onnx_session(model: Path | bytes, device: str) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on ``device`` for a model file, or for a serialised graph (``bytes``)."""
    import onnxruntime

    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, providers=onnx_providers(device))
