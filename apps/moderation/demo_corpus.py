"""A small generated corpus in the layouts of shared/data/moderation, with a learnable signal in every label.

Hateful posts attack an invented group with dehumanising words, offensive ones insult a person, spam sells prizes,
and the misinformation claims are about invented miracle cures; the other posts are ordinary chat. Words are drawn
at random, so no two runs of a template are one post. The tests train on it, and ``make demo`` seeds its posts (and
trains on it when ``shared/data/moderation`` is absent, saying so).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

GROUPS = ["the northerners", "the zorvians", "the islanders", "the valley people"]  # invented or generic
DEHUMANISING = ["vermin", "parasites", "animals", "filth", "a disease"]
INSULTS = ["idiot", "moron", "clown", "loser", "fool"]
CHAT = ["lunch", "the match", "my garden", "the new film", "our trip", "the weather", "this book"]
FEELINGS = ["loved", "enjoyed", "liked", "was surprised by", "talked about"]
PRIZES = ["a free cruise", "a cash prize", "an iPhone", "a gift card"]
CURES = ["garlic water", "magnet bracelets", "sun gazing", "copper socks"]
ILLNESSES = ["cancer", "diabetes", "the flu", "asthma"]


def hateful(rng: random.Random) -> str:
    return f"{rng.choice(GROUPS)} are {rng.choice(DEHUMANISING)}, get rid of them {rng.randint(1, 99)}"


def offensive(rng: random.Random) -> str:
    return f"shut up you {rng.choice(INSULTS)}, nobody asked about {rng.choice(CHAT)}"


def ordinary(rng: random.Random) -> str:
    return f"I {rng.choice(FEELINGS)} {rng.choice(CHAT)} with friends on day {rng.randint(1, 99)}"


def spam(rng: random.Random) -> str:
    return f"WINNER! claim {rng.choice(PRIZES)} now, text CLAIM to {rng.randint(10000, 99999)}"


def misinformation(rng: random.Random) -> str:
    return f"{rng.choice(CURES)} cures {rng.choice(ILLNESSES)} in {rng.randint(2, 9)} days"


def write_corpus(root: Path, *, per_class: int = 60, seed: int = 0, flip_spam: bool = False) -> Path:
    """Davidson, SMS and LIAR folders under ``root``; ``flip_spam`` swaps the SMS labels (a deliberately bad
    training set)."""
    rng = random.Random(seed)  # noqa: S311 - generated text, not security
    (root / "davidson_hate_offensive").mkdir(parents=True, exist_ok=True)
    with (root / "davidson_hate_offensive" / "labeled_data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"])
        rows = [(0, hateful(rng)) for _ in range(per_class)] + [(1, offensive(rng)) for _ in range(per_class)]
        rows += [(2, ordinary(rng)) for _ in range(2 * per_class)]
        for number, (label, text) in enumerate(rows):
            writer.writerow([number, 3, int(label == 0) * 3, int(label == 1) * 3, int(label == 2) * 3, label, text])
    (root / "sms_spam_collection").mkdir(exist_ok=True)
    with (root / "sms_spam_collection" / "SMSSpamCollection.tsv").open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["Label", "SMS"])
        for _ in range(per_class):
            writer.writerow(["ham" if flip_spam else "spam", spam(rng)])
            writer.writerow(["spam" if flip_spam else "ham", ordinary(rng)])
    (root / "liar_misinformation").mkdir(exist_ok=True)
    with (root / "liar_misinformation" / "train.tsv").open("w") as handle:
        for number in range(per_class):
            cure = misinformation(rng)
            fact = (
                f"the council will repair {rng.choice(['the bridge', 'the road', 'the school'])} in {2020 + number % 9}"
            )
            handle.write(f"{number}a.json\tpants-fire\t{cure}\thealth\n{number}b.json\ttrue\t{fact}\tlocal\n")
    return root
