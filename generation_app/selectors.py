"""Reads that need the engine's rows (generations, node runs) next to a job: why a job waits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.utils import timezone

from jobs_app import selectors as job_selectors
from jobs_app.models import Job

WaitState = Literal["waiting_for_slot", "scheduled", "retrying", "queued"]

# how many of the most recent completed runs of a node type make its typical duration
DURATION_SAMPLE = 50


class WaitInfo(TypedDict):
    state: WaitState | None
    position: int | None
    estimate_seconds: float | None
    retry_at: datetime | None
    run_at: datetime | None


def _not_waiting() -> WaitInfo:
    return {"state": None, "position": None, "estimate_seconds": None, "retry_at": None,
            "run_at": None}


# One row whatever the size of the job or the queues. `head` is the job's oldest ready run (due,
# not backing off); the runs ahead of it on its queue are those a broker delivers first: a higher
# job priority, or the same one and queued earlier. The user's waiting generations ahead of the
# job are admitted first (admission.admit_waiting: oldest job first); scheduled ones are not due.
_STATE_SQL = """
WITH head AS (
    SELECT nr.id, nr.queue, nr.queued_at, nr.node_name FROM node_run nr
    WHERE nr.job_id = %(job)s AND nr.status = 'queued'
      AND (nr.next_attempt_at IS NULL OR nr.next_attempt_at <= %(now)s)
    ORDER BY nr.queued_at NULLS LAST, nr.id LIMIT 1)
SELECT
  (SELECT count(*) FROM node_run WHERE job_id = %(job)s AND status = 'running'),
  (SELECT min(next_attempt_at) FROM node_run
    WHERE job_id = %(job)s AND status = 'queued' AND next_attempt_at > %(now)s),
  head.node_name,
  (SELECT count(*) FROM node_run o JOIN job oj ON oj.id = o.job_id
    WHERE head.id IS NOT NULL AND o.status = 'queued' AND o.queue = head.queue
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= %(now)s)
      AND (oj.priority > %(priority)s OR (oj.priority = %(priority)s
           AND (COALESCE(o.queued_at, %(now)s), o.id) < (COALESCE(head.queued_at, %(now)s), head.id)))),
  (SELECT count(*) FROM job_generation WHERE job_id = %(job)s AND status = 'waiting'),
  (SELECT count(*) FROM job_generation g JOIN job j ON j.id = g.job_id
    WHERE j.user_id = %(user)s AND g.status = 'waiting'
      AND (j.not_before IS NULL OR j.not_before <= %(now)s)
      AND (j.created_at, j.id) < (%(created)s, %(job)s))
FROM (SELECT 1) AS one LEFT JOIN head ON true
"""

# The median of each node type's last DURATION_SAMPLE completed runs (an index walk each:
# node_run_done_by_type).
_MEDIANS_SQL = """
SELECT t.name, percentile_cont(0.5) WITHIN GROUP (ORDER BY d.seconds)
FROM unnest(%s::text[]) AS t(name)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM nr.completed_at - nr.started_at) AS seconds FROM node_run nr
    WHERE nr.node_name = t.name AND nr.status = 'completed'
      AND nr.completed_at IS NOT NULL AND nr.started_at IS NOT NULL
    ORDER BY nr.completed_at DESC LIMIT %s) AS d
GROUP BY t.name
"""


def node_type_medians(names: list[str]) -> dict[str, float]:
    """Median seconds of the recent completed runs of each node type (types with none are left
    out). One query."""
    if not names:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_MEDIANS_SQL, [sorted(set(names)), DURATION_SAMPLE])
        return {name: float(seconds) for name, seconds in cursor.fetchall()
                if seconds is not None}


def _step_node_names(job: Job) -> list[str]:
    return [s["nodeName"] for s in (job.input or {}).get("steps") or []
            if isinstance(s, dict) and isinstance(s.get("nodeName"), str) and not s.get("skip")]


def job_wait_info(job: Job, *, now: datetime | None = None) -> WaitInfo:
    """What an unfinished job is waiting for, where it is in line and about how long it takes.

    `state` (None when the job is finished or running):
    - `scheduled`: its `run_at` (job.not_before) is ahead; `run_at` and the seconds until then;
    - `retrying`: a step backs off after a transient upstream error; `retry_at` is the next try;
    - `queued`: its next step is ready and waits for a worker; `position` counts the due runs
      ahead of it on the same queue, the estimate is that many times the node type's median;
    - `waiting_for_slot`: its generations wait for the user's running cap
      (MAX_RUNNING_GENERATIONS_PER_USER); `position` counts the user's waiting generations ahead
      of it, the estimate is a generation's typical duration (the sum of its steps' medians)
      once per cap-full of generations ahead.
    The estimate is None when no run of the node types completed yet. At most two queries.
    """
    now = now or timezone.now()
    if job.status in Job.FINISHED:
        return _not_waiting()
    if job.not_before is not None and job.not_before > now:
        return {**_not_waiting(), "state": "scheduled", "run_at": job.not_before,
                "estimate_seconds": round((job.not_before - now).total_seconds(), 1)}
    with connection.cursor() as cursor:
        cursor.execute(_STATE_SQL, {"job": job.pk, "user": job.user_id, "now": now,
                                    "priority": job.priority, "created": job.created_at})
        running, retry_at, head_node, queue_ahead, waiting_here, slot_ahead = cursor.fetchone()
    if retry_at is not None:
        return {**_not_waiting(), "state": "retrying", "retry_at": retry_at,
                "estimate_seconds": round((retry_at - now).total_seconds(), 1)}
    if running:
        return _not_waiting()
    if head_node is not None:
        median = node_type_medians([head_node]).get(head_node)
        return {**_not_waiting(), "state": "queued", "position": int(queue_ahead),
                "estimate_seconds": None if median is None else round(median * queue_ahead, 1)}
    if waiting_here:
        names = _step_node_names(job)
        medians = node_type_medians(names)
        known = [medians[n] for n in names if n in medians]
        rounds = math.floor(slot_ahead / max(1, settings.MAX_RUNNING_GENERATIONS_PER_USER)) + 1
        return {**_not_waiting(), "state": "waiting_for_slot", "position": int(slot_ahead),
                "estimate_seconds": round(sum(known) * rounds, 1) if known else None}
    return _not_waiting()


def wait_info_json(info: WaitInfo) -> dict[str, Any]:
    """The wait info as JSON values (times in ISO 8601)."""
    return {**info, "retry_at": info["retry_at"].isoformat() if info["retry_at"] else None,
            "run_at": info["run_at"].isoformat() if info["run_at"] else None}


@dataclass(frozen=True)
class JobDetail:
    job: Job
    waiting: WaitInfo

    @property
    def collection_id(self) -> str | None:
        value = (self.job.data or {}).get("collectionId")
        return value if isinstance(value, str) and value else None


def job_detail_get(*, user: Any, job_id: UUID | str) -> JobDetail:
    """The user's job and what it waits for (NotFound for others' jobs)."""
    job = job_selectors.job_get(user=user, job_id=job_id)
    return JobDetail(job=job, waiting=job_wait_info(job))
