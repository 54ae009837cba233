from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import ml
from ml.sources import ChecksumMismatch, ModelNotInstalled, sha256_path, verify_checksum
from ml.specs import ModelSpec, UnknownSpec, list_specs, load_spec

ML_DIR = Path(ml.__file__).parent
FORBIDDEN = ("django", "rest_framework", "celery")


def test_ml_never_imports_django_drf_or_celery() -> None:
    offenders = []
    for path in ML_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders


def test_unknown_spec_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSpec, match=r"known specs: .*minilm-l6-v2"):
        load_spec("nope")
    assert "minilm-l6-v2" in list_specs()


def test_checksum_of_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.bin").write_bytes(b"abc")
    before = sha256_path(tmp_path / "w")
    (tmp_path / "w" / "a.bin").write_bytes(b"abd")
    assert sha256_path(tmp_path / "w") != before
    spec = ModelSpec(name="t", version="1", family="x", source=f"file:{tmp_path / 'w'}", sha256=before)
    with pytest.raises(ChecksumMismatch, match="the spec says"):
        verify_checksum(spec)


def test_missing_weights_name_the_spec_and_the_install_command(tmp_path: Path) -> None:
    spec = ModelSpec(name="clip", version="1", family="open_clip", source="open_clip:ViT-B-32/laion", sha256="0")
    with pytest.raises(ModelNotInstalled, match=r"manage\.py models pull clip"):
        ml.load("clip", spec=spec)


def test_packaged_minilm_embeds_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = ml.load("minilm-l6-v2")
    assert ml.load("minilm-l6-v2") is encoder, "loaded once per process"
    done: list[int] = []
    vectors = encoder.encode_texts(
        ["a red dress", "a crimson evening gown", "income tax return"],
        batch_size=2,
        on_progress=lambda d, t: done.append(d),
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert done == [2, 3]
