from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app import selectors, services
from collections_app.api import serializers as s
from collections_app.services import EDITABLE_FIELDS
from emprops.errors import NotFound, ValidationFailed
from emprops.views import ViewerListView


def _split(validated: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    data = validated.pop("data", None)
    return data, {k: v for k, v in validated.items() if k in EDITABLE_FIELDS}


class ProjectListCreateView(ViewerListView):
    serializer_class = s.ProjectOutputSerializer
    filterset_fields = ["is_default"]
    search_fields = ["name"]
    ordering_fields = ["created_at", "name"]

    def list_for_viewer(self) -> Any:
        return selectors.project_list(user=self.request.user)

    @extend_schema(request=s.ProjectInputSerializer, responses={201: s.ProjectOutputSerializer})
    def post(self, request: Request) -> Response:
        body = s.ProjectInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = services.project_create(user=request.user, **body.validated_data)
        return Response(s.ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    @extend_schema(responses=s.ProjectOutputSerializer)
    def get(self, request: Request, project_id: UUID) -> Response:
        project = selectors.project_get(user=request.user, project_id=project_id)
        return Response(s.ProjectOutputSerializer(project).data)

    @extend_schema(request=s.ProjectUpdateInputSerializer, responses=s.ProjectOutputSerializer)
    def put(self, request: Request, project_id: UUID) -> Response:
        body = s.ProjectUpdateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = services.project_update(user=request.user, project_id=project_id,
                                          **body.validated_data)
        return Response(s.ProjectOutputSerializer(project).data)

    patch = put

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, project_id: UUID) -> Response:
        services.project_delete(user=request.user, project_id=project_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CollectionCreateView(APIView):
    @extend_schema(
        request=s.CollectionInputSerializer, responses={201: s.CollectionOutputSerializer},
        parameters=[OpenApiParameter("project_id", UUID), OpenApiParameter("asset_id", int)],
        summary="Create a collection (default project when project_id is absent)",
    )
    def post(self, request: Request) -> Response:
        query = s.CollectionCreateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        body = s.CollectionInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data, fields = _split(dict(body.validated_data))
        collection = services.collection_create(
            user=request.user, project_id=query.validated_data.get("project_id"),
            asset_id=query.validated_data.get("asset_id"), data=data, fields=fields,
        )
        return Response(s.CollectionOutputSerializer(collection).data,
                        status=status.HTTP_201_CREATED)


class ProjectCollectionListView(ViewerListView):
    serializer_class = s.CollectionOutputSerializer
    filterset_fields = ["status", "archived"]
    search_fields = ["title", "description"]
    ordering_fields = ["created_at", "updated_at", "title"]

    def list_for_viewer(self) -> Any:
        project = selectors.project_get(user=self.request.user,
                                        project_id=self.kwargs["project_id"])
        return selectors.collection_list(user=self.request.user, project_id=project.pk)


class ProjectCollectionDetailView(APIView):
    @extend_schema(responses=s.CollectionOutputSerializer)
    def get(self, request: Request, project_id: UUID, collection_id: UUID) -> Response:
        collection = selectors.collection_get(user=request.user, collection_id=collection_id)
        if collection.project_id != project_id:
            raise NotFound("Collection not found.")
        return Response(s.CollectionOutputSerializer(collection).data)

    @extend_schema(request=s.CollectionInputSerializer, responses=s.CollectionOutputSerializer)
    def put(self, request: Request, project_id: UUID, collection_id: UUID) -> Response:
        body = s.CollectionInputSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data, fields = _split(dict(body.validated_data))
        collection = services.collection_update(user=request.user, project_id=project_id,
                                                collection_id=collection_id, data=data,
                                                fields=fields)
        return Response(s.CollectionOutputSerializer(collection).data)

    patch = put

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, project_id: UUID, collection_id: UUID) -> Response:
        services.collection_delete(user=request.user, project_id=project_id,
                                   collection_id=collection_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MyCollectionListView(ProjectCollectionListView):
    filterset_fields = ["status", "archived", "project_id"]

    def list_for_viewer(self) -> Any:
        return selectors.collection_list(user=self.request.user)


class CollectionDetailView(APIView):
    @extend_schema(responses=s.CollectionOutputSerializer, summary="One of your collections")
    def get(self, request: Request, collection_id: UUID) -> Response:
        collection = selectors.collection_get(user=request.user, collection_id=collection_id)
        return Response(s.CollectionOutputSerializer(collection).data)


class PublicCollectionListView(ViewerListView):
    serializer_class = s.CollectionOutputSerializer
    permission_classes = [permissions.AllowAny]
    search_fields = ["title", "description"]
    ordering_fields = ["publish_date", "created_at", "title"]

    def list_for_viewer(self) -> Any:
        return selectors.collection_public_list()


class PublicCollectionDetailView(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=s.CollectionOutputSerializer, summary="A published collection")
    def get(self, request: Request, collection_id: UUID) -> Response:
        collection = selectors.collection_public_get(collection_id=collection_id)
        return Response(s.CollectionOutputSerializer(collection).data)


class CollectionPublishView(APIView):
    @extend_schema(request=None, responses=s.CollectionOutputSerializer)
    def post(self, request: Request, collection_id: UUID) -> Response:
        collection = services.collection_publish(user=request.user, collection_id=collection_id)
        return Response(s.CollectionOutputSerializer(collection).data)


class CollectionArchiveView(APIView):
    @extend_schema(request=s.CollectionArchiveInputSerializer, responses=s.CollectionOutputSerializer)
    def post(self, request: Request, collection_id: UUID) -> Response:
        body = s.CollectionArchiveInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        collection = services.collection_set_archived(
            user=request.user, collection_id=collection_id,
            archived=body.validated_data["archived"])
        return Response(s.CollectionOutputSerializer(collection).data)


class CollectionPreviewView(APIView):
    @extend_schema(responses=s.CollectionPreviewOutputSerializer)
    def get(self, request: Request, collection_id: UUID) -> Response:
        preview = services.collection_preview_get_or_create(user=request.user,
                                                            collection_id=collection_id)
        return Response(s.CollectionPreviewOutputSerializer(preview).data)

    @extend_schema(request=s.CollectionPreviewInputSerializer,
                   responses=s.CollectionPreviewOutputSerializer)
    def put(self, request: Request, collection_id: UUID) -> Response:
        body = s.CollectionPreviewInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        preview = services.collection_preview_update(user=request.user,
                                                     collection_id=collection_id,
                                                     **body.validated_data)
        return Response(s.CollectionPreviewOutputSerializer(preview).data)


class CollectionRemixView(APIView):
    @extend_schema(request=s.CollectionRemixInputSerializer,
                   responses={201: s.CollectionOutputSerializer})
    def post(self, request: Request, collection_id: UUID) -> Response:
        body = s.CollectionRemixInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        collection = services.collection_remix(user=request.user, collection_id=collection_id,
                                               project_id=body.validated_data.get("project_id"))
        return Response(s.CollectionOutputSerializer(collection).data,
                        status=status.HTTP_201_CREATED)


class CollectionHistoryView(ViewerListView):
    serializer_class = s.CollectionHistoryOutputSerializer
    filter_backends: list[Any] = []

    def list_for_viewer(self) -> Any:
        return selectors.collection_history_list(user=self.request.user,
                                                 collection_id=self.kwargs["collection_id"])


FEATURE_PREFIX = "feature."


def _feature_filter(query: Any) -> dict[str, str]:
    """`?feature.<name>=<value>` pairs; a name given twice, or an empty name, is a 400."""
    features: dict[str, str] = {}
    for key in query:
        if not key.startswith(FEATURE_PREFIX):
            continue
        name, values = key[len(FEATURE_PREFIX):], query.getlist(key)
        if not name or len(values) != 1:
            raise ValidationFailed(
                f"Invalid input: {key}: give a variable name after `feature.` and one value.",
                details={key: ["One value per `feature.<variable name>` parameter."]})
        features[name] = values[0]
    return features


@extend_schema_view(get=extend_schema(
    summary="Outputs of one of your collections, newest first",
    parameters=[OpenApiParameter(
        "feature.<name>", str, description=(
            "Only outputs of generations whose trait `<name>` (a variable of the collection) "
            "took this value, e.g. `?feature.animal=owl`; several are combined with AND."),
        examples=[OpenApiExample("animal", value="owl")])]))
class CollectionFilesView(ViewerListView):
    serializer_class = s.FlatFileOutputSerializer
    filter_backends: list[Any] = []

    def list_for_viewer(self) -> Any:
        return selectors.collection_files(user=self.request.user,
                                          collection_id=self.kwargs["collection_id"],
                                          features=_feature_filter(self.request.query_params))
