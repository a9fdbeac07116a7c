from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emprops.accounts import selectors, services
from emprops.accounts.api import serializers as s
from emprops.accounts.models import User
from emprops.api import WWW_AUTHENTICATE
from emprops.authentication import decode_token, failed_auth_limit, issue_tokens
from emprops.errors import DomainError
from emprops.views import ViewerListView


def _viewer(request: Request) -> User:
    user = request.user
    assert isinstance(user, User)  # every view here requires authentication
    return user


class AuthFailed(DomainError):
    status_code = 401
    code = "authentication_failed"


class TokenView(APIView):
    # no authentication to get a token, yet a bad credential is a 401 that names the scheme
    # (DRF turns it into a 403 when a view has no authenticator to name one)
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class TokenObtainView(TokenView):
    @extend_schema(request=s.TokenObtainInputSerializer, responses=s.TokenOutputSerializer,
                   summary="Issue an access and a refresh token for a local account")
    def post(self, request: Request) -> Response:
        body = s.TokenObtainInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # password guessing is what the per-address failed-authentication limit is for
        with failed_auth_limit(request):
            user = authenticate(request, username=body.validated_data["username"],
                                password=body.validated_data["password"])
            if user is None:
                raise AuthFailed("Invalid username or password.")
        return Response(issue_tokens(user=user))


class TokenRefreshView(TokenView):
    @extend_schema(request=s.TokenRefreshInputSerializer, responses=s.TokenOutputSerializer,
                   summary="Exchange a refresh token for new tokens")
    def post(self, request: Request) -> Response:
        body = s.TokenRefreshInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with failed_auth_limit(request):
            claims = decode_token(body.validated_data["refresh"], expected_type="refresh")
            user = selectors.user_get_active(user_id=claims["sub"])
            if user is None:
                raise AuthFailed("Unknown user.")
        return Response(issue_tokens(user=user))


class MeView(APIView):
    @extend_schema(responses=s.MeOutputSerializer, summary="You: id, balances and held credits")
    def get(self, request: Request) -> Response:
        user = _viewer(request)
        summary = services.credits_summary(user=user)
        return Response(s.MeOutputSerializer({
            "id": user.pk, "username": user.username, "external_sub": user.external_sub,
            "is_staff": user.is_staff, **summary,
        }).data)


class ApiKeyListCreateView(ViewerListView):
    serializer_class = s.ApiKeyOutputSerializer
    filter_backends: list[Any] = []

    def list_for_viewer(self) -> Any:
        return selectors.api_key_list(user=_viewer(self.request))

    @extend_schema(request=s.ApiKeyCreateInputSerializer, responses={201: s.ApiKeyCreatedOutputSerializer},
                   summary="Create an API key (the key is shown once)")
    def post(self, request: Request) -> Response:
        body = s.ApiKeyCreateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key, raw = services.api_key_create(user=_viewer(request), **body.validated_data)
        data = s.ApiKeyOutputSerializer(key).data
        data["key"] = raw
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyRevokeView(APIView):
    # a DELETE that answers 200 with the revoked key, not drf-spectacular's default 204
    @extend_schema(request=None, responses={200: s.ApiKeyOutputSerializer},
                   summary="Revoke an API key")
    def delete(self, request: Request, key_id: int) -> Response:
        key = services.api_key_revoke(user=_viewer(request), key_id=key_id)
        return Response(s.ApiKeyOutputSerializer(key).data)


class CreditsHistoryView(ViewerListView):
    serializer_class = s.CreditsHistoryOutputSerializer
    filter_backends: list[Any] = []

    def list_for_viewer(self) -> Any:
        return selectors.credits_history_list(user=_viewer(self.request))


class CreditsGrantView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=s.CreditsGrantInputSerializer, responses={201: s.CreditsHistoryOutputSerializer},
                   summary="Staff: grant or adjust a user's credits (a ledger row)")
    def post(self, request: Request) -> Response:
        body = s.CreditsGrantInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        target = selectors.user_get(user_id=v["user_id"])
        row = services.credits_grant(user=target, amount=v["amount"], credit_type=v["credit_type"],
                                     comment=v["comment"], created_by=_viewer(request))
        return Response(s.CreditsHistoryOutputSerializer(row).data, status=status.HTTP_201_CREATED)
