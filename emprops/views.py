"""Base views shared by the apps' APIs, and the API's index."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class ViewerListView(generics.ListAPIView):
    """A list of the viewer's rows: subclasses implement `list_for_viewer()`."""

    def list_for_viewer(self) -> QuerySet[Any]:
        raise NotImplementedError(".list_for_viewer() must be overridden")

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no viewer
            return self.get_serializer_class().Meta.model.objects.none()  # type: ignore[attr-defined,no-any-return]
        return self.list_for_viewer()


class ApiIndexOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    docs = serializers.URLField()
    schema = serializers.URLField()
    admin = serializers.URLField()


class ApiIndexView(APIView):
    """`GET /api`: what this API is and where its documentation lives (what `make run` prints)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=ApiIndexOutputSerializer, summary="The API's name, version and links",
                   tags=["api"])
    def get(self, request: Request) -> Response:
        spectacular = settings.SPECTACULAR_SETTINGS
        return Response(ApiIndexOutputSerializer({
            "name": spectacular["TITLE"], "version": spectacular["VERSION"],
            "docs": request.build_absolute_uri(reverse("docs")),
            "schema": request.build_absolute_uri(reverse("schema")),
            "admin": request.build_absolute_uri(reverse("admin:index")),
        }).data)
