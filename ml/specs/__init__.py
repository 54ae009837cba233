"""Model specs as data: one JSON file per model (family, source, sha256, preprocessing, labels, licence)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).resolve().parent
REQUIRED_FIELDS = ("name", "version", "family", "source", "sha256")


class UnknownSpec(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class InvalidSpec(ValueError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    family: str
    source: str
    sha256: str
    task: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    licence: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        missing = [name for name in REQUIRED_FIELDS if not data.get(name)]
        if missing:
            raise InvalidSpec(f"spec is missing {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "extra"}
        return {**data, **self.extra}


PACKS = ("offline", "full")  # "tiny" specs are built on the fly by ml.tiny, never shipped as files


def list_specs(*, pack: str | None = None) -> list[str]:
    """Names of the specs shipped in ml/specs, optionally only those of one pack."""
    names = sorted(path.stem for path in SPEC_DIR.glob("*.json"))
    if pack is None:
        return names
    return [name for name in names if load_spec(name).extra.get("pack") == pack]


def load_spec(name: str) -> ModelSpec:
    path = SPEC_DIR / f"{name}.json"
    if not path.exists():
        raise UnknownSpec(f"unknown model spec {name!r}; known specs: {', '.join(list_specs())}")
    return ModelSpec.from_dict(json.loads(path.read_text()))
