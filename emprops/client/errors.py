"""What the client raises: one exception per kind of answer a caller handles differently.

Each carries the envelope's `error` message, the HTTP status, the `details` and the server's
`request_id` (quote it when reporting a problem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from emprops.client.models import Job, Quote


class APIError(Exception):
    """An error answer from the API (or no answer at all: see ConnectionFailed)."""

    def __init__(self, message: str, *, status: int = 0, details: dict[str, Any] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or {}
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (HTTP {self.status}, request {self.request_id})" if self.request_id else (
            f" (HTTP {self.status})" if self.status else "")
        return f"{self.message}{where}"


class ConnectionFailed(APIError):
    """The server could not be reached (`unreachable`), or the connection broke before an answer
    came."""

    def __init__(self, message: str, *, unreachable: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.unreachable = unreachable


class AuthError(APIError):
    """401 (no or bad credentials) or 403 (not allowed)."""


class InsufficientCredits(APIError):
    """402: the balance does not cover the quote; `quote`, `required` and `available` say how far."""

    @property
    def quote(self) -> Quote | None:
        from emprops.client.models import Quote

        raw = self.details.get("quote")
        return Quote.from_api(raw) if isinstance(raw, dict) else None

    @property
    def required(self) -> str | None:
        return self.details.get("required")

    @property
    def available(self) -> str | None:
        return self.details.get("available")


class NotFound(APIError):
    """404: missing, or someone else's (the API does not tell them apart)."""


class Conflict(APIError):
    """409: e.g. cancelling a finished job, retrying one with nothing failed, a reused
    Idempotency-Key with another body."""


class ValidationError(APIError):
    """400 or 422: the request was refused as given; `details` names the fields."""


class RateLimited(APIError):
    """429 after the client's bounded retries; `retry_after` is the server's last advice (s)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class JobFailed(Exception):
    """A waited-for job ended `failed` (or `cancelled`); `job` is its final state."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.status = job.status
        self.error_message = job.error_message
        reason = job.error_message or ("cancelled" if job.status == "cancelled" else "failed")
        super().__init__(f"job {job.id} {job.status}: {reason}")


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError, 401: AuthError, 402: InsufficientCredits, 403: AuthError,
    404: NotFound, 409: Conflict, 422: ValidationError, 429: RateLimited,
}


def error_from_response(response: httpx.Response, *, retry_after: float | None = None) -> APIError:
    """The exception for an error response, built from its `{data, error, details, request_id}`
    envelope (or from the status alone when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    message = f"HTTP {status} {response.reason_phrase}".strip()
    details: dict[str, Any] = {}
    request_id = response.headers.get("X-Request-ID")
    if isinstance(body, dict):
        if isinstance(body.get("error"), str) and body["error"]:
            message = body["error"]
        if isinstance(body.get("details"), dict):
            details = body["details"]
        request_id = body.get("request_id") or request_id
    cls = _BY_STATUS.get(status, APIError)
    if cls is RateLimited:
        return RateLimited(message, retry_after=retry_after, status=status, details=details,
                           request_id=request_id)
    return cls(message, status=status, details=details, request_id=request_id)
