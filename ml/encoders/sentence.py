"""sentence-transformers text encoders (the packaged MiniLM)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ml.specs import ModelSpec


class SentenceEncoder:
    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        max_length = spec.preprocessing.get("max_seq_length")
        if max_length:
            self.model.max_seq_length = int(max_length)
        self.dim = int(self.model.get_embedding_dimension() or 0)

    def encode_texts(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """L2-normalised float32 embeddings, shape [N, D]; ``on_progress(done, total)`` after each batch."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            chunks.append(
                self.model.encode(
                    batch,
                    batch_size=batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            )
            if on_progress is not None:
                on_progress(min(start + batch_size, len(texts)), len(texts))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)
