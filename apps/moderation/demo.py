"""The moderation part of ``make demo``: a champion model and a few dozen posts to review.

The model is trained once, by ``moderation_train``, on a sample of ``shared/data/moderation`` (``VLP_DATA_DIR``) when
it is there, else on the generated corpus of ``demo_corpus`` (its notes say which). The posts are generated texts,
posters drawn with Pillow (text in the image, read by OCR), and photos that scikit-image ships (public domain or
CC0: the astronaut Eileen Collins, NASA; a cat, a coffee cup, a rocket launch, coins, a horse silhouette), some with
text. They are submitted like any integrator's posts and scored by the demo's worker, so the queue fills within a
minute or two of startup. So that the queue has work whatever the model decides, the demo raises every category's
audit sample to a quarter of the automatic decisions (a new policy version, audited, with that reason).
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from PIL import Image, ImageDraw, ImageFont

from apps.moderation.demo_corpus import hateful, misinformation, offensive, ordinary, spam, write_corpus
from apps.moderation.models import ContentItem
from apps.moderation.services import FUSION_MODEL_NAME, moderation_item_submit, policies_in_force, policy_create
from apps.moderation.training import moderation_train
from apps.registry.models import ModelVersion
from ml.explain.render import png_bytes

logger = logging.getLogger(__name__)

DEMO_SOURCE = "demo"
DEMO_AUDIT_SAMPLE = 0.25
TRAINING_SAMPLE = 800  # posts per source: a model in a few minutes on two cores (text tower included)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins", "horse")
POSTERS = ("WIN A FREE CRUISE! TEXT 80010", "GARLIC CURES THE FLU", "Book club on Thursday", "SALE 50% OFF TODAY")


def demo_moderation_setup(*, integrator: User) -> str:
    """Train a champion if there is none and seed the demo posts once; says what it did."""
    notes = []
    if not ModelVersion.objects.filter(name=FUSION_MODEL_NAME).exists():
        notes.append(_train())
    if ContentItem.objects.filter(source=DEMO_SOURCE).exists():
        notes.append("demo posts already seeded")
    else:
        for slug, policy in policies_in_force().items():
            policy_create(
                category=policy.category,
                allow_below=policy.allow_below,
                block_above=policy.block_above,
                action=policy.action,
                audit_sample_rate=max(policy.audit_sample_rate, DEMO_AUDIT_SAMPLE),
                reason=f"demo: {DEMO_AUDIT_SAMPLE:.0%} of automatic decisions sampled for review ({slug})",
                actor=None,
            )
        count = _seed(integrator)
        notes.append(f"{count} demo posts submitted for scoring")
    return "; ".join(notes)


def _train() -> str:
    shipped = Path(settings.VLP_DATA_DIR) / "moderation"
    if shipped.is_dir():
        outcome = moderation_train(data_dirs=[shipped], limit_per_source=TRAINING_SAMPLE)
        return f"trained {outcome.version.label} on a sample of {shipped}"
    with tempfile.TemporaryDirectory() as folder:
        outcome = moderation_train(data_dirs=[write_corpus(Path(folder), per_class=80)])
    return f"trained {outcome.version.label} on the generated demo corpus ({shipped} is absent): a demo model only"


def _seed(integrator: User) -> int:
    rng = random.Random(2026)  # noqa: S311 - generated demo posts, not security
    makers: list[Callable[[random.Random], str]] = [ordinary, ordinary, spam, hateful, offensive, misinformation]
    posts: list[tuple[str, bytes | None]] = [(maker(rng), None) for maker in makers * 4]
    posts += [("", png_bytes(poster(words))) for words in POSTERS]
    posts += [("", png_bytes(photo(name))) for name in PHOTOS]
    posts += [
        ("our crew on the launch day", png_bytes(photo("rocket"))),
        ("my cat judging me again", png_bytes(photo("chelsea"))),
        (spam(rng), png_bytes(poster("CLAIM NOW"))),
        ("morning coffee before the match", png_bytes(photo("coffee"))),
    ]
    for number, (text, image) in enumerate(posts):
        moderation_item_submit(
            text=text, image=image, author_ref=f"demo-user-{number % 7}", source=DEMO_SOURCE, actor=integrator
        )
    return len(posts)


def photo(name: str) -> Image.Image:
    """One of scikit-image's bundled sample photos (public domain or CC0), as RGB."""
    import skimage.data

    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels)
    return image.convert("RGB")


def poster(words: str) -> Image.Image:
    """A poster with ``words`` on it (what OCR reads)."""
    image = Image.new("RGB", (900, 300), "#fff8e1")
    ImageDraw.Draw(image).text((40, 110), words, fill="#1d2330", font=ImageFont.load_default(size=56))
    return image
