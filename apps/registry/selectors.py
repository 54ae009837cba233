from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.registry.models import ModelStatus, ModelVersion
from ml.specs import ModelSpec, UnknownSpec, list_specs, load_spec


class NoChampion(LookupError):
    pass


def model_versions(*, name: str = "", status: str = "") -> QuerySet[ModelVersion]:
    versions = ModelVersion.objects.all()
    if name:
        versions = versions.filter(name=name)
    if status:
        versions = versions.filter(status=status)
    return versions.order_by("name", "-created_at")


def model_champion(*, name: str) -> ModelVersion:
    champion = ModelVersion.objects.filter(name=name, status=ModelStatus.CHAMPION).first()
    if champion is None:
        raise NoChampion(f"no champion version of model {name!r}; promote one in the model console")
    return champion


def model_version_by_label(*, label: str) -> ModelVersion:
    """``NAME@VERSION`` -> that version; ``NAME`` -> its champion."""
    name, _, version = label.partition("@")
    if not version:
        return model_champion(name=name)
    found = ModelVersion.objects.filter(name=name, version=version).first()
    if found is None:
        raise UnknownSpec(f"{label} is not registered")
    return found


def model_spec_lookup(*, reference: str) -> ModelSpec:
    """The spec a name refers to: ``NAME@VERSION`` (registered), a packaged spec in ml/specs, or a registered
    model's champion (else its newest version). Unknown names raise ``UnknownSpec`` listing the known ones."""
    if "@" in reference:
        return ModelSpec.from_dict(model_version_by_label(label=reference).spec)
    if reference in list_specs():
        return load_spec(reference)
    registered = ModelVersion.objects.filter(name=reference).order_by("-status", "-created_at")
    version = registered.filter(status=ModelStatus.CHAMPION).first() or registered.first()
    if version is not None:
        return ModelSpec.from_dict(version.spec)
    known = sorted(set(list_specs()) | set(ModelVersion.objects.values_list("name", flat=True)))
    raise UnknownSpec(f"unknown model {reference!r}; known models: {', '.join(known)}")


def model_metrics_compare(*, a: ModelVersion, b: ModelVersion) -> list[dict[str, Any]]:
    """Rows of (metric, value in a, value in b, b - a) over the union of both versions' numeric metrics."""
    rows = []
    for metric in sorted(set(_flatten(a.metrics)) | set(_flatten(b.metrics))):
        va, vb = _flatten(a.metrics).get(metric), _flatten(b.metrics).get(metric)
        delta = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
        rows.append({"metric": metric, "a": va, "b": vb, "delta": delta})
    return rows


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
