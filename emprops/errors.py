"""Domain errors: services raise these; `emprops.api` maps each to a status code once."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    status_code = 400
    code = "validation_error"


class GraphError(ValidationFailed):
    """A GenerationInput that cannot run: unknown nodes, dangling or cyclic refs, bad payloads."""


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class InsufficientCredits(DomainError):
    status_code = 402
    code = "insufficient_credits"


class Unprocessable(DomainError):
    """A valid request whose stored collection can no longer run (a workflow was deleted...)."""

    status_code = 422
    code = "unprocessable"


class RateLimited(DomainError):
    status_code = 429
    code = "rate_limited"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedFileType(DomainError):
    status_code = 415
    code = "unsupported_media_type"
