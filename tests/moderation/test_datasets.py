"""Reading the moderation dataset layouts (small files written here, not the real datasets) and exporting JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.moderation.functional_suite import GROUPS
from ml.tasks.moderation_datasets import DatasetError, read_moderation_dir


def write_layouts(root: Path) -> Path:
    (root / "davidson_hate_offensive").mkdir(parents=True)
    (root / "davidson_hate_offensive" / "labeled_data.csv").write_text(
        ",count,hate_speech,offensive_language,neither,class,tweet\n"
        '1,3,3,0,0,0,"you people are vermin"\n2,3,0,3,0,1,shut up idiot\n3,3,0,0,3,2,"nice day, friends"\n'
        "4,3,1,2,0,1,go back where you came from\n"
    )
    (root / "sms_spam_collection").mkdir()
    (root / "sms_spam_collection" / "SMSSpamCollection.tsv").write_text(
        "Label\tSMS\nham\tsee you at 6\nspam\tWIN a prize now!!\n"
    )
    (root / "ethos").mkdir()
    (root / "ethos" / "Ethos_Dataset_Binary.csv").write_text("comment;isHate\nthey are all thieves;0.9\nlovely;0.1\n")
    (root / "ethos" / "Ethos_Dataset_Multi_Label.csv").write_text(
        "comment;violence;directed_vs_generalized;gender;race;national_origin;disability;religion;sexual_orientation\n"
        "they are all thieves;0.7;0;0;0.8;0;0;0;0\n"
    )
    (root / "liar_misinformation").mkdir()
    (root / "liar_misinformation" / "train.tsv").write_text(
        "1.json\tpants-fire\tThe moon is cheese.\tscience\n2.json\ttrue\tWater is wet.\tscience\n"
    )
    return root


def test_every_layout_becomes_labelled_posts(tmp_path: Path) -> None:
    posts = {post.text: post for post in read_moderation_dir(write_layouts(tmp_path))}

    assert posts["you people are vermin"].labels == {"hate_speech": 1, "harassment": 1}
    assert posts["shut up idiot"].labels == {"hate_speech": 0, "harassment": 1}
    assert posts["nice day, friends"].labels == {"hate_speech": 0, "harassment": 0}
    assert posts["WIN a prize now!!"].labels == {"spam": 1} and posts["see you at 6"].labels == {"spam": 0}
    thieves = posts["they are all thieves"]  # in both ETHOS files: one post, labels merged
    assert thieves.labels == {"hate_speech": 1, "violence": 1} and thieves.fields["target_group"] == "race"
    assert posts["lovely"].labels == {"hate_speech": 0}
    assert posts["The moon is cheese."].labels == {"misinformation": 1}
    assert posts["Water is wet."].fields == {"source": "liar", "split": "train", "truth_rating": "true"}
    assert len(posts) == 10
    # Annotators' shares are training targets beside the majority labels.
    split = posts["go back where you came from"]
    assert split.labels == {"hate_speech": 0, "harassment": 1}
    assert split.targets == {"hate_speech": pytest.approx(1 / 3), "harassment": 1.0}
    assert thieves.targets == {"hate_speech": 0.9, "violence": 0.7} and posts["lovely"].targets == {"hate_speech": 0.1}
    assert posts["Water is wet."].targets == {}


def test_a_directory_without_known_folders_is_refused(tmp_path: Path) -> None:
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DatasetError, match="none of the known folders"):
        read_moderation_dir(tmp_path)


def test_a_file_without_its_columns_says_which(tmp_path: Path) -> None:
    (tmp_path / "sms_spam_collection").mkdir()
    (tmp_path / "sms_spam_collection" / "SMSSpamCollection.tsv").write_text("kind\tmessage\nham\thi\n")
    with pytest.raises(DatasetError, match="no 'Label' column"):
        read_moderation_dir(tmp_path)


def test_export_writes_one_json_object_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "moderation.jsonl"

    call_command("moderation_export_jsonl", "--data", str(write_layouts(tmp_path / "data")), "--out", str(out))

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 10 and "wrote 10 items" in capsys.readouterr().out
    assert {"text": "WIN a prize now!!", "labels": {"spam": 1}, "source": "sms"} in lines
    with pytest.raises(CommandError, match="not a directory"):
        call_command("moderation_export_jsonl", "--data", str(tmp_path / "missing"), "--out", str(out))


def test_the_functional_suite_contrasts_hate_with_the_same_words_for_every_target_group(tmp_path: Path) -> None:
    out = tmp_path / "suite.jsonl"
    call_command("moderation_export_jsonl", "--functional-suite", "--out", str(out))
    cases = [json.loads(line) for line in out.read_text().splitlines()]

    groups = {case["target_group"] for case in cases if case["target_group"] is not None}
    assert groups == set(GROUPS) and all(set(case["labels"]) == {"hate_speech"} for case in cases)
    for group in groups:
        labels = [case["labels"]["hate_speech"] for case in cases if case["target_group"] == group]
        assert 0 in labels and 1 in labels, f"{group}: hateful cases and their contrasts"
    by_functionality = {case["functionality"]: case["labels"]["hate_speech"] for case in cases}
    assert by_functionality["dehumanisation"] == 1 and by_functionality["counter_quote"] == 0
    assert by_functionality["profanity_nonhate"] == 0
    assert len({case["text"] for case in cases}) == len(cases), "no case twice"
    with pytest.raises(CommandError, match="--data"):
        call_command("moderation_export_jsonl", "--out", str(out))
