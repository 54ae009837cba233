"""Undoing the spellings that hide a word from a text reader: leetspeak, spaced-out letters, stretched letters.

"I h8 them", "they are d1sgusting", "h a t e", "haaaate": a reader that has learnt the word "hate" misses each of
these, and people who post hate use them for exactly that reason. ``deobfuscate`` rewrites them to the plain word
and leaves everything else as it was. It is conservative, because a wrong rewrite costs the reader a word it knew:

- a digit or symbol counts as a letter (``LEET``; "8" after a letter as "ate": h8, gr8) only when a letter comes
  before it and the whole word is letters afterwards, so "fr33" and "d1sgusting" change while "150p", "covid19",
  "1st", "4u", "@user", "£1000", "risen$30", "U!U" and codes in capitals ("H1N1", "MP3") stay;
- three or more single letters separated by spaces, or by one repeated mark ("h a t e", "h.a.t.e"), are joined
  (a leading "I" or "a" stays apart: "I h a t e" -> "I hate");
- a letter repeated three or more times is cut to two ("soooo" -> "soo", "good" stays).

Handles, hashtags and web addresses ("@user", "#tag", "www.example.com") are left as they are.

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
    text = _WORD.sub(lambda match: _plain_token(match.group()), text)
    text = _SPACED.sub(_joined, text)
    return _MARKED.sub(lambda match: match.group().replace(match.group(1), ""), text)


def _plain_token(token: str) -> str:
    """One whitespace-separated token unleeted and unstretched; handles, hashtags and web addresses as they are."""
    if token.startswith(("@", "#")) or "://" in token or token.lower().startswith("www."):
        return token
    return _STRETCHED.sub(r"\1\1", _unleet(token))


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
    if not any(char in LEET or char == "8" for char in word) or _is_code(word):
        return token
    out: list[str] = []
    for index, char in enumerate(word):
        following = word[index + 1 : index + 2]
        after_letter = bool(out) and out[-1][-1].isalpha()
        if after_letter and char == "8":
            out.append("ate")
        elif after_letter and char in LEET and _reads_as_letter(char, out[-1][-1], following):
            out.append(LEET[char])
        else:
            out.append(char)
    plain = "".join(out)
    return before + plain + after if plain.isalpha() else token


def _is_code(word: str) -> bool:
    """A code such as H1N1, MP3 or B52: digits among at most three letters, all capitals."""
    letters = [char for char in word if char.isalpha()]
    return any(char.isdigit() for char in word) and 0 < len(letters) <= 3 and all(c.isupper() for c in letters)


def _reads_as_letter(char: str, previous: str, following: str) -> bool:
    """Whether a leet character between ``previous`` and ``following`` stands for a letter: "!" only inside a
    lower-case word ("sh!t", not "U!U"), "$" not before a digit ("a$$", not "risen$30")."""
    if char == "!":
        return previous.islower() and following.islower()
    if char == "$":
        return not following.isdigit()
    return True
