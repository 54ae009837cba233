"""Moderation API for integrators: submit a post (JSON or multipart), read its status, scores, decision, evidence."""

from __future__ import annotations

import base64
import binascii

from django.http import FileResponse, HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from apps.accounts.permissions import request_user
from apps.accounts.roles import Role
from apps.moderation import services
from apps.moderation.models import Appeal, ContentItem, EvidenceImage, WebhookDelivery, WebhookEndpoint
from apps.moderation.selectors import item_latest_result, items_visible_to
from apps.ops.errors import BadRequest
from apps.registry.selectors import NoChampion
from ml.images import MAX_BYTES

SUBMITTERS: frozenset[str] = frozenset({Role.MODERATOR, Role.ML_ADMIN})
READERS: frozenset[str] = frozenset({Role.MODERATOR, Role.ML_ADMIN, Role.AUDITOR})


class ItemOutputSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(allow_null=True)
    result = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = ContentItem
        fields = [
            "id",
            "status",
            "decision",
            "decided_automatically",
            "decided_at",
            "text",
            "image_url",
            "image_sha256",
            "author_ref",
            "source",
            "metadata",
            "content_sha256",
            "job_id",
            "created_at",
            "result",
        ]

    def get_image_url(self, item: ContentItem) -> str | None:
        if not item.image:
            return None
        return reverse("api:moderation-item-image", args=[item.pk], request=self.context.get("request"))

    def get_result(self, item: ContentItem) -> dict | None:
        result = item_latest_result(item=item)
        if result is None:
            return None
        request = self.context.get("request")
        return {
            "scores": result.scores,
            "route": result.route,
            "routes": result.routes,
            "evidence": result.evidence,
            "evidence_images": [
                {
                    "kind": picture.kind,
                    "label": picture.label,
                    "sha256": picture.sha256,
                    "url": reverse("api:moderation-evidence", args=[item.pk, picture.pk], request=request),
                }
                for picture in result.images.all()
            ],
            "model_versions": result.model_versions,
            "timings": result.timings,
            "created_at": result.created_at,
        }


class ItemCreateApi(APIView):
    """``POST``: submit a post as JSON (``image_base64``) or multipart (``image`` file); ``201`` with the item,
    whose scoring runs on a worker (poll ``GET`` or receive the webhook)."""

    allowed_roles = SUBMITTERS
    required_scopes = {"POST": "moderation:write"}

    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
        image = serializers.FileField(required=False, allow_empty_file=True)
        image_base64 = serializers.CharField(required=False, allow_blank=False)
        author_ref = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
        metadata = serializers.JSONField(required=False, default=dict)

        def validate_metadata(self, value: object) -> object:
            if not isinstance(value, dict):
                raise ValidationError("metadata must be a JSON object")
            return value

    @extend_schema(request=InputSerializer, responses={201: ItemOutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        if "image" in fields and "image_base64" in fields:
            raise ValidationError({"image": ["send the image as a file or as image_base64, not both"]})
        image = None
        if "image" in fields:
            upload = fields["image"]
            if upload.size > MAX_BYTES:
                raise ValidationError({"image": [f"image is {upload.size} bytes; the limit is {MAX_BYTES}"]})
            image = upload.read()
        elif "image_base64" in fields:
            try:
                image = base64.b64decode(fields["image_base64"], validate=True)
            except (binascii.Error, ValueError) as error:
                raise ValidationError({"image_base64": ["not valid base64"]}) from error
        try:
            item = services.moderation_item_submit(
                text=fields["text"],
                image=image,
                author_ref=fields["author_ref"],
                metadata=fields["metadata"],
                source="api",
                actor=request_user(request),
            )
        except services.ModerationInputError as error:
            raise BadRequest(error.message, code=error.code) from error
        except NoChampion as error:
            raise BadRequest(str(error), code="no_model") from error
        return Response(ItemOutputSerializer(item, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ItemDetailApi(APIView):
    allowed_roles = READERS | SUBMITTERS
    required_scopes = {"GET": "moderation:read"}

    @extend_schema(responses=ItemOutputSerializer)
    def get(self, request: Request, item_id: str) -> Response:
        item = get_object_or_404(items_visible_to(user=request_user(request)), pk=item_id)
        return Response(ItemOutputSerializer(item, context={"request": request}).data)


class ItemImageApi(APIView):
    """The post's image as it was sent."""

    allowed_roles = READERS | SUBMITTERS
    required_scopes = {"GET": "moderation:read"}

    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, item_id: str) -> HttpResponseBase:
        item = get_object_or_404(items_visible_to(user=request_user(request)), pk=item_id)
        if not item.image:
            raise ValidationError({"image": ["this item has no image"]})
        return FileResponse(item.image.open("rb"))


class EvidenceImageApi(APIView):
    """One rendered evidence picture (PNG) of the item's results."""

    allowed_roles = READERS | SUBMITTERS
    required_scopes = {"GET": "moderation:read"}

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, item_id: str, evidence_id: int) -> HttpResponseBase:
        item = get_object_or_404(items_visible_to(user=request_user(request)), pk=item_id)
        picture = get_object_or_404(EvidenceImage, pk=evidence_id, result__item=item)
        return FileResponse(picture.file.open("rb"), content_type="image/png")


class AppealCreateApi(APIView):
    """``POST``: the author (through the integrator) appeals a decision; a second moderator reviews it."""

    allowed_roles = SUBMITTERS
    required_scopes = {"POST": "moderation:write"}

    class InputSerializer(serializers.Serializer):
        statement = serializers.CharField(max_length=5_000)

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Appeal
            fields = ["id", "item_id", "statement", "status", "decision_appealed", "created_at", "decided_at"]

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request, item_id: str) -> Response:
        user = request_user(request)
        item = get_object_or_404(items_visible_to(user=user), pk=item_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            appeal = services.appeal_submit(item=item, statement=data.validated_data["statement"], actor=user)
        except services.AppealNotAllowed as error:
            raise BadRequest(str(error), code="appeal_not_allowed") from error
        return Response(self.OutputSerializer(appeal).data, status=status.HTTP_201_CREATED)


class WebhookOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "active", "created_at"]


class WebhookListCreateApi(APIView):
    """``GET``: your endpoints. ``POST``: a new endpoint for the final decisions on the items you submit; the
    response carries its signing ``secret``, shown this once."""

    allowed_roles = SUBMITTERS
    required_scopes = {"GET": "moderation:read", "POST": "moderation:write"}

    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=500)

    @extend_schema(responses=WebhookOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.filter(owner=request_user(request))
        return Response(WebhookOutputSerializer(endpoints, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: WebhookOutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_create(owner=request_user(request), url=data.validated_data["url"])
        body = {**WebhookOutputSerializer(endpoint).data, "secret": endpoint.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDeliveriesApi(APIView):
    """The delivery log of one of your endpoints, newest first: every attempt's HTTP status or error."""

    allowed_roles = SUBMITTERS
    required_scopes = {"GET": "moderation:read"}

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = WebhookDelivery
            fields = [
                "id",
                "item_id",
                "event",
                "payload",
                "status",
                "attempts",
                "log",
                "next_attempt_at",
                "delivered_at",
                "created_at",
            ]

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = get_object_or_404(WebhookEndpoint, pk=endpoint_id, owner=request_user(request))
        return Response(self.OutputSerializer(endpoint.deliveries.all()[:200], many=True).data)
