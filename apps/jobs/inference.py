"""The jobs app's adapter to the ML core: plain inputs in, plain results out.

Encoder calls go through one ``BatchRunner`` per model version and process, so texts of jobs that run at the same
time (a threads pool, or several requests in one process) share forward passes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import ml
from apps.registry.models import ModelVersion
from ml.batching import BatchRunner
from ml.specs import ModelSpec

TEXT_BATCH_SIZE = 32
MAX_WAIT_MS = 5
_runners: dict[tuple[str, str, str], BatchRunner[str, np.ndarray]] = {}
_runners_lock = threading.Lock()


@dataclass(frozen=True)
class TextEmbeddings:
    dim: int
    vectors: list[list[float]]


def _text_runner(model_version: ModelVersion) -> BatchRunner[str, np.ndarray]:
    key = (model_version.name, model_version.version, model_version.sha256)
    with _runners_lock:
        if key not in _runners:
            encoder = ml.load(model_version.name, spec=ModelSpec.from_dict(model_version.spec))
            _runners[key] = BatchRunner(
                lambda texts: list(encoder.encode_texts(texts, batch_size=TEXT_BATCH_SIZE)),
                max_batch_size=TEXT_BATCH_SIZE,
                max_wait_ms=MAX_WAIT_MS,
                name=f"{model_version.label} texts",
            )
        return _runners[key]


def embed_texts(
    *, model_version: ModelVersion, texts: list[str], on_progress: Callable[[int, int], None]
) -> TextEmbeddings:
    runner = _text_runner(model_version)
    futures = [runner.submit(text) for text in texts]
    vectors = []
    for done, future in enumerate(futures, start=1):
        vectors.append(future.result())
        if done % TEXT_BATCH_SIZE == 0 or done == len(futures):
            on_progress(done, len(futures))
    stacked = np.stack(vectors).astype(np.float32)
    return TextEmbeddings(dim=int(stacked.shape[1]), vectors=stacked.round(6).tolist())
