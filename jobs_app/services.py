"""Writes for jobs: history rows and live events, always inside the caller's transaction.

An event row is written in the same transaction as the change it describes and published to
Redis only on commit, so a client never sees an event whose row did not commit, and replay from
the rows covers a publish lost in a crash.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction

from jobs_app.models import Job, JobEvent, JobHistory

logger = logging.getLogger(__name__)
_redis: redis.Redis | None = None


def events_channel(job_id: Any) -> str:
    return f"emprops:job-events:{job_id}"


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.EVENTS_REDIS_URL)
    return _redis


def _publish(job_id: Any, payload: str) -> None:
    try:
        _client().publish(events_channel(job_id), payload)
    except redis.RedisError:  # the row is committed: a reconnect replays it
        logger.warning("could not publish an event of job %s", job_id)


def job_snapshot(job: Job) -> dict[str, Any]:
    return {"id": str(job.id), "status": job.status, "progress": job.progress,
            "error_message": job.error_message, "updated_at": job.updated_at.isoformat()}


def history_row_data(row: JobHistory) -> dict[str, Any]:
    return {"id": row.id, "job_id": str(row.job_id), "status": row.status, "message": row.message,
            "data": row.data, "retry_attempt": row.retry_attempt,
            "created_at": row.created_at.isoformat()}


def event_emit(*, job: Job, event_type: str, data: dict[str, Any]) -> JobEvent:
    """Append an event (next per-job sequence number) and publish it when the transaction commits."""
    # one statement takes the next number and locks the job row until commit, so the
    # sequence has no gaps or duplicates however many workers write events of one job
    with connection.cursor() as cursor:
        cursor.execute("UPDATE job SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",
                       [job.pk])
        seq_value = cursor.fetchone()[0]
    clean = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    event = JobEvent.objects.create(job=job, seq=seq_value, event_type=event_type, data=clean)
    payload = json.dumps({"seq": seq_value, "event": event_type, "data": clean})
    transaction.on_commit(lambda: _publish(job.pk, payload))
    return event


def job_changed(*, job: Job) -> None:
    """Emit a `job_update` with the job's current state (call after saving it)."""
    event_emit(job=job, event_type="job_update", data=job_snapshot(job))


def history_add(*, job: Job, status: str, message: str, data: dict[str, Any] | None = None,
                retry_attempt: int = 0, dedupe_key: str | None = None) -> JobHistory | None:
    """A history row plus its `job_history` event; a repeated `dedupe_key` writes nothing."""
    clean = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))
    if dedupe_key is not None:
        try:
            with transaction.atomic():
                row = JobHistory.objects.create(job=job, status=status, message=message,
                                                data=clean, retry_attempt=retry_attempt,
                                                dedupe_key=dedupe_key)
        except IntegrityError:
            return None
    else:
        row = JobHistory.objects.create(job=job, status=status, message=message, data=clean,
                                        retry_attempt=retry_attempt)
    event_emit(job=job, event_type="job_history", data=history_row_data(row))
    return row
