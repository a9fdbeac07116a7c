from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app.api.serializers import CollectionOutputSerializer
from collections_app.services import EDITABLE_FIELDS
from emprops.api import error_responses
from emprops.views import ViewerListView
from generation_app.api import extra_serializers as s
from generation_app.services import templates
from jobs_app.api.serializers import JobOutputSerializer


class TemplateListCreateView(ViewerListView):
    serializer_class = s.TemplateOutputSerializer
    filterset_fields = ["is_public"]
    search_fields = ["name", "description"]
    ordering_fields = ["created_at", "name"]

    def list_for_viewer(self) -> Any:
        return templates.template_list(user=self.request.user)

    @extend_schema(request=s.TemplateInputSerializer,
                   responses={201: s.TemplateOutputSerializer, **error_responses(403)},
                   summary="Save a template (staff may publish it)")
    def post(self, request: Request) -> Response:
        body = s.TemplateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        template = templates.template_create(user=request.user, **body.validated_data)
        return Response(s.TemplateOutputSerializer(template).data, status=status.HTTP_201_CREATED)


class TemplateDetailView(APIView):
    @extend_schema(responses=s.TemplateOutputSerializer, summary="A public template or yours")
    def get(self, request: Request, template_id: UUID) -> Response:
        return Response(s.TemplateOutputSerializer(
            templates.template_get(user=request.user, template_id=template_id)).data)

    @extend_schema(request=None, responses={204: None}, summary="Delete one of your templates")
    def delete(self, request: Request, template_id: UUID) -> Response:
        templates.template_delete(user=request.user, template_id=template_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateCollectionCreateView(APIView):
    @extend_schema(request=s.TemplateCollectionInputSerializer,
                   responses={201: s.TemplateCollectionOutputSerializer,
                              **error_responses(402, 422)},
                   summary="Make a collection from a template, optionally starting its job")
    def post(self, request: Request, template_id: UUID) -> Response:
        body = s.TemplateCollectionInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        overrides = {k: val for k, val in (v.get("overrides") or {}).items()
                     if k in EDITABLE_FIELDS}
        collection, job = templates.template_collection_create(
            user=request.user, template_id=template_id, parameters=v["parameters"],
            fields=overrides, project_id=v.get("project_id"), generate=v.get("generate"))
        return Response({"collection": CollectionOutputSerializer(collection).data,
                         "job": JobOutputSerializer(job).data if job is not None else None},
                        status=status.HTTP_201_CREATED)
