"""Packs: every shipped spec belongs to one; the offline pack loads with no network at all."""

from __future__ import annotations

from typing import Any

import pytest

import ml
from ml.sources import ModelNotInstalled
from ml.specs import PACKS, list_specs, load_spec

# What a caller uses of each offline family: one method that must exist on the loaded model.
INTERFACE = {
    "sentence-transformers": "encode_texts",
    "onnx-open-nsfw": "score",
    "onnx-nudenet": "detect",
    "mtcnn": "detect",
    "rapidocr": "read",
    "profanity": "score",
}


def test_every_shipped_spec_names_its_pack() -> None:
    assert {name: load_spec(name).extra.get("pack") for name in list_specs()} == {
        name: pack for pack in PACKS for name in list_specs(pack=pack)
    }
    assert set(list_specs(pack="offline")) >= {"minilm-l6-v2", "open-nsfw", "nudenet", "mtcnn", "rapidocr"}


@pytest.mark.parametrize("name", list_specs(pack="offline"))
def test_offline_pack_model_loads_without_network(name: str, no_network: None) -> None:
    spec = load_spec(name)
    model = ml.load(name)
    assert callable(getattr(model, INTERFACE[spec.family]))


@pytest.mark.parametrize("name", list_specs(pack="full"))
def test_full_pack_model_without_weights_says_how_to_install(
    name: str, no_network: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLP_MODEL_CACHE", str(tmp_path))
    with pytest.raises(ModelNotInstalled, match=rf"manage\.py models pull {name}"):
        ml.load(name)
