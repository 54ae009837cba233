"""The hashed n-gram classifier: it learns from labelled texts, reads misspellings, saves without pickle."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ml.tasks.ngrams import NgramClassifier


def _texts() -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = random.Random(0)
    spam = [f"claim your free prize now, text WIN to {rng.randint(1000, 9999)}" for _ in range(40)]
    chat = [f"see you at the {rng.choice(['park', 'match', 'cafe'])} at {rng.randint(1, 9)}" for _ in range(40)]
    labels = np.array([[1.0, 0.0]] * 40 + [[0.0, 0.0]] * 40, dtype=np.float32)
    known = np.ones_like(labels, dtype=bool)
    known[:, 1] = False  # nothing says anything about the second category
    return spam + chat, labels, known


def test_it_learns_a_category_and_leaves_an_unlabelled_one_at_zero(tmp_path: Path) -> None:
    texts, labels, known = _texts()
    model = NgramClassifier.fit(texts, labels, known, ["spam", "other"], bits=16)

    logits = model.logits(["FREE PRIZE!! text WIN now", "meet me at the park", "fr33 prize, txt WlN"])

    assert logits[0, 0] > 0 > logits[1, 0], "spam above zero, chat below"
    assert logits[2, 0] > logits[1, 0], "character n-grams still see a misspelt offer"
    assert np.all(model.coef[1] == 0) and np.all(logits[:, 1] == 0)
    assert model.top_terms("claim your free prize at the park", ["spam"])["spam"][:1] in (
        ["prize"],
        ["free"],
        ["claim"],
    )

    model.save(tmp_path)
    loaded = NgramClassifier.load(tmp_path)
    np.testing.assert_array_equal(loaded.logits(texts[:3]), model.logits(texts[:3]))
    assert loaded.categories == ["spam", "other"] and loaded.bits == 16


def test_words_are_read_through_deobfuscation_and_an_older_classifier_reads_them_as_written(tmp_path: Path) -> None:
    texts, labels, known = _texts()
    model = NgramClassifier.fit(texts, labels, known, ["spam", "other"], bits=16)
    model.save(tmp_path)
    with np.load(tmp_path / "ngrams.npz") as data:
        older = {key: data[key] for key in data.files if key != "deobfuscated"}
    np.savez(tmp_path / "ngrams.npz", **older)

    loaded = NgramClassifier.load(tmp_path)
    spelt = model.logits(["cl4im your fr33 priz3"])[0, 0]

    assert model.deobfuscated and not loaded.deobfuscated
    assert spelt > 0, "the plain words are what the classifier learnt"
    assert spelt > loaded.logits(["cl4im your fr33 priz3"])[0, 0] + 0.1, "read as written, fewer words match"


def test_soft_labels_rank_texts_by_the_share_of_yes() -> None:
    rng = random.Random(1)
    words = {"vile": 0.9, "rude": 0.5, "odd": 0.2, "calm": 0.0}
    texts, shares = [], []
    for word, share in words.items():
        for _ in range(30):
            texts.append(f"that was {word} of them on day {rng.randint(1, 99)}")
            shares.append(share)
    labels = np.array(shares, dtype=np.float32)[:, None]
    model = NgramClassifier.fit(texts, labels, np.ones_like(labels, dtype=bool), ["hate"], bits=16)

    logits = model.logits([f"that was {word} of them" for word in words])[:, 0]

    assert list(np.argsort(-logits)) == [0, 1, 2, 3], logits
