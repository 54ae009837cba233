from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.forms import AuditFilterForm
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_first_break, audit_events
from apps.audit.views import AUDIT_READERS


class AuditEventOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor_username",
            "action",
            "target_type",
            "target_id",
            "payload",
            "prev_hash",
            "hash",
        ]


class AuditEventListApi(ListAPIView):
    """Audit events, newest first; filter with actor, action (prefix), target_type, target_id, since, until."""

    allowed_roles = AUDIT_READERS
    serializer_class = AuditEventOutputSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        form = AuditFilterForm(self.request.query_params)
        if not form.is_valid():
            raise serializers.ValidationError(form.errors)
        return audit_events(**{k: v for k, v in form.cleaned_data.items() if v})


class AuditVerifyApi(APIView):
    allowed_roles = AUDIT_READERS

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        first_broken_event_id = serializers.IntegerField(allow_null=True)
        reason = serializers.CharField(allow_null=True)

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        broken = audit_chain_first_break()
        return Response(
            {
                "ok": broken is None,
                "first_broken_event_id": broken.event_id if broken else None,
                "reason": broken.reason if broken else None,
            }
        )
