"""`Idempotency-Key` for POST endpoints that start work (SPEC section 9).

A key is scoped to (user, endpoint, key) for 24 h. It is claimed by an INSERT, committed in its own
transaction before the request runs, so a concurrent duplicate meets the unique constraint and is
told `in_progress` (409) instead of starting a second job. A successful response is stored and
replayed for the same body; a different body is 409; a failed request (4xx/5xx) deletes its claim
so the client may retry with the same key. Expired keys are replaced when next claimed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from emprops.accounts.models import IdempotencyKey, User
from emprops.errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
KEY_TTL = timedelta(hours=24)
# a claim still in progress after this long belongs to a request that died (a killed web
# process never deletes its claim); it is replaced rather than blocking the key for 24 h
IN_PROGRESS_LEASE = timedelta(minutes=10)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Claim:
    """A fresh claim: the request runs, then completes or releases it."""

    row_id: int


@dataclass(frozen=True)
class Replay:
    """The stored first response of the same request."""

    status: int
    body: Any


def canonical_json(body: Any) -> str:
    """Sorted keys, no whitespace: two spellings of the same body hash alike."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), cls=JSONEncoder)


def _body_hash(body: Any) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _expired(row: IdempotencyKey) -> bool:
    age = timezone.now() - row.created_at
    return age > KEY_TTL or (row.status == IdempotencyKey.Status.IN_PROGRESS
                             and age > IN_PROGRESS_LEASE)


def idempotency_claim(*, user: User, endpoint: str, key: str, body: Any) -> Claim | Replay:
    """Claim `key` for this request, or return the stored response of the same request, or raise
    Conflict (409): a different body, or the first request still in flight (`in_progress`).

    Must run outside any transaction: the claim has to be visible to concurrent duplicates."""
    request_hash = _body_hash(body)
    for _ in range(3):
        try:
            with transaction.atomic():
                row = IdempotencyKey.objects.create(user=user, endpoint=endpoint[:300], key=key,
                                                    request_hash=request_hash)
            return Claim(row_id=row.pk)
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(user=user, endpoint=endpoint[:300],
                                                 key=key).first()
        if existing is None:  # released between our INSERT and this read: try again
            continue
        if _expired(existing):
            IdempotencyKey.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if existing.request_hash != request_hash:
            raise Conflict("This Idempotency-Key was already used with a different request body.",
                           details={"code": "key_reused"})
        if existing.status == IdempotencyKey.Status.IN_PROGRESS:
            raise Conflict("A request with this Idempotency-Key is still in progress.",
                           details={"code": "in_progress"})
        return Replay(status=existing.response_status or 200, body=existing.response_body)
    raise Conflict("A request with this Idempotency-Key is still in progress.",
                   details={"code": "in_progress"})


def idempotency_complete(*, claim: Claim, status: int, body: Any) -> None:
    """Store the first response for replay (a claim replaced meanwhile stores nothing)."""
    IdempotencyKey.objects.filter(pk=claim.row_id,
                                  status=IdempotencyKey.Status.IN_PROGRESS).update(
        status=IdempotencyKey.Status.COMPLETED, response_status=status,
        response_body=json.loads(json.dumps(body, cls=JSONEncoder)),
        completed_at=timezone.now())


def idempotency_purge(*, limit: int = 5000) -> int:
    """Delete keys past their 24 h window (a periodic clean-up; expiry is also checked on use)."""
    cutoff = timezone.now() - KEY_TTL
    ids = list(IdempotencyKey.objects.filter(created_at__lt=cutoff)
               .values_list("pk", flat=True)[:limit])
    return IdempotencyKey.objects.filter(pk__in=ids).delete()[0]


def idempotency_release(*, claim: Claim) -> None:
    """Forget a claim whose request failed, so the same key may be retried."""
    IdempotencyKey.objects.filter(pk=claim.row_id,
                                  status=IdempotencyKey.Status.IN_PROGRESS).delete()


def _key_from(request: Request) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ValidationFailed(
            f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters.",
            details={HEADER: [f"1-{MAX_KEY_LENGTH} printable ASCII characters."]})
    return key


ViewMethod = Callable[..., Response]


def idempotent(method: ViewMethod) -> ViewMethod:
    """Honour `Idempotency-Key` on a DRF view method (a request without the header runs as is)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = _key_from(request)
        if key is None:
            return method(self, request, *args, **kwargs)
        assert isinstance(request.user, User)  # the API needs authentication before a view runs
        claim = idempotency_claim(user=request.user, endpoint=f"{request.method} {request.path}",
                                  key=key, body=request.data)
        if isinstance(claim, Replay):
            replay = Response(claim.body, status=claim.status)
            replay[REPLAY_HEADER] = "true"
            return replay
        try:
            # the response is stored in the same transaction as what the request created, so a
            # crash between the two cannot leave a done request whose key looks unused
            with transaction.atomic():
                response = method(self, request, *args, **kwargs)
                if response.status_code < 400:
                    idempotency_complete(claim=claim, status=response.status_code,
                                         body=response.data)
        except BaseException:
            idempotency_release(claim=claim)
            raise
        if response.status_code >= 400:
            idempotency_release(claim=claim)
        return response

    return wrapper
