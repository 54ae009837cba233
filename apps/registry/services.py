"""Writes for the model registry; each is one transaction with its audit event."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.registry.models import ModelStatus, ModelVersion
from ml.sources import ChecksumMismatch, ModelNotInstalled, verify_checksum
from ml.specs import InvalidSpec, ModelSpec


class RegistryError(ValueError):
    """A registry operation that the current state does not allow; the message says why."""


@transaction.atomic
def model_version_register(
    *,
    spec: dict[str, Any],
    actor: User | None,
    metrics: dict[str, Any] | None = None,
    notes: str = "",
) -> ModelVersion:
    try:
        parsed = ModelSpec.from_dict(spec)
    except (InvalidSpec, TypeError) as error:
        raise RegistryError(str(error)) from error
    if ModelVersion.objects.filter(name=parsed.name, version=parsed.version).exists():
        raise RegistryError(f"{parsed.name}@{parsed.version} is already registered")
    version = ModelVersion.objects.create(
        name=parsed.name,
        version=parsed.version,
        family=parsed.family,
        source=parsed.source,
        sha256=parsed.sha256,
        spec=parsed.to_dict(),
        metrics=metrics or {},
        created_by=actor,
        notes=notes,
    )
    audit_record(actor=actor, action="model.register", target=version, payload={"label": version.label})
    return version


@transaction.atomic
def model_version_verify(*, version: ModelVersion, actor: User | None) -> ModelVersion:
    """Recompute the weights' sha256 and record whether it matches the registered one."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    try:
        path = verify_checksum(ModelSpec.from_dict(version.spec))
        ok, detail = True, f"sha256 matches ({path})"
    except (ChecksumMismatch, ModelNotInstalled, ValueError) as error:
        ok, detail = False, str(error)
    version.verified_at = timezone.now()
    version.verified_ok = ok
    version.save(update_fields=["verified_at", "verified_ok"])
    audit_record(actor=actor, action="model.verify", target=version, payload={"ok": ok, "detail": detail})
    return version


@transaction.atomic
def model_version_promote(*, version: ModelVersion, actor: User | None, reason: str = "") -> ModelVersion:
    """Make ``version`` the champion of its name; the previous champion becomes a candidate again."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.status == ModelStatus.CHAMPION:
        raise RegistryError(f"{version.label} is already the champion")
    if version.status == ModelStatus.RETIRED:
        raise RegistryError(f"{version.label} is retired; register a new version instead")
    if version.verified_ok is False:
        raise RegistryError(f"{version.label} failed its checksum verification")
    previous = ModelVersion.objects.select_for_update().filter(name=version.name, status=ModelStatus.CHAMPION).first()
    now = timezone.now()
    if previous is not None:
        previous.status = ModelStatus.CANDIDATE
        previous.demoted_at = now
        previous.save(update_fields=["status", "demoted_at"])
    version.status = ModelStatus.CHAMPION
    version.promoted_at = now
    try:
        with transaction.atomic():
            version.save(update_fields=["status", "promoted_at"])
    except IntegrityError as error:  # a concurrent promotion won the race
        raise RegistryError(f"another version of {version.name} was promoted at the same time") from error
    audit_record(
        actor=actor,
        action="model.promote",
        target=version,
        payload={"label": version.label, "previous": previous.label if previous else None, "reason": reason},
    )
    return version


@transaction.atomic
def model_rollback(*, name: str, actor: User | None) -> ModelVersion:
    """Make the most recently demoted (non-retired) version of ``name`` champion again."""
    previous = (
        ModelVersion.objects.filter(name=name, status=ModelStatus.CANDIDATE, demoted_at__isnull=False)
        .order_by("-demoted_at")
        .first()
    )
    if previous is None:
        raise RegistryError(f"{name} has no earlier champion to roll back to")
    return model_version_promote(version=previous, actor=actor, reason="rollback")


@transaction.atomic
def model_version_retire(*, version: ModelVersion, actor: User | None) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.status == ModelStatus.CHAMPION:
        raise RegistryError(f"{version.label} is the champion; promote another version or roll back first")
    if version.status != ModelStatus.RETIRED:
        version.status = ModelStatus.RETIRED
        version.save(update_fields=["status"])
        audit_record(actor=actor, action="model.retire", target=version, payload={"label": version.label})
    return version
