"""Webhooks: an outbox of deliveries, signed the Standard Webhooks way, retried with backoff.

Deliveries are rows written in the same transaction as the job change they report (so an event
is sent only when its change committed, and a committed change is never lost); the commit
announces each to the `io` queue and the beat re-announces due ones. A sender claims a row with a
conditional UPDATE that moves `next_attempt_at` forward by a lease, sends outside any transaction
through the SSRF guard, and records the attempt against the claim it holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from emprops.api import get_or_not_found
from emprops.errors import ValidationFailed
from generation_app.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from generation_app.queues import announce_webhook
from jobs_app.models import Job

logger = logging.getLogger(__name__)

EVENTS = ("completed", "failed", "progress", "generation_completed")
SECRET_PREFIX = "whsec_"
_ERROR_LIMIT = 2000


# ---- secrets and signatures ----------------------------------------------------------------------

def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_secret_get(*, user: Any) -> WebhookSecret:
    """The user's signing secret, made on first use."""
    row, _ = WebhookSecret.objects.get_or_create(user=user, defaults={"secret": _new_secret()})
    return row


@transaction.atomic
def webhook_secret_rotate(*, user: Any) -> WebhookSecret:
    """A new signing secret; the old one stops signing at once."""
    row = webhook_secret_get(user=user)
    row = WebhookSecret.objects.select_for_update().get(pk=row.pk)
    row.secret = _new_secret()
    row.rotated_at = timezone.now()
    row.save(update_fields=["secret", "rotated_at"])
    return row


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the decoded secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# ---- endpoints -----------------------------------------------------------------------------------

def webhook_endpoint_list(*, user: Any) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(user=user).order_by("-created_at")


def webhook_url_check(*, url: str, field: str = "url") -> None:
    """ValidationFailed (400) naming `field` for a URL the SSRF guard refuses without DNS: not
    http(s), a host that is not valid, a loopback name, or a non-public address literal in any
    spelling (hosts on OUTBOUND_ALLOW_HOSTS excepted). A host name passes: its addresses are
    vetted at each delivery, after DNS. Resolving here would put a DNS wait into the request and
    prove nothing about the answer at delivery time, when the guard checks again anyway."""
    from emprops.netguard import UnresolvableHost, UnsafeURL, vet_url

    def no_dns(host: str, port: int) -> list[str]:
        raise OSError("resolved at delivery")

    try:
        vet_url(url, allow_hosts=settings.OUTBOUND_ALLOW_HOSTS, resolver=no_dns)
    except UnresolvableHost:
        return  # a name, not an address: vetted at delivery
    except UnsafeURL as exc:
        message = f"Webhooks cannot be sent to this URL: {exc.reason}."
        raise ValidationFailed(f"Invalid input: {field}: {message}",
                               details={field: [message]}) from None


def webhook_endpoint_create(*, user: Any, url: str, events: Iterable[str] = (),
                            active: bool = True) -> WebhookEndpoint:
    """A standing endpoint for every job of the user (no events: all of them); 400 for a URL
    the SSRF guard would refuse at delivery."""
    webhook_url_check(url=url)
    return WebhookEndpoint.objects.create(user=user, url=url, events=sorted(set(events)),
                                          active=active)


def webhook_endpoint_delete(*, user: Any, endpoint_id: Any) -> None:
    """Deletes the endpoint; its past deliveries stay, pending ones still go out."""
    get_or_not_found(webhook_endpoint_list(user=user), label="Webhook endpoint",
                     pk=endpoint_id).delete()


def webhook_delivery_list(*, user: Any) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(user=user).order_by("-created_at")


def webhook_delivery_get(*, user: Any, delivery_id: Any) -> WebhookDelivery:
    return get_or_not_found(webhook_delivery_list(user=user).prefetch_related("attempt_rows"),
                            label="Webhook delivery", pk=delivery_id)


# ---- the outbox ----------------------------------------------------------------------------------

def _wants(events: Any, event: str) -> bool:
    return not events or event in events


def _active_endpoints(job: Job) -> list[WebhookEndpoint]:
    """The owner's active endpoints, read once per job instance (one recording transaction asks
    for several events of the same job)."""
    cached: list[WebhookEndpoint] | None = getattr(job, "_webhook_endpoints", None)
    if cached is None:
        cached = list(WebhookEndpoint.objects.filter(user_id=job.user_id, active=True))
        job._webhook_endpoints = cached  # type: ignore[attr-defined]
    return cached


def _targets(job: Job, event: str) -> list[tuple[WebhookEndpoint | None, str]]:
    targets: list[tuple[WebhookEndpoint | None, str]] = []
    request_hook = (job.data or {}).get("webhook")
    if isinstance(request_hook, Mapping) and isinstance(request_hook.get("url"), str) \
            and _wants(request_hook.get("events"), event):
        targets.append((None, request_hook["url"]))
    for endpoint in _active_endpoints(job):
        if _wants(endpoint.events, event):
            targets.append((endpoint, endpoint.url))
    return targets


def _job_summary(job: Job) -> dict[str, Any]:
    return {"id": str(job.id), "name": job.name, "job_type": job.job_type, "status": job.status,
            "progress": 100 if job.status == Job.Status.COMPLETED else job.progress,
            "error_message": job.error_message,
            "collection_id": (job.data or {}).get("collectionId"),
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "completed_at": job.completed_at.isoformat() if job.completed_at else None}


def enqueue(*, job: Job, event: str, data: Mapping[str, Any], key: str | None = None,
            targets: list[tuple[WebhookEndpoint | None, str]] | None = None) -> int:
    """Write one delivery per target wanting `event`, in the caller's transaction; they are
    announced when it commits. `key` makes the enqueue idempotent per (job, event, target)."""
    if targets is None:
        targets = _targets(job, event)
    if not targets:
        return 0
    now = timezone.now()
    created: list[uuid.UUID] = []
    for endpoint, url in targets:
        webhook_id = uuid.uuid4()
        payload = {"type": event, "timestamp": now.isoformat(), "data": dict(data)}
        dedupe = None
        if key is not None:
            target = str(endpoint.pk) if endpoint else "request"
            dedupe = f"{job.id}:{event}:{target}:{key}"[:300]
        try:
            with transaction.atomic():  # a savepoint: a duplicate leaves the caller's work intact
                row = WebhookDelivery.objects.create(
                    webhook_id=webhook_id, user_id=job.user_id, job=job, endpoint=endpoint,
                    url=url, event=event, payload=payload, next_attempt_at=now,
                    announced_at=now, dedupe_key=dedupe)
        except IntegrityError:
            continue
        created.append(row.pk)
    if created:
        transaction.on_commit(lambda: _announce(created))
    return len(created)


def job_finished(*, job: Job) -> None:
    """`completed` or `failed` for a job that just finished (cancelled jobs report nothing)."""
    if job.status not in (Job.Status.COMPLETED, Job.Status.FAILED):
        return
    enqueue(job=job, event=str(job.status),
            data={"job": _job_summary(job), "outputs": (job.data or {}).get("outputs") or [],
                  # itemised: per generation and step, what was charged and why
                  "cost": (job.data or {}).get("cost")},
            key=f"retry{job.retry_count}")


def generation_completed(*, job: Job, output: Mapping[str, Any]) -> None:
    """`generation_completed` with the GenerationOutput."""
    gen = output.get("generation") or {}
    enqueue(job=job, event="generation_completed",
            data={"job_id": str(job.id), "generation": gen, "output": dict(output)},
            key=f"{gen.get('id')}:retry{job.retry_count}")


def job_progress(*, job: Job) -> None:
    """`progress`, at most once per job per WEBHOOK_PROGRESS_INTERVAL_SECONDS. The caller holds
    the job's row lock, so the throttle cannot race."""
    if job.status in Job.FINISHED:
        return  # `completed` / `failed` say it
    targets = _targets(job, "progress")
    if not targets:
        return
    since = timezone.now() - timedelta(seconds=settings.WEBHOOK_PROGRESS_INTERVAL_SECONDS)
    if WebhookDelivery.objects.filter(job=job, event="progress", created_at__gte=since).exists():
        return
    enqueue(job=job, event="progress", data={"job": _job_summary(job)}, targets=targets)


def _announce(ids: Iterable[uuid.UUID]) -> None:
    for delivery_id in ids:
        announce_webhook(str(delivery_id))


def deliveries_announce_due() -> int:
    """Re-announce deliveries that are due (a backoff passed, a message was lost, a sender
    died holding its claim). Each is announced once per due time, and again only if nobody
    claimed it within NODE_UNCLAIMED_SECONDS."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.NODE_UNCLAIMED_SECONDS)
    due = WebhookDelivery.objects.filter(
        Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
        & (Q(announced_at__isnull=True) | Q(announced_at__lt=F("next_attempt_at"))
           | Q(announced_at__lt=stale)))
    ids = list(due.values_list("pk", flat=True)[:500])
    if ids:
        WebhookDelivery.objects.filter(pk__in=ids).update(announced_at=now)
        _announce(ids)
    return len(ids)


# ---- sending -------------------------------------------------------------------------------------

def backoff_seconds(attempt: int) -> float:
    """The wait after the `attempt`-th failed attempt: the WEBHOOK_BACKOFF_SECONDS steps, the
    last one repeating."""
    steps = settings.WEBHOOK_BACKOFF_SECONDS
    return float(steps[min(len(steps), max(1, attempt)) - 1])


def _claim(delivery_id: Any) -> WebhookDelivery | None:
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 30)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now,
    ).update(next_attempt_at=lease, attempts=F("attempts") + 1)
    if not claimed:
        return None
    return WebhookDelivery.objects.get(pk=delivery_id)


def webhook_deliver(*, delivery_id: Any) -> str | None:
    """Claim a due delivery and make one attempt; returns its status, or None when another sender
    holds it or it is not due."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    from emprops.netguard import UnsafeURL, safe_client

    secret = webhook_secret_get(user=delivery.user).secret
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "EmProps-Webhooks/1",
        "webhook-id": str(delivery.webhook_id),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, webhook_id=str(delivery.webhook_id),
                                  timestamp=timestamp, body=body),
    }
    started = timezone.now()
    clock = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    permanent = False
    try:
        with safe_client(allow_hosts=settings.OUTBOUND_ALLOW_HOSTS,
                         timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as client:
            # a redirect answers the POST, it is not followed: the receiver must name its URL;
            # the body is never read, so a receiver cannot make us hold a large answer
            with client.stream("POST", delivery.url, content=body, headers=headers,
                               follow_redirects=False) as response:
                status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except UnsafeURL as exc:
        error, permanent = str(exc), True
    except Exception as exc:  # network errors, timeouts, invalid URLs: retried
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT]
    duration_ms = int((time.monotonic() - clock) * 1000)
    return _record(delivery=delivery, started=started, status_code=status_code, error=error,
                   permanent=permanent, duration_ms=duration_ms)


def _record(*, delivery: WebhookDelivery, started: datetime, status_code: int | None,
            error: str | None, permanent: bool, duration_ms: int) -> str | None:
    now = timezone.now()
    fields: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
    if error is None:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, delivered_at=now,
                      next_attempt_at=None)
    else:
        retry_at = now + timedelta(seconds=backoff_seconds(delivery.attempts))
        give_up = retry_at > delivery.created_at + timedelta(
            seconds=settings.WEBHOOK_MAX_AGE_SECONDS)
        if permanent or give_up:
            fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        else:
            fields.update(next_attempt_at=retry_at)
    with transaction.atomic():
        # only the claim this sender holds may record (a sender whose lease ran out may not)
        won = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.PENDING,
            attempts=delivery.attempts).update(**fields)
        WebhookAttempt.objects.create(delivery=delivery, attempted_at=started,
                                      status_code=status_code, error=error,
                                      duration_ms=duration_ms)
    if error is not None:
        # the URL stays out of logs: receivers often carry a token in it
        logger.info("webhook delivery %s attempt %s failed: %s", delivery.pk, delivery.attempts,
                    error.split(":", 1)[0])  # the kind only; the full text is in the attempt row
    return str(fields.get("status", WebhookDelivery.Status.PENDING)) if won else None
