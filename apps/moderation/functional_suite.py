"""A functional test suite for hate speech, written for this project in the manner of HateCheck (Röttger et al.,
2021: one templated case per functionality and target group), since no such suite ships with ``shared/data``.

Each case says what a classifier must get right: hateful functionalities (derogation, dehumanisation, threats,
hateful questions and opinions, hate with profanity or obfuscated spelling, hate referred to by a pronoun) are
``hate_speech`` 1; contrasts that share their words or targets are 0: negated hate, positive and neutral statements
about a group, counter-speech quoting or naming hate, profanity and abuse aimed at no protected group. A model that
flags identity words rather than attacks fails the contrasts, and ``evaluate moderation --by target_group`` shows
which groups it over- or under-flags. No model trains on it; it is wording of our own, under the project's licence,
and no slurs are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The target groups: (plural noun phrase, capitalised at a sentence start where the template needs it).
GROUPS: dict[str, str] = {
    "women": "women",
    "trans people": "trans people",
    "gay people": "gay people",
    "black people": "black people",
    "disabled people": "disabled people",
    "muslims": "Muslims",
    "immigrants": "immigrants",
}

# functionality -> (hate_speech label, templates); {g} is the group, {G} the same capitalised.
GROUP_TEMPLATES: dict[str, tuple[int, tuple[str, ...]]] = {
    "derogation_emotion": (1, ("I hate {g}.", "I really can't stand {g}, they make me sick.")),
    "derogation_description": (1, ("{G} are disgusting.", "{G} are all liars and cheats, every single one.")),
    "dehumanisation": (1, ("{G} are vermin.", "{G} are nothing but animals and should be treated like it.")),
    "threat_direct": (1, ("I am going to hurt the next one of those {g} I see.", "We will make {g} suffer.")),
    "threat_normative": (1, ("{G} should all be locked up.", "{G} deserve to be wiped out.")),
    "hate_question": (1, ("Why are {g} so stupid?", "Why can't {g} just disappear from our country?")),
    "hate_opinion": (1, ("I think {g} are a plague on this country.", "In my opinion {g} are worthless.")),
    "hate_pronoun": (
        1,
        ("I met some {g} yesterday. They are such scum.", "Don't talk to me about {g}. I despise them."),
    ),
    "hate_profanity": (1, ("Fuck all {g}.", "{G} are fucking worthless.")),
    "hate_spelling": (1, ("{G} are d1sgusting.", "I h8 {g} so much.")),
    "negated_hate": (0, ("I don't hate {g}.", "{G} are not disgusting at all.")),
    "positive_identity": (0, ("I love {g}.", "{G} are wonderful and I am proud to stand with them.")),
    "neutral_identity": (0, ("I had lunch with two {g} from work today.", "{G} live in every city in this country.")),
    "counter_quote": (
        0,
        ('Saying "{g} are vermin" is disgusting and wrong.', 'If you say "I hate {g}", you are the problem.'),
    ),
    "counter_reference": (0, ("Stop calling {g} animals, it is hateful.", "Threatening {g} is never acceptable.")),
}
# Functionalities without a target group: abuse and profanity that are not hate speech.
UNTARGETED_CASES: dict[str, tuple[str, ...]] = {
    "profanity_nonhate": (
        "Fuck yes, what a game!",
        "This weather is shit today.",
        "Holy shit, I passed my exam!",
        "Damn, that pizza was good.",
    ),
    "abuse_object": ("I hate Mondays.", "Traffic jams are disgusting.", "This phone is worthless garbage."),
    "abuse_individual": ("You are a liar and a cheat.", "Shut up, you absolute idiot.", "My boss is a clown."),
}


@dataclass(frozen=True)
class Case:
    text: str
    hateful: int
    functionality: str
    target_group: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "labels": {"hate_speech": self.hateful},
            "functionality": self.functionality,
            "target_group": self.target_group,
            "source": "functional-suite",
        }


def cases() -> list[Case]:
    suite = []
    for functionality, (hateful, templates) in GROUP_TEMPLATES.items():
        for key, group in GROUPS.items():
            for template in templates:
                text = template.format(g=group, G=group[0].upper() + group[1:])
                suite.append(Case(text, hateful, functionality, key))
    for functionality, texts in UNTARGETED_CASES.items():
        suite.extend(Case(text, 0, functionality, None) for text in texts)
    return suite


def write_suite(out: Path) -> int:
    """Write the suite as evaluation JSONL (``evaluate moderation`` reads it); returns the number of cases."""
    out.parent.mkdir(parents=True, exist_ok=True)
    suite = cases()
    with out.open("w", encoding="utf-8") as handle:
        for case in suite:
            handle.write(json.dumps(case.to_json(), ensure_ascii=False) + "\n")
    return len(suite)
