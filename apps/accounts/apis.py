"""Accounts API: who am I, bearer tokens, storefront API keys."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import BearerTokenAuthentication
from apps.accounts.permissions import request_user
from apps.accounts.roles import ALL_ROLES, API_KEY_SCOPES, Role, user_roles
from apps.accounts.selectors import api_keys_visible_to
from apps.accounts.services import InvalidScopes, api_key_create, api_key_revoke
from apps.audit.services import audit_record

KEY_MANAGERS: frozenset[str] = frozenset({Role.MERCHANDISER, Role.ML_ADMIN})


class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class MeApi(APIView):
    allowed_roles = ALL_ROLES

    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.CharField())

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        return Response({"username": request.user.get_username(), "roles": sorted(user_roles(request.user))})


class TokenObtainApi(APIView):
    """Exchange a username and password for a bearer token (``Authorization: Bearer <token>``)."""

    public = True
    # No session here (so no CSRF); a wrong password is a 401 with a Bearer challenge.
    authentication_classes = [BearerTokenAuthentication]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:
            raise AuthenticationFailed("wrong username or password")
        with transaction.atomic():
            token, created = Token.objects.get_or_create(user=user)
            if created:
                audit_record(actor=user, action="token.create", target_type="authtoken.token", target_id=user.pk)
        return Response({"token": token.key})


class ApiKeyListCreateApi(APIView):
    allowed_roles = KEY_MANAGERS

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        scopes = serializers.ListField(child=serializers.ChoiceField(choices=sorted(API_KEY_SCOPES)), min_length=1)

    class CreatedSerializer(ApiKeyOutputSerializer):
        key = serializers.CharField(help_text="the raw key: shown once, never again")

    @extend_schema(responses=ApiKeyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        keys = api_keys_visible_to(user=request_user(request))
        return Response(ApiKeyOutputSerializer(keys, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: CreatedSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            api_key, raw_key = api_key_create(user=request_user(request), **data.validated_data)
        except InvalidScopes as error:
            raise ValidationError({"scopes": [str(error)]}) from error
        return Response({**ApiKeyOutputSerializer(api_key).data, "key": raw_key}, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    allowed_roles = KEY_MANAGERS

    @extend_schema(request=None, responses=ApiKeyOutputSerializer)
    def post(self, request: Request, key_id: int) -> Response:
        user = request_user(request)
        api_key = get_object_or_404(api_keys_visible_to(user=user), pk=key_id)
        api_key = api_key_revoke(api_key=api_key, actor=user)
        return Response(ApiKeyOutputSerializer(api_key).data)
