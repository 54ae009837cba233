"""Deobfuscation rewrites the spellings that hide a word, and leaves numbers, handles and ordinary words alone."""

from __future__ import annotations

import pytest

from ml.tasks.obfuscation import deobfuscate


@pytest.mark.parametrize(
    ("written", "plain"),
    [
        ("They are d1sgusting.", "They are disgusting."),
        ("I h8 them so much", "I hate them so much"),
        ("fr33 entry", "free entry"),
        ("a$$hole, sh!t, idi0t!!!", "asshole, shit, idiot!!!"),
        ("I h a t e them", "I hate them"),
        ("k i l l them", "kill them"),
        ("h.a.t.e you", "hate you"),
        ("soooo goood", "soo good"),
    ],
)
def test_hidden_spellings_are_written_plainly(written: str, plain: str) -> None:
    assert deobfuscate(written) == plain


@pytest.mark.parametrize(
    "text",
    [
        "txt 80082 for 150p",
        "covid19 cases on the 1st",
        "4u @user £1000 $100 2nite",
        "RT @user: I am a teacher",
        "good coffee, see you at 8",
        "contact U!U have WON, the cost has risen$30",
        "the H1N1 vaccine, an MP3 player",
        "@sybilll #xxx www.example.com http://a.bbb.com/h8",
    ],
)
def test_numbers_handles_and_ordinary_words_are_left_alone(text: str) -> None:
    assert deobfuscate(text) == text
