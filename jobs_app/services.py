"""Writes for jobs: history rows and live events, always inside the caller's transaction.

An event row is written in the same transaction as the change it describes and published to
Redis only on commit, so a client never sees an event whose row did not commit, and replay from
the rows covers a publish lost in a crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from jobs_app.models import Job, JobHistory

logger = logging.getLogger(__name__)
_redis: redis.Redis | None = None


def events_channel(job_id: Any) -> str:
    return f"emprops:job-events:{job_id}"


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.EVENTS_REDIS_URL)
    return _redis


def events_pubsub() -> Any:
    """A pub/sub connection on the events Redis (the caller subscribes and closes it)."""
    return redis.Redis.from_url(settings.EVENTS_REDIS_URL, socket_timeout=5,
                                socket_connect_timeout=2).pubsub()


def event_says_cancelled(raw: Any) -> bool:
    """Whether a published event payload is the job's `job_update` to `cancelled`."""
    try:
        event = json.loads(raw)
    except (TypeError, ValueError):
        return False
    return (isinstance(event, dict) and event.get("event") == "job_update"
            and isinstance(event.get("data"), dict)
            and event["data"].get("status") == Job.Status.CANCELLED)


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


def event_emit(*, job: Job, event_type: str, data: dict[str, Any]) -> int:
    """Append an event (next per-job sequence number) and publish it when the transaction commits;
    returns its sequence number."""
    clean = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    # One statement takes the next number (locking the job row until commit, so the sequence has
    # no gaps or duplicates however many workers write events of one job) and writes the row.
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH s AS (UPDATE job SET event_seq = event_seq + 1 WHERE id = %s "
            "RETURNING event_seq) "
            "INSERT INTO job_event (job_id, seq, event_type, data, created_at) "
            "SELECT %s, s.event_seq, %s, %s::jsonb, %s FROM s RETURNING seq",
            [job.pk, job.pk, event_type, json.dumps(clean), timezone.now()])
        seq_value = int(cursor.fetchone()[0])
    _publish_on_commit(job.pk, seq_value, event_type, clean)
    return seq_value


def _publish_on_commit(job_id: Any, seq: int, event_type: str, data: dict[str, Any]) -> None:
    payload = json.dumps({"seq": seq, "event": event_type, "data": data})
    transaction.on_commit(lambda: _publish(job_id, payload))


def job_changed(*, job: Job) -> None:
    """Emit a `job_update` with the job's current state (call after saving it)."""
    event_emit(job=job, event_type="job_update", data=job_snapshot(job))


def history_add(*, job: Job, status: str, message: str, data: dict[str, Any] | None = None,
                retry_attempt: int = 0, dedupe_key: str | None = None) -> JobHistory | None:
    """A history row plus its `job_history` event; a repeated `dedupe_key` writes nothing.

    One statement writes both: the row (skipped on a repeated dedupe key), the next event number
    and the event that carries the row, so a node run's history costs one round trip.
    """
    clean = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))
    now = timezone.now()
    event_data = {"id": None, "job_id": str(job.pk), "status": status, "message": message,
                  "data": clean, "retry_attempt": retry_attempt, "created_at": now.isoformat()}
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH h AS ("
            " INSERT INTO job_history (job_id, status, message, data, retry_attempt, dedupe_key,"
            " created_at) VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)"
            " ON CONFLICT ON CONSTRAINT uniq_history_dedupe DO NOTHING RETURNING id), "
            "s AS (UPDATE job SET event_seq = event_seq + 1 WHERE id = %s"
            " AND EXISTS (SELECT 1 FROM h) RETURNING event_seq) "
            "INSERT INTO job_event (job_id, seq, event_type, data, created_at) "
            "SELECT %s, s.event_seq, 'job_history', jsonb_set(%s::jsonb, '{id}', to_jsonb(h.id)),"
            " %s FROM s, h RETURNING seq, (data->>'id')::bigint",
            [job.pk, status, message, json.dumps(clean), retry_attempt, dedupe_key, now,
             job.pk, job.pk, json.dumps(event_data), now])
        written = cursor.fetchone()
    if written is None:  # the dedupe key was there already
        return None
    seq_value, row_id = int(written[0]), int(written[1])
    event_data["id"] = row_id
    _publish_on_commit(job.pk, seq_value, "job_history", event_data)
    return JobHistory(id=row_id, job=job, status=status, message=message, data=clean,
                      retry_attempt=retry_attempt, dedupe_key=dedupe_key, created_at=now)


@dataclass(frozen=True)
class HistoryEntry:
    """One history row for `history_add_many`; its dedupe key is required (it names the row)."""

    status: str
    message: str
    dedupe_key: str
    data: dict[str, Any] = field(default_factory=dict)
    retry_attempt: int = 0


_HISTORY_MANY_SQL = (
    "WITH v AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS v(ord int, status text,"
    " message text, data jsonb, retry_attempt int, dedupe_key text, event jsonb)), "
    "h AS (INSERT INTO job_history (job_id, status, message, data, retry_attempt, dedupe_key,"
    " created_at) SELECT %s, v.status, v.message, v.data, v.retry_attempt, v.dedupe_key, %s"
    " FROM v ORDER BY v.ord"
    " ON CONFLICT ON CONSTRAINT uniq_history_dedupe DO NOTHING RETURNING id, dedupe_key), "
    "w AS (SELECT h.id, v.event, row_number() OVER (ORDER BY v.ord) AS n,"
    " count(*) OVER () AS c FROM v JOIN h ON h.dedupe_key = v.dedupe_key), "
    "s AS (UPDATE job SET event_seq = event_seq + (SELECT count(*) FROM w) WHERE id = %s"
    " AND EXISTS (SELECT 1 FROM w) RETURNING event_seq) "
    "INSERT INTO job_event (job_id, seq, event_type, data, created_at) "
    "SELECT %s, s.event_seq - w.c + w.n, 'job_history', jsonb_set(w.event, '{id}', to_jsonb(w.id)),"
    " %s FROM s, w RETURNING seq, data::text"
)


def history_add_many(*, job: Job, entries: Sequence[HistoryEntry]) -> int:
    """`history_add` for several rows in one statement: the rows in order, each with its
    `job_history` event numbered in the same order; rows whose dedupe key is already there are
    skipped. Returns how many were written. The dedupe keys must differ from each other."""
    if not entries:
        return 0
    keys = [e.dedupe_key for e in entries]
    if len(set(keys)) != len(keys) or not all(keys):
        raise ValueError("history_add_many needs distinct, non-empty dedupe keys")
    now = timezone.now()
    rows = []
    for ord_, e in enumerate(entries):
        clean = json.loads(json.dumps(e.data or {}, cls=DjangoJSONEncoder))
        rows.append({"ord": ord_, "status": e.status, "message": e.message, "data": clean,
                     "retry_attempt": e.retry_attempt, "dedupe_key": e.dedupe_key,
                     "event": {"id": None, "job_id": str(job.pk), "status": e.status,
                               "message": e.message, "data": clean,
                               "retry_attempt": e.retry_attempt, "created_at": now.isoformat()}})
    with connection.cursor() as cursor:
        cursor.execute(_HISTORY_MANY_SQL, [json.dumps(rows), job.pk, now, job.pk, job.pk, now])
        written = sorted((int(seq), data) for seq, data in cursor.fetchall())
    for seq_value, data in written:
        _publish_on_commit(job.pk, seq_value, "job_history", json.loads(data))
    return len(written)
