"""The API's edges: the `{data, error}` envelope, the exception handler, pagination, throttles."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, pagination, status, throttling
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from emprops.errors import DomainError, NotFound
from emprops.middleware import envelope_error, request_id_var

logger = logging.getLogger(__name__)

WWW_AUTHENTICATE = 'Bearer realm="api"'

# PostgreSQL `integer` and `bigint` limits: an input field stored in (or looked up against) such a
# column declares them, so an out-of-range number is a 400 and not a DataError (a 500)
PG_INT_MIN, PG_INT_MAX = -(2**31), 2**31 - 1
PG_BIGINT_MAX = 2**63 - 1


class EnvelopeRenderer(JSONRenderer):
    """Wraps every payload as `{"data": ..., "error": null}`; errors arrive already wrapped."""

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict[str, Any] | None = None) -> bytes:
        response = (renderer_context or {}).get("response")
        if response is not None and response.status_code == 204:
            return b""  # no content: DRF then drops the Content-Type too
        if not getattr(response, "enveloped", False):
            data = {"data": data, "error": None}
        return super().render(data, accepted_media_type, renderer_context)


def _error_body(message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": None, "error": message}
    if details is not None:
        body["details"] = details
    body["request_id"] = request_id_var.get()
    return body


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            msg = _first_message(value)
            return msg if key == "non_field_errors" else f"{key}: {msg}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Maps domain and framework errors onto honest statuses inside the envelope."""
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        domain = Response(_error_body(exc.message, exc.details), status=exc.status_code)
        domain.enveloped = True  # type: ignore[attr-defined]
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            domain["WWW-Authenticate"] = WWW_AUTHENTICATE
        return domain
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    # imported here: rest_framework.views reads DEFAULT_RENDERER_CLASSES, i.e. this module
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = _error_body(f"Invalid input: {_first_message(details)}", details)
    else:
        body = _error_body(str(exc.detail) if not isinstance(exc.detail, (dict, list))
                           else _first_message(exc.detail))
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    response.data = body
    response.enveloped = True  # type: ignore[attr-defined]
    for k, v in headers.items():
        response[k] = v
    return response


class EnvelopePagination(pagination.LimitOffsetPagination):
    """`data` = `{"items": [...], "total": N, "limit": L, "offset": O}`."""

    default_limit = 50
    max_limit = 500

    def get_paginated_response(self, data: Any) -> Response:
        return Response(OrderedDict([
            ("items", data), ("total", self.count), ("limit", self.limit), ("offset", self.offset),
        ]))

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["items", "total", "limit", "offset"],
            "properties": {
                "items": schema,
                "total": {"type": "integer"},
                "limit": {"type": "integer", "nullable": True},
                "offset": {"type": "integer"},
            },
        }


class UserRateThrottle(throttling.UserRateThrottle):
    """Per-user request rate, counted in Redis (the default cache)."""


class AnonRateThrottle(throttling.AnonRateThrottle):
    pass


def get_or_not_found(queryset: QuerySet[Any], *, label: str = "Object", **lookup: Any) -> Any:
    """One row of `queryset`, or NotFound: a row the queryset excludes looks exactly missing."""
    try:
        return queryset.get(**lookup)
    except (queryset.model.DoesNotExist, DjangoValidationError, ValueError, TypeError):
        raise NotFound(f"{label} not found.") from None


@csrf_exempt  # the catch-all of unknown /api paths: a POST there is a 404, not a CSRF 403 page
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    return envelope_error(f"Not found: {request.path}", status.HTTP_404_NOT_FOUND, request=request)


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    return envelope_error("Internal server error.", 500, request=request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's own 400s (a SuspiciousOperation outside DRF): enveloped under /api."""
    if request.path.startswith("/api"):
        return envelope_error("Bad request.", status.HTTP_400_BAD_REQUEST, request=request)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's own 403s (a PermissionDenied outside DRF): enveloped under /api."""
    if request.path.startswith("/api"):
        return envelope_error("Forbidden.", status.HTTP_403_FORBIDDEN, request=request)
    return defaults.permission_denied(request, exception)


def envelope_schema_hook(result: dict[str, Any], generator: Any, request: Any,
                         public: bool) -> dict[str, Any]:
    """Describes the envelope: every JSON response body is `{data, error}`."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "required": ["data", "error"],
        "properties": {
            "data": {"nullable": True, "example": None},
            "error": {"type": "string"},
            "details": {"type": "object", "additionalProperties": True},
            "request_id": {"type": "string"},
        },
    }
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for resp in operation["responses"].values():
                for media in (resp.get("content") or {}).values():
                    inner = media.get("schema")
                    if inner is None or media.get("x-enveloped"):
                        continue
                    media["schema"] = {
                        "type": "object",
                        "required": ["data", "error"],
                        "properties": {
                            "data": inner,
                            "error": {"type": "string", "nullable": True},
                        },
                    }
            for code, desc in (("400", "Invalid input"), ("401", "Not authenticated"),
                               ("404", "Not found (or not yours)"), ("429", "Rate limited")):
                operation["responses"].setdefault(code, {
                    "description": desc,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                })
    result.setdefault("paths", {})["/api/jobs/{job_id}/events"] = _EVENTS_PATH
    return result


# the stream is a plain async view (see jobs_app/events.py), so it is described by hand
_EVENTS_PATH = {"get": {
    "operationId": "jobs_events_stream",
    "summary": "Live Server-Sent Events of a job",
    "description": (
        "On connect: `job_update` then `history_init` (all history rows); then live `job_update` "
        "and `job_history` events and a keep-alive comment at least every 30 s. Every event's id "
        "is the job's event sequence number: reconnect with `Last-Event-ID` to receive exactly "
        "the missed events. Authenticate with the API headers or `?token=` from "
        "`POST /api/jobs/{job_id}/events/token`. Errors before streaming are enveloped JSON."),
    "tags": ["jobs"],
    "parameters": [
        {"name": "job_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"}},
        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {"description": "An event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "401": {"description": "Not authenticated", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "Not found (or not yours)", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}},
    },
}}


__all__ = ["EnvelopeRenderer", "EnvelopePagination", "exception_handler", "get_or_not_found"]
