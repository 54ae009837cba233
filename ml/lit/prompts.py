"""Prompts that turn an attribute value into text for the locked text tower.

Training and zero-shot evaluation use the same templates, so a new catalog's vocabulary (values never seen in
training) is classified by the same mechanism. Values are split from CamelCase and plural-s joined words
("Tshirts", "Flip Flops") only by the text tower's own tokeniser: they are passed as written.
"""

from __future__ import annotations

ATTRIBUTE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "articleType": ("{}", "a photo of {}", "a product photo of {}"),
    "baseColour": ("{} colour", "a {} product", "something that is {}"),
    "gender": ("{}", "a product for {}", "fashion for {}"),
    "usage": ("{} wear", "{} style", "for {} use"),
}
DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "a photo of {}")


def attribute_prompts(attribute: str, value: str) -> list[str]:
    return [template.format(value) for template in ATTRIBUTE_TEMPLATES.get(attribute, DEFAULT_TEMPLATES)]
