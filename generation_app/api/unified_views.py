"""The unified Collection Generation API: a collection from a workflow, generated in one call."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app.api.serializers import CollectionOutputSerializer
from collections_app.services import EDITABLE_FIELDS
from emprops.api import error_responses
from emprops.errors import DomainError, ValidationFailed
from emprops.idempotency import HEADER, idempotent
from generation_app.api import unified_serializers as s
from generation_app.gallery.links import gallery_path
from generation_app.services import unified
from jobs_app.api.serializers import JobOutputSerializer

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER, str, OpenApiParameter.HEADER, required=False,
    description="Replays the first response of the same request (same body) for 24 h; "
                "409 for a different body or while the first is still in flight.")


def _request_from(validated: dict[str, Any]) -> unified.GenerateRequest:
    return unified.GenerateRequest(
        workflow_id=validated.get("workflow_id"), workflow_name=validated.get("workflow_name"),
        inputs=validated.get("inputs") or {}, variables=validated.get("variables") or [],
        count=validated.get("count"), hashes=validated.get("hashes"),
        fields={k: v for k, v in validated.items() if k in EDITABLE_FIELDS},
        project_id=validated.get("project_id"), priority=validated.get("priority"),
        webhook=validated.get("webhook"), run_at=validated.get("run_at"),
        no_cache=bool(validated.get("no_cache")),
    )


def _parse_item(raw: Any) -> unified.GenerateRequest | DomainError:
    if not isinstance(raw, dict):
        return ValidationFailed("Each item must be an object.", details={"item": ["Not an object."]})
    body = s.UnifiedGenerateInputSerializer(data=raw)
    if not body.is_valid():
        return ValidationFailed(f"Invalid input: {', '.join(body.errors)}.", details=body.errors)
    return _request_from(dict(body.validated_data))


def _render(request: Request, started: unified.Started) -> dict[str, Any]:
    collection_id, job_id = started.collection.id, started.job.id

    def url(name: str, **kwargs: Any) -> str:
        return request.build_absolute_uri(reverse(name, kwargs=kwargs))

    return {
        "collection": CollectionOutputSerializer(started.collection).data,
        "job": JobOutputSerializer(started.job).data,
        "cost": {"per_generation": started.quote.get("per_generation"),
                 "total": started.quote.get("total_cost"),
                 "breakdown": started.quote.get("breakdown") or []},
        "urls": {"collection": url("collection-detail", collection_id=collection_id),
                 "job": url("job-detail", job_id=job_id),
                 "events": url("job-events", job_id=job_id),
                 "public": url("collection-public", collection_id=collection_id),
                 "gallery": request.build_absolute_uri(
                     gallery_path(user_id=started.job.user_id, collection_id=collection_id))},
    }


class UnifiedGenerateView(APIView):
    @extend_schema(request=s.UnifiedGenerateInputSerializer,
                   responses={202: s.UnifiedGenerateOutputSerializer,
                              **error_responses(402, 409, 422)},
                   parameters=[IDEMPOTENCY_PARAMETER],
                   summary="Create a collection from a workflow and start its generations")
    @idempotent
    def post(self, request: Request) -> Response:
        body = s.UnifiedGenerateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        started = unified.collection_generate(user=request.user,
                                              request=_request_from(dict(body.validated_data)))
        return Response(_render(request, started), status=status.HTTP_202_ACCEPTED)


class UnifiedBatchView(APIView):
    @extend_schema(request=s.UnifiedBatchInputSerializer,
                   responses={202: s.UnifiedBatchOutputSerializer,
                              **error_responses(402, 409, 422)},
                   parameters=[IDEMPOTENCY_PARAMETER],
                   summary="Accept up to 100 unified requests, all or none")
    @idempotent
    def post(self, request: Request) -> Response:
        body = s.UnifiedBatchInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        items = [_parse_item(raw) for raw in body.validated_data["items"]]
        started = unified.collection_generate_batch(user=request.user, items=items)
        rendered = [_render(request, one) for one in started]
        total = sum(float(r["cost"]["total"] or 0) for r in rendered)
        return Response({"items": rendered, "total_cost": total},
                         status=status.HTTP_202_ACCEPTED)
