"""Jobs API: submit, list, read (with result, model version and audit events), retry."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import request_user
from apps.accounts.roles import ALL_ROLES, Role
from apps.jobs import services
from apps.jobs.kinds import JOB_KINDS
from apps.jobs.models import InferenceJob
from apps.jobs.selectors import job_audit_events, jobs_visible_to
from apps.registry.selectors import NoChampion

SUBMITTERS: frozenset[str] = frozenset({Role.MODERATOR, Role.CLINICIAN, Role.MERCHANDISER, Role.ML_ADMIN})


class JobEventSerializer(serializers.Serializer):
    action = serializers.CharField()
    created_at = serializers.DateTimeField()
    actor_username = serializers.CharField()
    payload = serializers.JSONField()


class JobOutputSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.label")
    model_version_id = serializers.IntegerField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    run_seconds = serializers.FloatField(allow_null=True)

    class Meta:
        model = InferenceJob
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "input_sha256",
            "model_version",
            "model_version_id",
            "result",
            "error",
            "attempts",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "run_seconds",
        ]


class JobDetailSerializer(JobOutputSerializer):
    events = serializers.SerializerMethodField()

    class Meta(JobOutputSerializer.Meta):
        fields = [*JobOutputSerializer.Meta.fields, "input", "events"]

    @extend_schema(responses=JobEventSerializer(many=True))
    def get_events(self, job: InferenceJob) -> list[dict]:
        return JobEventSerializer(job_audit_events(job=job), many=True).data  # type: ignore[return-value]


class JobListCreateApi(ListAPIView):
    """``GET``: jobs you can see, newest first. ``POST``: submit a job (``200`` if the same input already ran)."""

    allowed_roles = ALL_ROLES
    method_roles = {"POST": SUBMITTERS}
    required_scopes = {"GET": "jobs:read", "POST": "jobs:write"}
    serializer_class = JobOutputSerializer

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=sorted(name for name, kind in JOB_KINDS.items() if not kind.internal))
        input = serializers.JSONField()

    def get_queryset(self):  # type: ignore[no-untyped-def]
        jobs = jobs_visible_to(user=self.request.user)
        for field in ("status", "kind"):
            if value := self.request.query_params.get(field):
                jobs = jobs.filter(**{field: value})
        return jobs

    @extend_schema(request=InputSerializer, responses={201: JobDetailSerializer, 200: JobDetailSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kind = JOB_KINDS[data.validated_data["kind"]]
        job_input = kind.input_serializer(data=data.validated_data["input"])
        if not job_input.is_valid():
            raise ValidationError({"input": job_input.errors})
        try:
            job, created = services.job_submit(
                kind=kind.name, job_input=dict(job_input.validated_data), actor=request_user(request)
            )
        except NoChampion as error:
            raise ValidationError({"kind": [str(error)]}) from error
        return Response(
            JobDetailSerializer(job).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class JobDetailApi(APIView):
    allowed_roles = ALL_ROLES
    required_scopes = {"GET": "jobs:read"}

    @extend_schema(responses=JobDetailSerializer)
    def get(self, request: Request, job_id: str) -> Response:
        job = get_object_or_404(jobs_visible_to(user=request_user(request)), pk=job_id)
        return Response(JobDetailSerializer(job).data)


class JobRetryApi(APIView):
    allowed_roles = SUBMITTERS
    required_scopes = {"POST": "jobs:write"}

    @extend_schema(request=None, responses=JobDetailSerializer)
    def post(self, request: Request, job_id: str) -> Response:
        user = request_user(request)
        job = get_object_or_404(jobs_visible_to(user=user), pk=job_id)
        try:
            job = services.job_retry(job=job, actor=user)
        except services.JobNotRetryable as error:
            raise ValidationError({"status": [str(error)]}) from error
        return Response(JobDetailSerializer(job).data)
