"""Identity terms, and training weights that keep naming a group from being evidence of hate on its own.

Hate speech corpora name groups mostly in attacks (in ETHOS, three in four comments that say "Muslims" are
hateful), so a classifier learns that the name is the attack and flags "I love Muslims" or "Muslims live in every
city". Following Zhang et al. (2020, "Demographics should not be the reason of toxicity"), the non-hateful training
posts that name a group are weighted up until, for each identity term, the weighted share of hateful posts among
the posts naming it is about the share across all posts: the term alone then tells the classifier nothing, and what is
said about the group must. Terms named too seldom to estimate a share are left alone, and no weight grows past
``MAX_FACTOR``, so a handful of posts cannot dominate.

The lexicon is Dixon et al.'s (2018) identity terms (sexual orientation and gender identity, gender, race and
ethnicity, nationality, religion, age, disability) with the plural and group nouns hate speech uses ("women",
"immigrants", "refugees"), matched as whole words, case-insensitively; slurs are not identity terms and are not
listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# Each term also matches with a trailing "s" (gays, Muslims, Mexicans).
IDENTITY_TERMS: frozenset[str] = frozenset(
    {
        # sexual orientation and gender identity
        "lesbian", "gay", "bisexual", "transgender", "trans", "queer", "lgbt", "lgbtq", "homosexual",
        "heterosexual", "straight", "nonbinary",
        # gender
        "woman", "women", "man", "men", "female", "male", "girl", "boy", "feminist",
        # race and ethnicity
        "black", "white", "african", "asian", "hispanic", "latino", "latina", "latinx", "arab", "european",
        "indigenous", "jew", "jewish", "gypsy", "roma",
        # nationality and migration
        "mexican", "chinese", "japanese", "indian", "american", "canadian", "immigrant", "migrant", "refugee",
        "foreigner",
        # religion
        "christian", "muslim", "islam", "islamic", "buddhist", "catholic", "protestant", "sikh", "hindu", "atheist",
        # age
        "old", "older", "young", "younger", "teenage", "elderly",
        # disability
        "disabled", "blind", "deaf", "paralyzed", "autistic",
    }
)  # fmt: skip
MIN_MENTIONS = 10  # posts naming a term, below which its share of hate is not estimated
MAX_FACTOR = 10.0

_WORD = re.compile(r"[a-z]+")


def identity_terms_in(text: str) -> set[str]:
    """The identity terms ``text`` names (singular form)."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if word in IDENTITY_TERMS:
            found.add(word)
        elif word.endswith("s") and word[:-1] in IDENTITY_TERMS:
            found.add(word[:-1])
    return found


def balance_identity_weights(texts: Sequence[str], targets: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight`` [N] with the non-hateful posts (``targets`` [N] < 0.5) that name an identity term weighted up,
    each by the largest factor among its terms, so that each term's weighted share of hate comes down to about the
    overall share. A soft target counts as that share of a hateful post; posts of weight 0 (label unknown) stay out
    of every share."""
    targets = np.asarray(targets, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    active = weight > 0
    total = weight[active].sum()
    overall = float((weight * targets)[active].sum() / total) if total > 0 else 0.0
    factor = np.ones(len(texts))
    if not 0.0 < overall < 1.0:
        return (weight * factor).astype(np.float32)
    rows_of: dict[str, list[int]] = {}
    for row, text in enumerate(texts):
        if active[row]:
            for term in identity_terms_in(text):
                rows_of.setdefault(term, []).append(row)
    negative = targets < 0.5
    for rows in rows_of.values():
        if len(rows) < MIN_MENTIONS:
            continue
        hateful = float((weight[rows] * targets[rows]).sum())
        benign = float((weight[rows] * (1.0 - targets[rows])).sum())
        if hateful <= 0.0 or benign <= 0.0:
            continue
        # Solve hateful / (hateful + k * benign) = overall for k, the factor on the term's benign posts.
        k = min(MAX_FACTOR, hateful * (1.0 - overall) / (overall * benign))
        if k > 1.0:
            chosen = [row for row in rows if negative[row]]
            factor[chosen] = np.maximum(factor[chosen], k)
    return (weight * factor).astype(np.float32)
