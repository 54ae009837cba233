"""Model registry API (ml_admin writes; ml_admin and auditor read; API keys with models:read read)."""

from __future__ import annotations

from collections.abc import Callable

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import request_user
from apps.accounts.roles import Role
from apps.registry import services
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_versions

READERS: frozenset[str] = frozenset({Role.ML_ADMIN, Role.AUDITOR})
WRITERS: frozenset[str] = frozenset({Role.ML_ADMIN})


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    label = serializers.CharField()  # type: ignore[assignment]  # the model's property, not Field.label
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "label",
            "name",
            "version",
            "family",
            "source",
            "sha256",
            "spec",
            "metrics",
            "status",
            "created_by",
            "notes",
            "created_at",
            "verified_at",
            "verified_ok",
            "promoted_at",
            "demoted_at",
        ]


class ModelVersionListCreateApi(APIView):
    allowed_roles = READERS
    method_roles = {"POST": WRITERS}
    required_scopes = {"GET": "models:read"}

    class InputSerializer(serializers.Serializer):
        spec = serializers.JSONField(help_text="a model spec: name, version, family, source, sha256, ...")
        metrics = serializers.JSONField(required=False, default=dict)
        notes = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(responses=ModelVersionOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        versions = model_versions(
            name=request.query_params.get("name", ""), status=request.query_params.get("status", "")
        )
        return Response(ModelVersionOutputSerializer(versions, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: ModelVersionOutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not isinstance(data.validated_data["spec"], dict):
            raise ValidationError({"spec": ["must be a JSON object"]})
        try:
            version = services.model_version_register(actor=request_user(request), **data.validated_data)
        except services.RegistryError as error:
            raise ValidationError({"spec": [str(error)]}) from error
        return Response(ModelVersionOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class ModelVersionDetailApi(APIView):
    allowed_roles = READERS
    required_scopes = {"GET": "models:read"}

    @extend_schema(responses=ModelVersionOutputSerializer)
    def get(self, request: Request, version_id: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=version_id)
        return Response(ModelVersionOutputSerializer(version).data)


def _action_api(action: Callable[..., ModelVersion], doc: str) -> type[APIView]:
    class ModelVersionActionApi(APIView):
        allowed_roles = WRITERS

        @extend_schema(request=None, responses=ModelVersionOutputSerializer, description=doc)
        def post(self, request: Request, version_id: int) -> Response:
            version = get_object_or_404(ModelVersion, pk=version_id)
            try:
                version = action(version=version, actor=request_user(request))
            except services.RegistryError as error:
                raise ValidationError({"status": [str(error)]}) from error
            return Response(ModelVersionOutputSerializer(version).data)

    ModelVersionActionApi.__name__ = f"ModelVersion{action.__name__.split('_')[-1].title()}Api"
    return ModelVersionActionApi


ModelVersionVerifyApi = _action_api(services.model_version_verify, "Recompute the weights' sha256.")
ModelVersionPromoteApi = _action_api(services.model_version_promote, "Make this version its name's champion.")
ModelVersionRetireApi = _action_api(services.model_version_retire, "Retire a non-champion version.")


class ModelRollbackApi(APIView):
    allowed_roles = WRITERS

    @extend_schema(request=None, responses=ModelVersionOutputSerializer)
    def post(self, request: Request, name: str) -> Response:
        if not ModelVersion.objects.filter(name=name).exists():
            raise NotFound(f"no model named {name!r}")
        try:
            version = services.model_rollback(name=name, actor=request_user(request))
        except services.RegistryError as error:
            raise ValidationError({"name": [str(error)]}) from error
        return Response(ModelVersionOutputSerializer(version).data)
