from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.registry.models import ModelStatus, ModelVersion
from apps.registry.selectors import model_champion, model_metrics_compare
from apps.registry.services import (
    RegistryError,
    model_rollback,
    model_version_promote,
    model_version_register,
    model_version_retire,
    model_version_verify,
)
from ml.specs import load_spec

pytestmark = pytest.mark.django_db


def _register(version: str, **overrides) -> ModelVersion:
    spec = {**load_spec("minilm-l6-v2").to_dict(), "version": version, **overrides}
    return model_version_register(spec=spec, actor=None, metrics={"recall": {"at10": float(version[0]) / 10}})


def test_promote_rollback_retire_keep_one_champion() -> None:
    v1, v2 = _register("1.0"), _register("2.0")
    model_version_promote(version=v1, actor=None)
    model_version_promote(version=v2, actor=None)
    v1.refresh_from_db()
    assert model_champion(name=v1.name) == v2 and v1.status == ModelStatus.CANDIDATE
    assert model_rollback(name=v1.name, actor=None) == v1
    v2.refresh_from_db()
    assert model_champion(name=v1.name) == v1 and v2.status == ModelStatus.CANDIDATE
    with pytest.raises(RegistryError, match="is the champion"):
        model_version_retire(version=v1, actor=None)
    model_version_retire(version=v2, actor=None)
    with pytest.raises(RegistryError, match="retired"):
        model_version_promote(version=v2, actor=None)
    actions = list(AuditEvent.objects.filter(target_type="registry.modelversion").values_list("action", flat=True))
    assert actions.count("model.promote") == 3 and actions.count("model.retire") == 1


def test_database_allows_one_champion_per_name() -> None:
    v1, v2 = _register("1.0"), _register("2.0")
    ModelVersion.objects.filter(pk=v1.pk).update(status=ModelStatus.CHAMPION)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=v2.pk).update(status=ModelStatus.CHAMPION)


def test_verify_detects_a_checksum_mismatch() -> None:
    good = model_version_verify(version=_register("1.0"), actor=None)
    assert good.verified_ok is True
    bad = model_version_verify(version=_register("2.0", sha256="0" * 64), actor=None)
    assert bad.verified_ok is False
    with pytest.raises(RegistryError, match="checksum"):
        model_version_promote(version=bad, actor=None)


def test_register_refuses_duplicates_and_incomplete_specs(client_for) -> None:
    _register("1.0")
    with pytest.raises(RegistryError, match="already registered"):
        _register("1.0")
    client = client_for(Role.ML_ADMIN)
    response = client.post("/api/v1/models", {"spec": {"name": "x"}}, format="json")
    assert response.status_code == 400 and "missing" in response.json()["error"]["fields"]["spec"][0]
    assert ModelVersion.objects.count() == 1


def test_compare_metrics() -> None:
    rows = model_metrics_compare(a=_register("1.0"), b=_register("3.0"))
    assert rows == [{"metric": "recall.at10", "a": 0.1, "b": 0.3, "delta": pytest.approx(0.2)}]


def test_console_pages(client_for) -> None:
    v1 = _register("1.0")
    client = client_for(Role.ML_ADMIN)
    assert "minilm-l6-v2" in client.get("/registry/").content.decode()
    response = client.post(f"/registry/{v1.pk}/promote/", follow=True)
    assert "status champion" in response.content.decode()
    assert client.post("/registry/register/", {"packaged_spec": "minilm-l6-v2"}).status_code == 302
    registered = client.post("/registry/register/", {"packaged_spec": "minilm-l6-v2"})
    assert registered.status_code == 400 and "already registered" in registered.content.decode()
    compare = client.get("/registry/compare/", {"a": v1.pk, "b": _register("2.0").pk})
    assert compare.status_code == 200 and "recall.at10" in compare.content.decode()
