"""The API's edges: the `{data, error}` envelope, the exception handler, pagination, throttles."""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from redis.backoff import NoBackoff
from redis.retry import Retry
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


# ---- throttles ----------------------------------------------------------------------------------
# DRF's SimpleRateThrottle reads a list of timestamps from the cache, appends to it and writes it
# back, so requests in flight together all read the same list and all pass. Here a request is
# counted by one Lua script, which Redis runs atomically with respect to every other command, from
# every process. The window is fixed and starts at its first request (INCR; PEXPIRE when the key
# has no expiry): one key and one round trip per request and exactly N admitted per window. The
# price is that a client may spend N at the end of one window and N at the start of the next,
# acceptable for a limit whose job is bounding abuse; a sliding log would hold N timestamps per
# client, and GCRA turns "N a minute" into "a burst, then one every 60/N s". A script rather than
# MULTI [INCR, EXPIRE NX]: the embedded Redis is 6.2, which has no EXPIRE NX.
THROTTLE_KEY_PREFIX = "emprops:throttle:"
THROTTLE_REDIS_CONNECTIONS = 256  # per process

# returns {count, ms left in the window}; `ttl < 0` is a new key, or one that somehow lost its
# expiry and would otherwise refuse its client for ever
_COUNT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""
_UNCOUNT_SCRIPT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class _ThrottleRedis:
    def __init__(self, url: str) -> None:
        # short timeouts and no retries (redis-py retries 10 times with backoff by default): the
        # request that finds Redis unreachable waits at most ~0.5 s, then it is admitted
        # a blocking pool: a burst beyond its size waits briefly for a connection instead of
        # failing with "Too many connections" (which would switch the limits off for a while)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=THROTTLE_REDIS_CONNECTIONS, timeout=0.5,
            socket_connect_timeout=0.25, socket_timeout=0.5)
        self.client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self.count = self.client.register_script(_COUNT_SCRIPT)
        self.uncount = self.client.register_script(_UNCOUNT_SCRIPT)


@functools.cache
def _throttle_redis() -> _ThrottleRedis:
    """This process's client of the default cache's Redis (pooled, thread-safe, fork-aware).

    The cache's own database, so the test suite's `cache.clear()` (a FLUSHDB) clears it too."""
    location = settings.CACHES["default"]["LOCATION"]
    primary = (location if isinstance(location, str) else location[0]).split(",")[0]
    return _ThrottleRedis(primary)


# after a failure, throttles admit without asking Redis for this long: a blocking timeout on every
# request would stall the process (sync views share one thread under ASGI)
REDIS_RETRY_SECONDS = 5.0
_redis_down_until = 0.0


def _ask_redis(call: Callable[[_ThrottleRedis], Any]) -> Any | None:
    """`call`'s result, or None while the throttle Redis is unreachable.

    Fail open: None means "admit". A Redis outage already stops the broker and the event channels;
    failing closed would also refuse every read Postgres can still serve, turning it into a full
    API outage. What these limits guard is not lost meanwhile: credits are held and spent in
    Postgres, and the credentials behind the failed-authentication limit (256-bit API keys, signed
    JWTs) cannot be guessed in any number of tries, so that limit is defence in depth.
    """
    global _redis_down_until
    if time.monotonic() < _redis_down_until:
        return None
    try:
        return call(_throttle_redis())
    except redis.RedisError as exc:
        _redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        logger.error("rate limits not enforced for %.0f s: throttle Redis unreachable (%s)",
                     REDIS_RETRY_SECONDS, exc)
        return None


@dataclass(frozen=True)
class Counted:
    admitted: bool
    wait: float  # seconds until the window ends


def throttle_count(key: str, *, limit: int, window: int) -> Counted | None:
    """Count one request at `key` against `limit` per `window` seconds, atomically; None when
    Redis cannot be reached (the caller admits the request)."""
    result = _ask_redis(lambda r: r.count(keys=[key], args=[window * 1000]))
    if result is None:
        return None
    count, ttl_ms = result
    return Counted(admitted=int(count) <= limit, wait=max(int(ttl_ms), 0) / 1000)


def throttle_uncount(key: str) -> None:
    """Give back one request counted at `key` (it turned out not to count); never below zero."""
    _ask_redis(lambda r: r.uncount(keys=[key]))


def client_address(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or with TRUSTED_PROXY_COUNT = N > 0 the address the
    outermost of N proxies appended to X-Forwarded-For. Entries before it are whatever the client
    sent; N > 0 assumes the app is reachable only through those proxies."""
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [hop for hop in hops if hop]
        if len(hops) >= proxies:
            return hops[-proxies][:64]  # bounded: it becomes part of a Redis key
    return remote


class RedisRateThrottle(throttling.SimpleRateThrottle):
    """DRF's throttle interface (`allow_request`, `wait` for Retry-After) over `throttle_count`."""

    cache_format = THROTTLE_KEY_PREFIX + "%(scope)s:%(ident)s"
    num_requests: int | None  # set by SimpleRateThrottle.__init__ from the rate
    duration: int | None
    counted_key: str | None = None  # where this request was counted, once it was
    _wait: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        key = self.get_cache_key(request, view) if self.rate is not None else None
        if key is None:
            return True
        assert self.num_requests is not None and self.duration is not None
        counted = throttle_count(key, limit=self.num_requests, window=self.duration)
        if counted is None:
            return True
        self.counted_key = key
        if not counted.admitted:
            self._wait = counted.wait
        return counted.admitted

    def wait(self) -> float | None:
        return self._wait

    def get_ident(self, request: Any) -> str:
        # DRF's own trusts any X-Forwarded-For unless NUM_PROXIES is set: a forged header would
        # give every request a fresh anonymous bucket
        return client_address(request)


class UserRateThrottle(RedisRateThrottle, throttling.UserRateThrottle):
    """`user` rate: per user id when authenticated, per client address otherwise."""


class AnonRateThrottle(RedisRateThrottle, throttling.AnonRateThrottle):
    """`anon` rate: per client address, anonymous requests only."""


class FailedAuthThrottle(RedisRateThrottle):
    """RATE_LIMIT_AUTH_FAIL: credential checks per client address that may end in a 401.

    Used by `emprops.authentication.failed_auth_limit`, which counts a check before it runs and
    gives it back (`refund`) unless it failed."""

    scope = "auth_fail"

    def get_rate(self) -> str | None:
        return settings.RATE_LIMIT_AUTH_FAIL or None

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def peek(self, request: Any) -> bool:
        """Whether the address is under the limit, without counting this check."""
        key = self.get_cache_key(request, None) if self.rate is not None else None
        if key is None:
            return True
        assert self.num_requests is not None
        found = _ask_redis(lambda r: r.client.get(key))
        if not found or int(found) < self.num_requests:
            return True
        ttl = _ask_redis(lambda r: r.client.pttl(key))
        self._wait = max(int(ttl or 0), 0) / 1000
        return False

    def refund(self) -> None:
        """Give back the check `allow_request` counted (if it reached Redis)."""
        if self.counted_key is not None:
            throttle_uncount(self.counted_key)
            self.counted_key = None


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


# The errors every operation may answer: a bad body or query, credentials (also on public
# operations, when a bad one is sent), an unknown id or path, a body over MAX_BODY_BYTES (checked
# for every method) and the rate limits. Operations that may carry a body answer 415 for one
# that is not JSON (emprops.middleware.MediaTypeMiddleware); those behind a staff permission,
# 403. A view declares any other error status it answers (402, 409, 422, a domain 403) in its
# own `extend_schema`; this hook gives each the Error body.
_COMMON_ERRORS = (
    ("400", "Invalid input"),
    ("401", "Not authenticated: no or invalid credentials"),
    ("404", "Not found (or not yours)"),
    ("413", "Request body too large"),
    ("429", "Rate limited: retry after `Retry-After` seconds"),
)
_BODY_ERRORS = (("415", "Unsupported media type"),)
_STAFF_ERRORS = (("403", "Staff only"),)
_BODY_METHODS = frozenset({"post", "put", "patch", "delete"})


_DECLARED_ERRORS = {
    402: "Not enough credits (the quote in `details`)",
    403: "Forbidden",
    409: "Conflicts with the current state, or an Idempotency-Key reused or still in flight",
    422: "Valid, but what it names can no longer run (a workflow deleted or misconfigured)",
}


def error_responses(*codes: int) -> dict[int, Any]:
    """`extend_schema(responses=...)` entries for the error statuses a view answers beyond the
    ones envelope_schema_hook documents everywhere; the hook gives each the Error body."""
    from http import HTTPStatus

    from drf_spectacular.utils import OpenApiResponse

    return {code: OpenApiResponse(description=_DECLARED_ERRORS.get(code, HTTPStatus(code).phrase))
            for code in codes}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _staff_operations(generator: Any) -> set[tuple[str, str]]:
    """(path, method) of the operations whose view needs a staff user (a 403 for others)."""
    from rest_framework.permissions import IsAdminUser

    staff = set()
    for path, _, method, callback in getattr(generator, "endpoints", None) or ():
        classes = getattr(getattr(callback, "cls", None), "permission_classes", ())
        if any(isinstance(c, type) and issubclass(c, IsAdminUser) for c in classes):
            staff.add((path, method.lower()))
    return staff


def envelope_schema_hook(result: dict[str, Any], generator: Any, request: Any,
                         public: bool) -> dict[str, Any]:
    """Describes the envelope (every JSON response body is `{data, error}`) and the error
    statuses each operation really answers, each with the Error body."""
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
    staff = _staff_operations(generator)
    for path, path_item in result.get("paths", {}).items():
        for method, operation in path_item.items():
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
            errors = list(_COMMON_ERRORS)
            if method in _BODY_METHODS:
                errors += _BODY_ERRORS
            if (path, method) in staff:
                errors += _STAFF_ERRORS
            responses = operation["responses"]
            for code, resp in responses.items():
                if code.startswith("4") and not resp.get("content"):  # declared by the view
                    resp.update(_error_response(resp.get("description") or "Error"))
            for code, desc in errors:
                responses.setdefault(code, _error_response(desc))
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
        "the missed events. When the job is finished (completed, failed or cancelled) the stream "
        "sends its last events, the final `job_update` with the terminal status last, and closes; "
        "a reconnect whose `Last-Event-ID` is at or past that final event gets 204 (EventSource "
        "clients stop reconnecting). Authenticate with the API headers or `?token=` from "
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
        "204": {"description": "The job is finished and `Last-Event-ID` is at or past its final "
                               "event: nothing more will come"},
        "401": {"description": "Not authenticated", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "Not found (or not yours)", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}},
        "413": {"description": "Request body too large", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}},
    },
}}


__all__ = ["EnvelopeRenderer", "EnvelopePagination", "exception_handler", "get_or_not_found"]
