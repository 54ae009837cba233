"""Undoing the spellings that hide a word from a text reader: leetspeak, spaced-out letters, stretched letters.

"I h8 them", "they are d1sgusting", "h a t e", "haaaate": a reader that has learnt the word "hate" misses each of
these, and people who post hate use them for exactly that reason. ``deobfuscate`` rewrites them to the plain word
and leaves everything else as it was. It is conservative, because a wrong rewrite costs the reader a word it knew:

- a digit or symbol counts as a letter (``LEET``; "8" after a letter as "ate": h8, gr8) only when a letter comes
  before it and the whole word is letters afterwards, so "fr33" and "d1sgusting" change while "150p", "covid19",
  "1st", "4u", "@user" and "£1000" stay;
- three or more single letters separated by spaces, or by one repeated mark ("h a t e", "h.a.t.e"), are joined
  (a leading "I" or "a" stays apart: "I h a t e" -> "I hate");
- a letter repeated three or more times is cut to two ("soooo" -> "soo", "good" stays).

The moderation model's word n-grams and its text tower read the rewritten text; its character n-grams read the
text as written, so a spelling that is itself a signal ("fr33 entry" in spam) is still seen.
"""

from __future__ import annotations

import re

LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
_WORD = re.compile(r"[^\s]+")
_SPACED = re.compile(r"(?<!\S)[^\W\d_](?: [^\W\d_]){2,}(?!\S)")
_MARKED = re.compile(r"(?<![^\W_])[^\W\d_]([.\-_*])[^\W\d_](?:\1[^\W\d_])+(?![^\W_])")
_STRETCHED = re.compile(r"([^\W\d_])\1{2,}")
_EDGE = re.compile(r"^([^\w@$]*)(.*?)([^\w@$]*)$", re.DOTALL)


def deobfuscate(text: str) -> str:
    """``text`` with leetspeak words, spaced-out and stretched letters written plainly (see the module doc)."""
    text = _WORD.sub(lambda match: _unleet(match.group()), text)
    text = _SPACED.sub(_joined, text)
    text = _MARKED.sub(lambda match: match.group().replace(match.group(1), ""), text)
    return _STRETCHED.sub(r"\1\1", text)


def _joined(match: re.Match[str]) -> str:
    """Spaced-out letters as one word; a leading "I" or "a" stays a word of its own ("I h a t e" -> "I hate")."""
    letters = match.group().split(" ")
    if len(letters) > 3 and letters[0] in ("I", "a", "A"):
        return letters[0] + " " + "".join(letters[1:])
    return "".join(letters)


def _unleet(token: str) -> str:
    """One whitespace-separated token, its surrounding punctuation kept, its word read as leetspeak if that makes it
    all letters."""
    match = _EDGE.match(token)
    if match is None:  # pragma: no cover - the pattern matches every string
        return token
    before, word, after = match.groups()
    if not any(char in LEET or char == "8" for char in word):
        return token
    out: list[str] = []
    for char in word:
        if out and out[-1].isalpha() and char == "8":
            out.append("ate")
        elif out and out[-1].isalpha() and char in LEET:
            out.append(LEET[char])
        else:
            out.append(char)
    plain = "".join(out)
    return before + plain + after if plain.isalpha() else token
