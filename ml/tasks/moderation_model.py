"""The moderation model: what turns a post's signals (``ml.tasks.moderation``) into calibrated per-category scores.

Four parts, trained together by ``train_moderation_model`` and saved in one directory (family
``moderation-model``):

- an n-gram classifier (``ml.tasks.ngrams``) that reads the post's text (with its OCR text) and gives one logit per
  category;
- a text tower (``ml.tasks.text_tower``): MiniLM's top layers fine-tuned on the same labels, one logit per category;
- a fusion head (``ml.fusion``, gated by default) over the image features and the text features (MiniLM embedding,
  profanity score, the n-gram and the tower logits), calibrated by temperature, with per-category thresholds chosen
  on the validation precision/recall curves. The gate is the modality attribution a reviewer sees;
- detector fallbacks: a category no labelled data taught the head (the shipped datasets have no labelled images, so
  ``adult_content`` until reviewers label some) is scored by the packaged detector made for it, marked as such in
  every result. A post without an image gets no fallback score: the category is ``not_scored`` with the reason.

A head that no labelled image taught (fewer than ``MIN_LABELLED`` training posts with an image) reads text only:
the image then speaks through the detector fallbacks and its OCR text, and a post with neither text nor OCR text
gets no fused score (``not_scored``, with the reason) rather than the guess of an untrained image branch.

Features are standardised with the training means and deviations, stored with the model, and the image feature
layout the head learnt is recorded: a head is never fed another layout (``LayoutMismatch``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ml.eval.calibration import calibrated_ece_quantile
from ml.eval.classification import binary_report
from ml.fusion.heads import FusionPredictor, read_head
from ml.fusion.train import FusionConfig, FusionData, TrainedFusionHead, train_fusion_head
from ml.sources import sha256_path
from ml.specs import ModelSpec
from ml.tasks.identity_terms import balance_identity_weights
from ml.tasks.moderation import MAX_TEXT_CHARS, PostSignals
from ml.tasks.ngrams import MIN_LABELLED, NgramClassifier
from ml.tasks.text_tower import TOWER_DIR, TextTower, TowerConfig, train_text_tower

logger = logging.getLogger(__name__)

FAMILY = "moderation-model"
CONFIG_FILE = "moderation.json"
STANDARDISATION_FILE = "standardisation.npz"
HEAD_DIR = "head"
# category -> (image feature, threshold): the packaged detector that scores a category no labels taught. OpenNSFW's
# authors read scores above 0.8 as "very likely NSFW".
DETECTOR_FALLBACKS: dict[str, tuple[str, float]] = {"adult_content": ("nsfw", 0.8)}
# Categories that go together: a post positive in one is not presumed negative in the others (hate speech is
# harassment, and often threatens violence).
RELATED_CATEGORIES: tuple[frozenset[str], ...] = (frozenset({"hate_speech", "harassment", "violence"}),)
MAX_SOURCE_GAIN = 10.0  # ``source_balanced``
Progress = Callable[[str, int, int], None]


class LayoutMismatch(ValueError):
    """The signals' feature layout is not the one the model was trained on."""


@dataclass
class LabelledSignals:
    """A post's signals and its known labels (only the categories its source speaks to)."""

    signals: PostSignals
    labels: dict[str, int]
    source: str = ""
    key: str = ""  # what makes two posts one (the split keeps them together); default: the text
    # Training targets in [0, 1] where the source gives more than a yes/no (the share of annotators who said yes);
    # the models learn from these, while thresholds and metrics keep to ``labels``.
    targets: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModerationTrainingConfig:
    head_kind: str = "gated"
    # How validation posts calibrate the head's logits per category (``ml.fusion.calibration``): "temperature"
    # scales them, "platt" also moves them (docs/moderation.md measured both), "isotonic" maps them step-wise.
    calibration: str = "temperature"
    hidden: int = 128
    # Heads trained from seeds seed, seed + 1, ... and served as their mean (``ml.fusion.HeadEnsemble``).
    head_members: int = 1
    epochs: int = 60
    lr: float = 3e-3
    dropout: float = 0.2
    modality_dropout: float = 0.2
    ngram_strength: float = 1.0  # C=1 ranked best of 1, 4, 16 per source (docs/moderation.md)
    ngram_folds: int = 2  # the head learns from out-of-fold n-gram and tower logits, as it will meet them on new posts
    tower_epochs: int = 3  # at most, per fold (``ml.tasks.text_tower``); 0 trains no text tower
    tower_layers: int = TowerConfig.tuned_layers  # MiniLM's top layers the tower copies and trains
    tower_refit: bool = True  # new posts are scored by a tower copy refit on all training posts (``TowerConfig``)
    # The head reads the frozen MiniLM embedding beside the text readers' logits (always without a tower). Off by
    # default: with the tower, the head over logits alone measured better on Davidson and SMS (docs/moderation.md).
    head_reads_embedding: bool = False
    # A post is presumed negative, at this weight, for the categories its source does not label (a tweet is no
    # spam, a spam text no hate speech): without it a head trained on single-category sources says anything about
    # the categories a post's source never spoke to. Not for categories related to one it is positive in.
    presumed_negative_weight: float = 0.25
    # Categories whose non-positive posts that name an identity group are weighted up until naming the group is no
    # evidence on its own (``ml.tasks.identity_terms``); () turns it off.
    identity_balanced: tuple[str, ...] = ("hate_speech",)
    # Within a category, a source of n labelled posts weighs as n ** source_balance of them (``source_balanced``):
    # 1.0 counts every post alike, so the largest source decides what the category means; 0.5 lets a small source
    # (ETHOS's 800 comments beside Davidson's 20,000 tweets) teach its reading of the category too.
    source_balance: float = 0.5
    # Sources that disagree on what a category means (Davidson's hate speech is slurs in tweets, ETHOS's attacks on
    # groups in comments) each get their own reader logit ("hate_speech@ethos") and a logit saying how much a post
    # reads like that source ("source:ethos"): the head reads them all and learns whose convention a post follows
    # (``source_experts``).
    source_experts: bool = False
    validation_share: float = 0.1
    test_share: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ModerationScores:
    """One post's calibrated score per category it could be scored on, and why the others were not."""

    scores: dict[str, float]
    not_scored: dict[str, str]
    decisions: dict[str, bool]  # score >= the model's threshold
    sources: dict[str, str]  # category -> "fusion" or "detector:FEATURE"
    explanation: dict[str, Any]


class ModerationModel:
    """A moderation model ready to score signals: trained (``TrainedModerationModel.model``) or loaded from its
    directory (``load_moderation_model``, which ``ml.load`` calls for family ``moderation-model``)."""

    def __init__(
        self,
        *,
        ngrams: NgramClassifier,
        tower: TextTower | None,
        head: FusionPredictor,
        standardisation: dict[str, np.ndarray],
        image_feature_names: Sequence[str],
        text_signal_dim: int,
        fallbacks: dict[str, tuple[str, float]],
        reads_image: bool,
        reads_embedding: bool = True,
        model_version: str = "",
    ) -> None:
        self.ngrams, self.tower, self.head, self.standardisation = ngrams, tower, head, standardisation
        self.reads_image, self.reads_embedding = reads_image, reads_embedding
        self.image_feature_names = list(image_feature_names)
        self.text_signal_dim = text_signal_dim
        self.fallbacks = fallbacks
        self.model_version = model_version
        self.categories = [*head.categories, *fallbacks]
        self.thresholds = {**head.thresholds, **{name: t for name, (_, t) in fallbacks.items()}}

    def check_layout(self, image_feature_names: Sequence[str], text_signal_dim: int) -> None:
        """Refuse signals that lack an image feature the model learnt, or whose text signals differ; extra image
        features (a model installed after this one was trained, such as the full pack's CLIP) are left out by
        ``project``."""
        missing = [name for name in self.image_feature_names if name not in image_feature_names]
        if missing or text_signal_dim != self.text_signal_dim:
            raise LayoutMismatch(
                f"{self.model_version} was trained on image features {self.image_feature_names} and "
                f"{self.text_signal_dim} text signals; these signals have {list(image_feature_names)} and "
                f"{text_signal_dim}: retrain it (manage.py moderation_train) for the new signal models"
            )

    def project(self, posts: Sequence[PostSignals], image_feature_names: Sequence[str]) -> list[PostSignals]:
        """The posts' signals in this model's image feature layout (``check_layout`` first)."""
        names = list(image_feature_names)
        if names == self.image_feature_names:
            return list(posts)
        columns = [names.index(name) for name in self.image_feature_names]
        return [
            post if post.image_features is None else replace(post, image_features=post.image_features[columns])
            for post in posts
        ]

    def predict(self, posts: Sequence[PostSignals], *, explain: bool = True) -> list[ModerationScores]:
        if not posts:
            return []
        image, text, image_present, text_present = _inputs(
            posts,
            (self.ngrams, self.tower),
            len(self.image_feature_names),
            self.text_signal_dim,
            self.standardisation,
            reads_image=self.reads_image,
            reads_embedding=self.reads_embedding,
        )
        prediction = self.head.predict(image, text, image_present=image_present, text_present=text_present)
        results = []
        for row, post in enumerate(posts):
            not_scored: dict[str, str] = {}
            scores: dict[str, float] = {}
            if image_present[row] or text_present[row]:
                scores = {name: float(prediction.probabilities[row, i]) for i, name in enumerate(prediction.categories)}
            else:
                not_scored = dict.fromkeys(
                    prediction.categories, "no text: this model learnt from text only, and none was read in the image"
                )
            sources = dict.fromkeys(scores, "fusion")
            for name, (feature, _) in self.fallbacks.items():
                if post.image_features is None:
                    not_scored[name] = f"no image (scored by the {feature} detector only)"
                else:
                    scores[name] = float(post.image_features[self.image_feature_names.index(feature)])
                    sources[name] = f"detector:{feature}"
            explanation: dict[str, Any] = {}
            if explain and not_scored.keys().isdisjoint(prediction.categories):
                explanation = dict(prediction.explanations[row])
                if post.text.strip():
                    flagged = [n for n in prediction.categories if n in scores and scores[n] >= self.thresholds[n]]
                    explanation["terms"] = self.ngrams.top_terms(post.text, flagged)
            results.append(
                ModerationScores(
                    scores=scores,
                    not_scored=not_scored,
                    decisions={name: score >= self.thresholds[name] for name, score in scores.items()},
                    sources=sources,
                    explanation=explanation,
                )
            )
        return results


def load_moderation_model(path: Path, *, spec: ModelSpec, device: str = "cpu") -> ModerationModel:
    """Read a model that ``save_moderation_model`` wrote. The spec's thresholds, where it has them, override the
    saved ones (an ML admin may retune them without retraining)."""
    path = Path(path)
    config = json.loads((path / CONFIG_FILE).read_text())
    with np.load(path / STANDARDISATION_FILE, allow_pickle=False) as data:
        standardisation = {key: data[key] for key in data.files}
    label = f"{spec.name}@{spec.version}"
    head = read_head(path / HEAD_DIR, model_version=label, device=device)
    head.thresholds.update({name: float(spec.thresholds[name]) for name in head.categories if name in spec.thresholds})
    fallbacks = {
        name: (feature, float(spec.thresholds.get(name, threshold)))
        for name, (feature, threshold) in config["fallbacks"].items()
    }
    return ModerationModel(
        ngrams=NgramClassifier.load(path),
        tower=TextTower.load(path / TOWER_DIR, device=device) if (path / TOWER_DIR).exists() else None,
        head=head,
        standardisation=standardisation,
        image_feature_names=config["image_feature_names"],
        text_signal_dim=int(config["text_signal_dim"]),
        fallbacks=fallbacks,
        reads_image=bool(config["reads_image"]),
        reads_embedding=bool(config.get("reads_embedding", True)),
        model_version=label,
    )


def text_logits(texts: Sequence[str], readers: tuple[NgramClassifier, TextTower | None]) -> np.ndarray:
    """[N, C] n-gram logits, then [N, C] tower logits when the model has a tower."""
    ngrams, tower = readers
    logits = [ngrams.logits(texts)]
    if tower is not None:
        logits.append(tower.logits([text[:MAX_TEXT_CHARS] for text in texts]))
    return np.concatenate(logits, axis=1).astype(np.float32)


def _inputs(
    posts: Sequence[PostSignals],
    readers: tuple[NgramClassifier, TextTower | None],
    image_dim: int,
    text_signal_dim: int,
    standardisation: dict[str, np.ndarray],
    logits: np.ndarray | None = None,
    *,
    reads_image: bool,
    reads_embedding: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The head's standardised inputs: image [N, Dv], text [N, Dt + C per text reader], and which posts have each
    (a head that does not read images sees every image as absent). ``logits``: the text readers' logits, given
    (out-of-fold ones for training posts) or computed."""
    count = len(posts)
    image_present = np.array([reads_image and post.image_features is not None for post in posts], dtype=bool)
    text_present = np.array([post.text_features is not None for post in posts])
    image = np.zeros((count, image_dim), dtype=np.float32)
    for row, post in enumerate(posts):
        if image_present[row]:
            image[row] = post.image_features
    if logits is None:
        width = len(readers[0].categories) * (1 if readers[1] is None else 2)
        logits = np.zeros((count, width), dtype=np.float32)
        with_text = np.flatnonzero(text_present)
        if len(with_text):
            logits[with_text] = text_logits([posts[int(row)].text for row in with_text], readers)
    own = text_signal_dim if reads_embedding else 1
    text = np.zeros((count, own + logits.shape[1]), dtype=np.float32)
    for row, post in enumerate(posts):
        if post.text_features is not None:
            text[row, :own] = _own_text(post.text_features, reads_embedding)
            text[row, own:] = logits[row]
    image = (image - standardisation["image_mean"]) / standardisation["image_std"]
    text = (text - standardisation["text_mean"]) / standardisation["text_std"]
    image[~image_present], text[~text_present] = 0.0, 0.0
    return image.astype(np.float32), text.astype(np.float32), image_present, text_present


@dataclass
class TrainedModerationModel:
    ngrams: NgramClassifier
    tower: TextTower | None
    head: TrainedFusionHead
    standardisation: dict[str, np.ndarray]
    image_feature_names: list[str]
    text_signal_dim: int
    fallbacks: dict[str, tuple[str, float]]
    not_trained: dict[str, str]
    reads_image: bool
    reads_embedding: bool
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return [*self.head.categories, *self.fallbacks]

    def model(self) -> ModerationModel:
        return ModerationModel(
            ngrams=self.ngrams,
            tower=self.tower,
            head=self.head.predictor(),
            standardisation=self.standardisation,
            image_feature_names=self.image_feature_names,
            text_signal_dim=self.text_signal_dim,
            fallbacks=self.fallbacks,
            reads_image=self.reads_image,
            reads_embedding=self.reads_embedding,
        )


def split_of(post: LabelledSignals, config: ModerationTrainingConfig) -> str:
    """The post's split, "train", "validation" or "test": a stable hash of its source and key (its text unless
    given), so a post keeps its split across runs and a duplicate never sits on both sides."""
    digest = hashlib.sha256(f"{config.seed}:{post.source}:{post.key or post.signals.text}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    if share < config.test_share:
        return "test"
    if share < config.test_share + config.validation_share:
        return "validation"
    return "train"


def _related_to_positive(positive: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """[N, C] bool: the post is positive in this category or in one related to it."""
    related = np.eye(len(categories), dtype=bool)
    for group in RELATED_CATEGORIES:
        for i, a in enumerate(categories):
            for j, b in enumerate(categories):
                related[i, j] |= a in group and b in group
    return (positive.astype(np.int32) @ related.astype(np.int32)) > 0


def label_arrays(
    posts: Sequence[LabelledSignals], categories: Sequence[str], *, soft: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N, C] float 0/1, or the posts' soft ``targets`` where they have them; known [N, C] bool)."""
    labels = np.zeros((len(posts), len(categories)), dtype=np.float32)
    known = np.zeros((len(posts), len(categories)), dtype=bool)
    for row, post in enumerate(posts):
        values = {**post.labels, **post.targets} if soft else post.labels
        for column, name in enumerate(categories):
            if name in values:
                labels[row, column], known[row, column] = float(values[name]), True
    return labels, known


def source_balanced(sources: Sequence[str], stated: np.ndarray, weight: np.ndarray, *, exponent: float) -> np.ndarray:
    """``weight`` [N, C] with each category's stated posts reweighted so that a source of n of them weighs as
    n ** ``exponent`` (temperature sampling, as multilingual models mix corpora of unequal size), and the category's
    total stated weight unchanged. A source gains at most ``MAX_SOURCE_GAIN`` times the per-post weight of the
    category's largest source (a handful of reviewed items is not a corpus). Presumed labels keep their weight."""
    weight = np.asarray(weight, dtype=np.float64).copy()
    names = np.asarray(sources)
    for column in range(weight.shape[1]):
        rows = np.flatnonzero(stated[:, column])
        if not len(rows):
            continue
        counts = {source: int((names[rows] == source).sum()) for source in set(names[rows].tolist())}
        largest = max(counts.values())
        gain = {s: min(MAX_SOURCE_GAIN, (n / largest) ** (exponent - 1.0)) for s, n in counts.items()}
        factor = np.array([gain[source] for source in names[rows]])
        total = weight[rows, column].sum()
        balanced = weight[rows, column] * factor
        if balanced.sum() > 0:
            weight[rows, column] = balanced * (total / balanced.sum())
    return weight.astype(np.float32)


def source_experts(
    sources: Sequence[str], labels: np.ndarray, stated: np.ndarray, learnt: Sequence[str], *, folds: int
) -> list[tuple[str, str]]:
    """(category, source) for each source with ``MIN_LABELLED`` positive and negative stated posts per fold in a
    category that two or more such sources label (so that every fold's readers learn the expert)."""
    names = np.asarray(sources)
    experts = []
    for column, category in enumerate(learnt):
        able = []
        for source in sorted(set(names[stated[:, column]].tolist())):
            rows = stated[:, column] & (names == source)
            positives = int((labels[rows, column] > 0.5).sum())
            if min(positives, int(rows.sum()) - positives) >= MIN_LABELLED * folds:
                able.append(source)
        if len(able) >= 2:
            experts += [(category, source) for source in able]
    return experts


def reader_columns(learnt: Sequence[str], experts: Sequence[tuple[str, str]]) -> list[str]:
    """What the text readers predict: the categories, then one column per source expert, then one per expert
    source saying whether a post is from it."""
    gates = _expert_sources(experts)
    return [*learnt, *(f"{category}@{source}" for category, source in experts), *(f"source:{s}" for s in gates)]


def _expert_sources(experts: Sequence[tuple[str, str]]) -> list[str]:
    return sorted({source for _, source in experts})


def reader_targets(
    sources: Sequence[str],
    targets: np.ndarray,
    weight: np.ndarray,
    stated: np.ndarray,
    learnt: Sequence[str],
    experts: Sequence[tuple[str, str]],
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, weight) [N, len(reader_columns)]: the categories' own, then each expert's (its source's stated
    posts, their weights scaled to a mean of 1), then each source's membership (every post, weight 1)."""
    names = np.asarray(sources)
    extra_targets, extra_weight = [], []
    for category, source in experts:
        column = list(learnt).index(category)
        rows = stated[:, column] & (names == source)
        scale = float(weight[rows, column].mean()) if rows.any() else 1.0
        extra_targets.append(np.where(rows, targets[:, column], 0.0))
        extra_weight.append(np.where(rows, weight[:, column] / max(scale, 1e-6), 0.0))
    for source in _expert_sources(experts):
        extra_targets.append((names == source).astype(np.float64))
        extra_weight.append(np.ones(len(names)))
    if not extra_targets:
        return targets, weight
    return (
        np.concatenate([targets, np.stack(extra_targets, 1)], axis=1).astype(np.float32),
        np.concatenate([weight, np.stack(extra_weight, 1)], axis=1).astype(np.float32),
    )


def train_moderation_model(
    posts: Sequence[LabelledSignals],
    *,
    categories: Sequence[str],
    image_feature_names: Sequence[str],
    text_signal_dim: int,
    config: ModerationTrainingConfig | None = None,
    on_progress: Progress | None = None,
) -> TrainedModerationModel:
    """Train the n-gram classifier and the fusion head on ``posts`` (split by ``split_of``), calibrate on the
    validation split, choose thresholds there, and measure on the test split (``metrics``)."""
    config = config or ModerationTrainingConfig()
    report = on_progress or (lambda stage, done, total: None)
    splits: dict[str, list[LabelledSignals]] = {"train": [], "validation": [], "test": []}
    for post in posts:
        splits[split_of(post, config)].append(post)
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    train_labels, train_known = label_arrays(train, categories)
    validation_labels, validation_known = label_arrays(validation, categories)
    learnt, not_trained = [], {}
    for column, name in enumerate(categories):
        positives = int((train_labels[train_known[:, column], column] > 0.5).sum())
        negatives = int(train_known[:, column].sum()) - positives
        validation_positives = int((validation_labels[validation_known[:, column], column] > 0.5).sum())
        if min(positives, negatives) >= MIN_LABELLED and validation_positives > 0:
            learnt.append(name)
        else:
            not_trained[name] = f"{positives} positive and {negatives} negative training posts (need {MIN_LABELLED})"
    if not learnt:
        raise ValueError(f"no category has enough labelled posts to train on: {not_trained}")
    fallbacks = {name: DETECTOR_FALLBACKS[name] for name in not_trained if name in DETECTOR_FALLBACKS}
    columns = [list(categories).index(name) for name in learnt]
    logger.info("training on %d posts (%d validation, %d test): %s", len(train), len(validation), len(test), learnt)

    # Targets for training: the stated ones (soft where the source gives shares), and the presumed negatives
    # (validation and test keep the stated 0/1 labels).
    soft_labels, _ = label_arrays(train, categories, soft=True)
    y, known = soft_labels[:, columns], train_known[:, columns]
    presumed = ~known & ~_related_to_positive(train_labels[:, columns] > 0.5, learnt)
    weight = np.where(known, 1.0, np.where(presumed, config.presumed_negative_weight, 0.0)).astype(np.float32)
    train_sources = [post.source for post in train]
    weight = source_balanced(train_sources, known, weight, exponent=config.source_balance)
    known = known | presumed
    train_texts = [post.signals.text for post in train]
    for column, name in enumerate(learnt):
        if name in config.identity_balanced:
            weight[:, column] = balance_identity_weights(train_texts, y[:, column], weight[:, column])

    # What the text readers learn: the categories, and the source experts where sources disagree.
    experts = (
        source_experts(
            train_sources, train_labels[:, columns], train_known[:, columns], learnt, folds=config.ngram_folds
        )
        if config.source_experts
        else []
    )
    readers_learn = reader_columns(learnt, experts)
    reader_y, reader_weight = reader_targets(train_sources, y, weight, train_known[:, columns], learnt, experts)
    reader_known = reader_weight > 0
    if experts:
        logger.info("source experts: %s", readers_learn[len(learnt) :])

    # The n-gram classifier: out-of-fold logits for the training posts, the full model for the others.
    train_logits = np.zeros((len(train), len(readers_learn)), dtype=np.float32)
    fold = np.random.default_rng(config.seed).integers(0, config.ngram_folds, len(train))

    def fit_ngrams(rows: np.ndarray) -> NgramClassifier:
        texts = [train_texts[i] for i in rows]
        return NgramClassifier.fit(
            texts,
            reader_y[rows],
            reader_known[rows],
            readers_learn,
            weight=reader_weight[rows],
            strength=config.ngram_strength,
        )

    for part in range(config.ngram_folds):
        report("n-gram folds", part, config.ngram_folds + 1)
        model = fit_ngrams(np.flatnonzero(fold != part))
        outside = np.flatnonzero(fold == part)
        train_logits[outside] = model.logits([train_texts[i] for i in outside])
    report("n-gram folds", config.ngram_folds, config.ngram_folds + 1)
    ngrams = fit_ngrams(np.arange(len(train)))
    report("n-gram folds", config.ngram_folds + 1, config.ngram_folds + 1)

    # The text tower: cross-fitted on the same folds (out-of-fold logits for the training posts).
    tower: TextTower | None = None
    tower_report: dict[str, Any] = {}
    if config.tower_epochs > 0:
        tower, tower_logits, tower_report = _fit_tower(
            train, validation, reader_y, reader_weight, fold, learnt, experts, config, report
        )
        train_logits = np.concatenate([train_logits, tower_logits], axis=1)
    readers = (ngrams, tower)

    labelled_images = sum(post.signals.image_features is not None for post in train)
    reads_image = labelled_images >= MIN_LABELLED
    reads_embedding = config.head_reads_embedding or tower is None
    standardisation = _standardisation(
        train, train_logits, len(image_feature_names), text_signal_dim, reads_embedding=reads_embedding
    )

    def data(
        split: list[LabelledSignals],
        logits: np.ndarray | None = None,
        mask: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> FusionData:
        """The split's head inputs with its stated labels, or with its soft targets and ``mask`` (known, weight)
        (the training split)."""
        image, text, image_present, text_present = _inputs(
            [post.signals for post in split],
            readers,
            len(image_feature_names),
            text_signal_dim,
            standardisation,
            logits,
            reads_image=reads_image,
            reads_embedding=reads_embedding,
        )
        labels, stated = label_arrays(split, learnt, soft=mask is not None)
        known, weight = mask if mask is not None else (stated, None)
        return FusionData(
            image, text, labels, known, image_present=image_present, text_present=text_present, label_weight=weight
        )

    report("fusion head", 0, config.epochs)
    head = train_fusion_head(
        FusionConfig(
            kind=config.head_kind,
            categories=tuple(learnt),
            hidden=config.hidden,
            dropout=config.dropout,
            epochs=config.epochs,
            lr=config.lr,
            modality_dropout=config.modality_dropout,
            batch_size=256,
            patience=8,
            calibration=config.calibration,
            members=config.head_members,
        ),
        data(train, train_logits, (known, weight)),
        data(validation),
        seed=config.seed,
        on_progress=lambda epoch, epochs: report("fusion head", epoch, epochs),
    )
    trained = TrainedModerationModel(
        ngrams=ngrams,
        tower=tower,
        head=head,
        standardisation=standardisation,
        image_feature_names=list(image_feature_names),
        text_signal_dim=text_signal_dim,
        fallbacks=fallbacks,
        not_trained={name: reason for name, reason in not_trained.items() if name not in fallbacks},
        reads_image=reads_image,
        reads_embedding=reads_embedding,
    )
    scorer = trained.model()
    scored = [result.scores for result in scorer.predict([post.signals for post in test], explain=False)]
    trained.metrics = {
        "test": scores_report(scored, [post.labels for post in test], scorer.thresholds),
        "test_by_source": {
            source: scores_report(
                [s for s, post in zip(scored, test, strict=True) if post.source == source],
                [post.labels for post in test if post.source == source],
                scorer.thresholds,
            )
            for source in sorted({post.source for post in test})
        },
        "validation": head.validation_metrics,
        "posts": {"train": len(train), "validation": len(validation), "test": len(test)},
        "labelled_images": labelled_images,
        "text_tower": tower_report or None,
        "not_trained": not_trained,
        "fallbacks": {name: {"feature": f, "threshold": t} for name, (f, t) in fallbacks.items()},
        "config": asdict(config),
    }
    return trained


def _fit_tower(
    train: Sequence[LabelledSignals],
    validation: Sequence[LabelledSignals],
    targets: np.ndarray,
    weight: np.ndarray,  # 0 where a post's label is neither stated nor presumed
    fold: np.ndarray,
    learnt: Sequence[str],
    experts: Sequence[tuple[str, str]],
    config: ModerationTrainingConfig,
    report: Progress,
) -> tuple[TextTower, np.ndarray, dict[str, Any]]:
    """Train the text tower on the training posts that have text to predict ``reader_columns``; returns it, the
    out-of-fold logits of every training post (zeros for those without text) and its training report."""
    rows = [i for i, post in enumerate(train) if post.signals.text_features is not None]
    checked = [post for post in validation if post.signals.text_features is not None]
    labels, stated = label_arrays(checked, learnt)
    validation_labels, validation_weight = reader_targets(
        [post.source for post in checked], labels, stated.astype(np.float32), stated, learnt, experts
    )
    validation_known = validation_weight > 0
    columns = reader_columns(learnt, experts)
    tower, logits, history = train_text_tower(
        [train[i].signals.text[:MAX_TEXT_CHARS] for i in rows],
        targets[rows],
        weight[rows],
        fold[rows],
        categories=columns,
        validation_texts=[post.signals.text[:MAX_TEXT_CHARS] for post in checked],
        validation_labels=validation_labels,
        validation_known=validation_known,
        config=TowerConfig(
            tuned_layers=config.tower_layers, epochs=config.tower_epochs, seed=config.seed, refit=config.tower_refit
        ),
        on_progress=report,
    )
    out_of_fold = np.zeros((len(train), len(columns)), dtype=np.float32)
    out_of_fold[rows] = logits
    return tower, out_of_fold, history


def _own_text(features: np.ndarray, reads_embedding: bool) -> np.ndarray:
    """The post's own text signals the head reads: MiniLM's embedding and the profanity score, or the score alone."""
    return features if reads_embedding else features[-1:]


def _standardisation(
    train: Sequence[LabelledSignals],
    logits: np.ndarray,
    image_dim: int,
    text_signal_dim: int,
    *,
    reads_embedding: bool,
) -> dict[str, np.ndarray]:
    images = [post.signals.image_features for post in train if post.signals.image_features is not None]
    texts = [
        np.concatenate([_own_text(post.signals.text_features, reads_embedding), logits[i]])
        for i, post in enumerate(train)
        if post.signals.text_features is not None
    ]

    def moments(vectors: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
        if not vectors:
            return np.zeros(dim, dtype=np.float32), np.ones(dim, dtype=np.float32)
        stacked = np.stack(vectors).astype(np.float64)
        std = stacked.std(axis=0)
        # A feature (nearly) constant in training taught the head nothing: it reads as 0 on new posts, however it
        # varies there (a reader that could not learn a category in a fold gives 0 out of fold, then learns it
        # on all the posts; dividing by a floor would blow its logits up).
        return stacked.mean(axis=0).astype(np.float32), np.where(std < 1e-3, np.inf, std).astype(np.float32)

    image_mean, image_std = moments(images, image_dim)
    own = text_signal_dim if reads_embedding else 1
    text_mean, text_std = moments(texts, own + logits.shape[1])
    return {"image_mean": image_mean, "image_std": image_std, "text_mean": text_mean, "text_std": text_std}


def scores_report(
    scores: Sequence[dict[str, float]], labels: Sequence[dict[str, int]], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Per category, over the posts labelled for it and scored on it: n, positives, accuracy, precision, recall,
    F1 (at ``thresholds``), ROC-AUC, ECE and ``ece_calibrated_p95``, the ECE a perfectly calibrated model giving
    these scores stays under 95 % of the time on this many posts (``calibrated_ece_quantile``: on a few dozen posts
    binning noise alone is 0.1 or more); an undefined metric is None. Also ``macro_f1`` over the categories with a
    defined F1."""
    categories: dict[str, Any] = {}
    names = sorted({name for label in labels for name in label} & set(thresholds))
    for name in names:
        pairs = [(s[name], label[name]) for s, label in zip(scores, labels, strict=True) if name in label and name in s]
        if not pairs:
            continue
        values, truth = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]) > 0.5
        report: dict[str, Any] = dict(binary_report(truth, values, thresholds[name]))
        report["ece_calibrated_p95"] = None if report["ece"] is None else calibrated_ece_quantile(values)
        categories[name] = report
    f1s = [report["f1"] for report in categories.values() if report["f1"] is not None]
    return {"categories": categories, "macro_f1": float(np.mean(f1s)) if f1s else None}


def save_moderation_model(
    trained: TrainedModerationModel, out_dir: Path, *, name: str, version: str, extra: dict[str, Any] | None = None
) -> ModelSpec:
    """Write the model into ``out_dir`` and return its spec (family ``moderation-model``, source ``file:out_dir``)."""
    from ml.fusion.heads import write_head

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    trained.ngrams.save(out_dir)
    if trained.tower is not None:
        trained.tower.save(out_dir / TOWER_DIR)
    with (out_dir / STANDARDISATION_FILE).open("wb") as handle:
        np.savez(handle, **trained.standardisation)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
    head = trained.head
    write_head(
        out_dir / HEAD_DIR,
        head.head,
        calibrator=head.calibrator,
        categories=head.categories,
        thresholds=head.thresholds,
        extra={"training": head.config.to_dict()},
    )
    config = {
        "categories": trained.categories,
        "image_feature_names": trained.image_feature_names,
        "text_signal_dim": trained.text_signal_dim,
        "fallbacks": {name: list(value) for name, value in trained.fallbacks.items()},
        "not_trained": trained.not_trained,
        "reads_image": trained.reads_image,
        "reads_embedding": trained.reads_embedding,
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return ModelSpec(
        name=name,
        version=version,
        family=FAMILY,
        source=f"file:{out_dir}",
        sha256=sha256_path(out_dir),
        task="multi-label-classification",
        labels=trained.categories,
        thresholds=trained.model().thresholds,
        licence="trained here on the data named in its metrics",
        extra={"head_kind": head.head.kind, "metrics": trained.metrics, **(extra or {})},
    )


def evaluation_report(
    scores: Sequence[dict[str, float]],
    labels: Sequence[dict[str, int]],
    thresholds: dict[str, float],
    *,
    fields: Sequence[dict[str, object]] = (),
    by: Sequence[str] = (),
) -> dict[str, Any]:
    """``{"categories": {name: metrics}, "by": {FIELD: {VALUE: {name: metrics}}}}`` (``by`` only when asked) for
    every category any item is labelled with. An item counts for a category when it is labelled with it and the
    model scored it; a category the model scored on no labelled item has ``n`` 0 and null metrics."""

    def categories(rows: list[int]) -> dict[str, Any]:
        report = scores_report([scores[i] for i in rows], [labels[i] for i in rows], thresholds)["categories"]
        for name in sorted({name for i in rows for name in labels[i]}):
            report.setdefault(name, {**dict.fromkeys(_METRICS), "n": 0, "positives": 0})
        return dict(sorted(report.items()))

    result: dict[str, Any] = {"categories": categories(list(range(len(scores))))}
    if by:
        result["by"] = {}
        for name in by:
            groups: dict[str, list[int]] = {}
            for index, item_fields in enumerate(fields):
                if item_fields.get(name) is not None:
                    groups.setdefault(str(item_fields[name]), []).append(index)
            result["by"][name] = {value: categories(rows) for value, rows in sorted(groups.items())}
    return result


_METRICS = ("n", "positives", "accuracy", "precision", "recall", "f1", "roc_auc", "ece", "ece_calibrated_p95")
