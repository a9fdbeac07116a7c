"""Cross-cutting request glue: request ids, the body-size limit, the body's media type and log
redaction."""

from __future__ import annotations

import contextvars
import io
import logging
import re
import uuid
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _Middleware:
    """Sync and async capable, so SSE streams under ASGI are not forced through a thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        early = self.before(request)
        if early is not None:
            return self.after(request, early)
        return self.after(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        early = self.before(request)
        if early is not None:
            return self.after(request, early)
        return self.after(request, await self.get_response(request))

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


class RequestIdMiddleware(_Middleware):
    """Gives every request an id (or keeps a sane incoming `X-Request-ID`), echoed in the response."""

    def before(self, request: HttpRequest) -> HttpResponse | None:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request.request_id = rid  # type: ignore[attr-defined]
        request_id_var.set(rid)
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response


def envelope_error(message: str, status: int, *, request: HttpRequest | None = None,
                   details: object = None) -> JsonResponse:
    body: dict[str, object] = {"data": None, "error": message}
    if details is not None:
        body["details"] = details
    body["request_id"] = getattr(request, "request_id", request_id_var.get())
    return JsonResponse(body, status=status)


class BodySizeLimitMiddleware(_Middleware):
    """Refuses API bodies over MAX_BODY_BYTES with an enveloped 413 before anything parses them.

    A body sent without Content-Length (`Transfer-Encoding: chunked`, which the ASGI server
    de-chunks into the request stream) is measured here by reading at most one byte past the
    limit, and then given the Content-Length it turned out to have: DRF reads no body at all
    from a request whose CONTENT_LENGTH is missing, so it would otherwise parse as empty."""

    def before(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        limit = settings.MAX_BODY_BYTES
        if request.content_type == "multipart/form-data":
            limit = settings.MAX_UPLOAD_BYTES + 64 * 1024
        declared = request.META.get("CONTENT_LENGTH")
        if not declared:
            return self._measure(request, limit)
        try:
            length = int(declared)
        except ValueError:
            return envelope_error("Invalid Content-Length header.", 400, request=request)
        if length > limit:
            return envelope_error(
                f"Request body too large: {length} bytes, the limit is {limit} bytes.",
                413, request=request, details={"limit": limit},
            )
        return None

    @staticmethod
    def _measure(request: HttpRequest, limit: int) -> HttpResponse | None:
        # Django's own stream attribute, read directly: HttpRequest.read() would mark the
        # request as read, and it has no public way to un-read
        stream = getattr(request, "_stream", None)
        if stream is None:
            return None
        body = stream.read(limit + 1)
        if len(body) > limit:
            return envelope_error(f"Request body too large: the limit is {limit} bytes.",
                                  413, request=request, details={"limit": limit})
        if stream.seekable():  # ASGI: a spooled file holding the whole body
            stream.seek(0)
        else:
            request._stream = io.BytesIO(body)  # type: ignore[attr-defined]
        if body:
            request.META["CONTENT_LENGTH"] = str(len(body))
        return None


class MediaTypeMiddleware(_Middleware):
    """Refuses, with an enveloped 415 before the view runs, an API request whose body is of a
    media type its view does not parse (JSON everywhere; multipart only where a view declares it).

    DRF checks the media type only when a view reads `request.data`, so a view that reads no
    body (cancel, retry, publish) would act and ignore a form body, and a view that reads it
    could never have been given a form's flat strings for JSON. Checking here, against the
    parsers of the DRF view the path resolves to, holds for every endpoint whether it reads the
    body or not. A request without a body (no or zero Content-Length: bodyless POSTs) passes, as
    does anything that is not a DRF view (unknown paths keep their 404).
    """

    _BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def before(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path.startswith("/api/") or request.method not in self._BODY_METHODS:
            return None
        try:  # BodySizeLimitMiddleware (before this one) set it for chunked bodies and checked it
            if int(request.META.get("CONTENT_LENGTH") or 0) <= 0:
                return None
        except ValueError:
            return None
        from rest_framework.utils.mediatypes import media_type_matches
        from rest_framework.views import APIView

        content_type = request.META.get("CONTENT_TYPE", "")
        if any(media_type_matches(p.media_type, content_type) for p in APIView.parser_classes):
            return None  # JSON: the common case costs no URL resolution
        parsers = _view_parsers(request.path_info)
        if parsers is None or any(media_type_matches(p.media_type, content_type)
                                  for p in parsers):
            return None
        accepted = [p.media_type for p in parsers]
        shown = request.content_type or "(none)"
        return envelope_error(
            f'Unsupported media type "{shown}" in request: send {" or ".join(accepted)}.',
            415, request=request, details={"accepted": accepted})


def _view_parsers(path: str) -> list[Any] | None:
    """The parser classes of the DRF view serving `path`, or None when it is not a DRF view."""
    from django.urls import Resolver404, resolve
    from rest_framework.views import APIView

    try:
        func = resolve(path).func
    except Resolver404:
        return None
    cls = getattr(func, "cls", None)
    if not (isinstance(cls, type) and issubclass(cls, APIView)):
        return None
    initkwargs = getattr(func, "initkwargs", None) or {}
    return list(initkwargs.get("parser_classes", cls.parser_classes))


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


_SECRET_PATTERNS = [
    (re.compile(r"(/api/staff/)[^/\s\"?]+"), r"\1[redacted]"),
    (re.compile(r"([?&]token=)[^&\s\"]+"), r"\1[redacted]"),
    (re.compile(r"\bek_[A-Za-z0-9_-]{8,}"), "ek_[redacted]"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?bearer\s+)[^\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"']+"), r"\1[redacted]"),
]


def redact(text: str) -> str:
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Staff keys in paths, `token=` query values and API keys never reach a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
