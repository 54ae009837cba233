import numpy as np

from ml.tasks.identity_terms import MAX_FACTOR, MIN_MENTIONS, balance_identity_weights, identity_terms_in


def test_terms_are_whole_words_with_plurals() -> None:
    assert identity_terms_in("Muslims and Jews, WOMEN and trans people") == {"muslim", "jew", "women", "trans"}
    assert identity_terms_in("mankind's transit of Manchester") == set()


def _share(weight: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> float:
    return float((weight[rows] * targets[rows]).sum() / weight[rows].sum())


def test_benign_mentions_are_weighted_up_to_the_overall_share() -> None:
    # 200 posts, 20 hateful; 12 name a group: 8 of them hateful (67 %), against 10 % overall.
    texts = ["muslims are vermin"] * 8 + ["muslims live here"] * 4 + ["you are vermin"] * 12 + ["nice day"] * 176
    targets = np.array([1.0] * 8 + [0.0] * 4 + [1.0] * 12 + [0.0] * 176)
    weight = np.ones(len(texts), dtype=np.float32)
    balanced = balance_identity_weights(texts, targets, weight)
    naming = np.arange(12)
    overall = _share(weight, targets, np.arange(len(texts)))
    assert _share(weight, targets, naming) > 0.6
    assert _share(balanced, targets, naming) < _share(weight, targets, naming)
    # The factor is capped, so the share comes down towards the overall one without reaching it here.
    assert overall <= _share(balanced, targets, naming) < 0.2
    assert np.allclose(balanced[8:12], MAX_FACTOR)
    assert np.array_equal(balanced[:8], weight[:8])  # hateful posts keep their weight
    assert np.array_equal(balanced[12:], weight[12:])  # posts naming no group too


def test_rare_terms_and_unknown_labels_are_left_alone() -> None:
    rare = MIN_MENTIONS - 1
    texts = ["gay people are scum"] * (rare - 1) + ["gay people are fine"] + ["hello"] * 50 + ["bad"] * 10
    targets = np.array([1.0] * (rare - 1) + [0.0] + [0.0] * 50 + [1.0] * 10)
    weight = np.ones(len(texts), dtype=np.float32)
    assert np.array_equal(balance_identity_weights(texts, targets, weight), weight)
    # Weight 0 (label neither stated nor presumed) stays 0 even for a post that names a group.
    texts = ["women are awful"] * 10 + ["women at work"] * 5 + ["hi"] * 85
    targets = np.array([1.0] * 10 + [0.0] * 90)
    weight = np.ones(len(texts), dtype=np.float32)
    weight[10] = 0.0
    balanced = balance_identity_weights(texts, targets, weight)
    assert balanced[10] == 0.0 and (balanced[11:15] > 1.0).all()
