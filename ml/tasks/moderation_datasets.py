"""Labelled moderation data in the layouts of ``../shared/data/moderation``, read into one shape.

A directory may hold any subset of these folders; each becomes posts with per-category 0/1 labels (only the
categories its source can speak to) and descriptive fields for ``--by`` reports:

- ``davidson_hate_offensive/labeled_data.csv`` (``class`` 0 hate, 1 offensive, 2 neither; ``tweet``):
  hate_speech = hate; harassment = hate or offensive; with the vote columns (``count``, ``hate_speech``,
  ``offensive_language``) the shares of votes are the training targets;
- ``sms_spam_collection/SMSSpamCollection.tsv`` (``Label`` ham/spam, ``SMS``): spam;
- ``ethos/Ethos_Dataset_Binary.csv`` (``comment;isHate``): hate_speech = isHate >= 0.5 (the share itself is the
  training target, as for the multi-label file's violence);
  ``Ethos_Dataset_Multi_Label.csv``
  (hateful comments only) adds violence and the ``target_group`` field;
- ``liar_misinformation/{train,valid,test}.tsv`` (label in column 2, claim in column 3): misinformation = false,
  pants-fire or barely-true;
- ``jigsaw_toxic_sample_ibm/test_examples.csv``: hate_speech = identity_hate; harassment = toxic, insult or obscene;
  violence = threat.

A post that appears twice (ETHOS lists hateful comments in both files) is one post with the labels merged.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SCORE_THRESHOLD = 0.5  # ETHOS gives annotator shares; half or more counts as yes
LIAR_MISINFORMATION = frozenset({"false", "pants-fire", "barely-true"})
ETHOS_GROUPS = ("gender", "race", "national_origin", "disability", "religion", "sexual_orientation")


class DatasetError(ValueError):
    pass


@dataclass
class LabelledPost:
    text: str
    labels: dict[str, int]
    fields: dict[str, str] = field(default_factory=dict)  # source, and what the source tells about the post
    # Annotators' share of yes per category, where the source gives it (Davidson's votes, ETHOS's scores): training
    # targets; ``labels`` are the majority reading, used for thresholds and evaluation.
    targets: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """One line of the evaluation JSONL (``manage.py evaluate moderation``)."""
        return {"text": self.text, "labels": dict(sorted(self.labels.items())), **self.fields}


def read_moderation_dir(directory: Path) -> list[LabelledPost]:
    """Every post of every known folder under ``directory``; at least one folder must be there."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory} is not a directory")
    found = [name for name in READERS if (directory / name).is_dir()]
    if not found:
        raise DatasetError(f"{directory} holds none of the known folders: {', '.join(READERS)}")
    posts: list[LabelledPost] = []
    for name in found:
        read = list(READERS[name](directory / name))
        logger.info("read %d posts from %s", len(read), name)
        posts.extend(read)
    return posts


def _davidson(folder: Path) -> Iterator[LabelledPost]:
    for row in _rows(folder / "labeled_data.csv", delimiter=","):
        label = int(_field(row, "class", folder))
        targets = {}
        votes = [row.get(name) for name in ("count", "hate_speech", "offensive_language")]
        if all(vote not in (None, "") for vote in votes):
            count, hate, offensive = (float(vote) for vote in votes)  # type: ignore[arg-type]
            if count > 0:
                targets = {"hate_speech": hate / count, "harassment": min(1.0, (hate + offensive) / count)}
        yield LabelledPost(
            text=_field(row, "tweet", folder),
            labels={"hate_speech": int(label == 0), "harassment": int(label in (0, 1))},
            fields={"source": "davidson"},
            targets=targets,
        )


def _sms(folder: Path) -> Iterator[LabelledPost]:
    for row in _rows(folder / "SMSSpamCollection.tsv", delimiter="\t"):
        label = _field(row, "Label", folder).strip().lower()
        if label not in ("ham", "spam"):
            raise DatasetError(f"{folder}: label {label!r} is neither ham nor spam")
        yield LabelledPost(_field(row, "SMS", folder), {"spam": int(label == "spam")}, {"source": "sms"})


def _ethos(folder: Path) -> Iterator[LabelledPost]:
    posts: dict[str, LabelledPost] = {}
    binary = folder / "Ethos_Dataset_Binary.csv"
    if binary.is_file():
        for row in _rows(binary, delimiter=";"):
            text = _field(row, "comment", folder)
            share = min(1.0, max(0.0, float(_field(row, "isHate", folder))))
            post = posts.setdefault(text, LabelledPost(text, {}, {"source": "ethos"}))
            post.labels["hate_speech"], post.targets["hate_speech"] = int(share >= SCORE_THRESHOLD), share
    multi = folder / "Ethos_Dataset_Multi_Label.csv"
    if multi.is_file():
        for row in _rows(multi, delimiter=";"):
            text = _field(row, "comment", folder)
            post = posts.setdefault(text, LabelledPost(text, {"hate_speech": 1}, {"source": "ethos"}))
            violence = min(1.0, max(0.0, float(_field(row, "violence", folder))))
            post.labels["violence"], post.targets["violence"] = int(violence >= SCORE_THRESHOLD), violence
            shares = {group: float(row.get(group) or 0) for group in ETHOS_GROUPS}
            group, share = max(shares.items(), key=lambda item: item[1])
            post.fields["target_group"] = group if share >= SCORE_THRESHOLD else "none"
    if not posts:
        raise DatasetError(f"{folder} has neither Ethos_Dataset_Binary.csv nor Ethos_Dataset_Multi_Label.csv")
    yield from posts.values()


def _liar(folder: Path) -> Iterator[LabelledPost]:
    files = [folder / f"{split}.tsv" for split in ("train", "valid", "test") if (folder / f"{split}.tsv").is_file()]
    if not files:
        raise DatasetError(f"{folder} has none of train.tsv, valid.tsv, test.tsv")
    for path in files:
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if len(row) < 3:
                    raise DatasetError(f"{path}:{number}: expected id, label and statement columns")
                yield LabelledPost(
                    text=row[2],
                    labels={"misinformation": int(row[1].strip() in LIAR_MISINFORMATION)},
                    fields={"source": "liar", "split": path.stem, "truth_rating": row[1].strip()},
                )


def _jigsaw(folder: Path) -> Iterator[LabelledPost]:
    for row in _rows(folder / "test_examples.csv", delimiter=","):
        flag = {name: int(_field(row, name, folder)) for name in ("toxic", "obscene", "threat", "insult")}
        yield LabelledPost(
            text=_field(row, "comment_text", folder),
            labels={
                "hate_speech": int(_field(row, "identity_hate", folder)),
                "harassment": int(flag["toxic"] or flag["insult"] or flag["obscene"]),
                "violence": flag["threat"],
            },
            fields={"source": "jigsaw"},
        )


READERS: dict[str, Callable[[Path], Iterator[LabelledPost]]] = {
    "davidson_hate_offensive": _davidson,
    "sms_spam_collection": _sms,
    "ethos": _ethos,
    "liar_misinformation": _liar,
    "jigsaw_toxic_sample_ibm": _jigsaw,
}


def _rows(path: Path, *, delimiter: str) -> Iterator[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle, delimiter=delimiter)


def _field(row: dict[str, str], name: str, folder: Path) -> str:
    value = row.get(name)
    if value is None:
        raise DatasetError(f"{folder}: a row has no {name!r} column (columns: {', '.join(row)})")
    return value


@dataclass
class EvaluationItem:
    """One line of an evaluation JSONL: text, an optional image path (relative to the file), labels, other fields."""

    text: str
    image: Path | None
    labels: dict[str, int]
    fields: dict[str, object]
    line: int


def read_evaluation_jsonl(path: Path) -> list[EvaluationItem]:
    """Every line of ``path`` (blank lines skipped); a line that is not such an object is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} is not a file")
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: expected an object, got {type(record).__name__}")
            text, image, labels = record.get("text", ""), record.get("image"), record.get("labels")
            if not isinstance(text, str) or (image is not None and not isinstance(image, str)):
                raise DatasetError(f"{path}:{number}: text and image must be strings")
            if not isinstance(labels, dict) or not all(value in (0, 1, True, False) for value in labels.values()):
                raise DatasetError(f"{path}:{number}: labels must be an object of category -> 0 or 1")
            if not text.strip() and not image:
                raise DatasetError(f"{path}:{number}: an item needs text or an image")
            fields = {key: value for key, value in record.items() if key not in ("text", "image", "labels")}
            items.append(
                EvaluationItem(
                    text=text,
                    image=(path.parent / image) if image else None,
                    labels={str(name): int(value) for name, value in labels.items()},
                    fields=fields,
                    line=number,
                )
            )
    return items
