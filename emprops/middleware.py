"""Cross-cutting request glue: request ids, the body-size limit and log redaction."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Gives every request an id (or keeps a sane incoming `X-Request-ID`), echoed in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request.request_id = rid  # type: ignore[attr-defined]
        token = request_id_var.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = rid
        return response


def envelope_error(message: str, status: int, *, request: HttpRequest | None = None,
                   details: object = None) -> JsonResponse:
    body: dict[str, object] = {"data": None, "error": message}
    if details is not None:
        body["details"] = details
    body["request_id"] = getattr(request, "request_id", request_id_var.get())
    return JsonResponse(body, status=status)


class BodySizeLimitMiddleware:
    """Refuses API bodies over MAX_BODY_BYTES with an enveloped 413 before anything parses them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            limit = settings.MAX_BODY_BYTES
            if request.content_type == "multipart/form-data":
                limit = settings.MAX_UPLOAD_BYTES + 64 * 1024
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return envelope_error("Invalid Content-Length header.", 400, request=request)
            if length > limit:
                return envelope_error(
                    f"Request body too large: {length} bytes, the limit is {limit} bytes.",
                    413, request=request, details={"limit": limit},
                )
        return self.get_response(request)


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


def json_body(request: HttpRequest) -> object:
    return json.loads(request.body or b"null")
