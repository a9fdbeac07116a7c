"""Admitting and announcing work: which generations start, which node runs are ready, who runs one.

The database is the record of pending work; a message only announces it, on commit. A user's
generations start while they are under their running cap (a per-user advisory lock serialises
the decision). A blocked run becomes queued when the dependencies frozen in its plan are done. A
run is claimed with a conditional UPDATE that sets a lease, so a killed worker's claim expires
and the reaper re-queues it.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from generation_app.models import Generation, NodeRun
from generation_app.nodes.registry import VARIABLES_STEP_ID
from generation_app.queues import announce_run
from jobs_app.models import Job

DONE = (NodeRun.Status.COMPLETED, NodeRun.Status.SKIPPED)
Announce = tuple[int, str, int]  # (node run id, queue, priority)


class Ready(NamedTuple):
    """A run `_queue_ready` released, with its frozen plan so the caller need not look it up."""

    run_id: int
    queue: str
    priority: int
    inline: bool

    def announce(self) -> Announce:
        return self.run_id, self.queue, self.priority


def _generation_runs(job: Job, gid: int) -> list[dict[str, Any]]:
    """Every node run of one generation, as the runner needs them (one query)."""
    rows: Any = NodeRun.objects.filter(job_id=job.pk, gid=gid).values(
        "id", "step_id", "node_name", "alias", "status", "queue", "inline", "depends_on",
        "workflow_digest", "output", "output_files", "cost", "charged", "charge_reason",
        "cached_from_id")
    return list(rows)


# ---- announcing work ----------------------------------------------------------------------------

def _announce_on_commit(items: list[Announce], *, countdown: float | None = None) -> None:
    if not items:
        return

    def send() -> None:
        for run_id, queue, priority in items:
            announce_run(run_id, queue, priority, countdown=countdown)

    transaction.on_commit(send)


def _queue_ready(job: Job, gid: int, *, unfinished: list[int] | None = None,
                 rows: list[dict[str, Any]] | None = None) -> list[Ready]:
    """Mark the generation's blocked runs whose dependencies (frozen in the plan) are done as
    queued. `unfinished`, when given, receives the ids of the generation's runs not done; `rows`,
    when given, are the generation's runs as `_generation_runs` read them under the job's lock."""
    runs = rows if rows is not None else _generation_runs(job, gid)
    done = {r["step_id"] for r in runs if r["status"] in DONE}
    if unfinished is not None:
        unfinished += [r["id"] for r in runs if r["status"] not in DONE]
    ready = [r for r in runs if r["status"] == NodeRun.Status.BLOCKED
             and all(d in done or d == VARIABLES_STEP_ID for d in r["depends_on"] or ())]
    if not ready:
        return []
    now = timezone.now()
    NodeRun.objects.filter(id__in=[r["id"] for r in ready], status=NodeRun.Status.BLOCKED).update(
        status=NodeRun.Status.QUEUED, queued_at=now, announced_at=now)
    return [Ready(r["id"], r["queue"], job.priority, r["inline"]) for r in ready]


def _user_lock(user_id: Any) -> None:
    key = int.from_bytes(hashlib.sha256(f"gen-cap:{user_id}".encode()).digest()[:8], "big",
                         signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def admit_waiting(*, user_id: Any, known_waiting: bool = False) -> None:
    """Start the user's oldest waiting generations while they are under their running cap.

    The cap is per user, so one user's flood never holds back another user's work. Inside a
    transaction it joins it (no savepoint): a finished generation's recording admits the next.
    """
    # Most users have nothing waiting: a plain read says so without a transaction. A generation
    # made to wait by a request that commits just after this read is started by the reaper.
    if not known_waiting and not Generation.objects.filter(job__user_id=user_id,
                                     status=Generation.Status.WAITING).exists():
        return
    with transaction.atomic(savepoint=False):
        _user_lock(user_id)
        active = Generation.objects.filter(
            job__user_id=user_id,
            status__in=(Generation.Status.PENDING, Generation.Status.PROCESSING)).count()
        slots = settings.MAX_RUNNING_GENERATIONS_PER_USER - active
        if slots <= 0:
            return
        due = Q(job__not_before__isnull=True) | Q(job__not_before__lte=timezone.now())
        waiting = list(Generation.objects.filter(due, job__user_id=user_id,
                                                 status=Generation.Status.WAITING)
                       .select_related("job").order_by("job__created_at", "job_id", "gid")[:slots])
        items: list[Announce] = []
        for gen in waiting:
            Generation.objects.filter(pk=gen.pk, status=Generation.Status.WAITING).update(
                status=Generation.Status.PENDING)
            items += [r.announce() for r in _queue_ready(gen.job, gen.gid)]
        _announce_on_commit(items)


def generations_admit_new(*, job: Job, count: int) -> int | None:
    """How many of a new job's `count` generations may start at once (the rest wait), holding
    the user's cap lock to the end of the transaction; None when older generations of the user
    are waiting and a slot is free: they go first (`admit_waiting`)."""
    if job.not_before is not None and job.not_before > timezone.now():
        return 0
    _user_lock(job.user_id)
    counts = dict(Generation.objects.filter(
        job__user_id=job.user_id, status__in=(Generation.Status.WAITING, Generation.Status.PENDING,
                                              Generation.Status.PROCESSING))
        .values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    active = counts.get(Generation.Status.PENDING, 0) + counts.get(Generation.Status.PROCESSING, 0)
    free = max(0, settings.MAX_RUNNING_GENERATIONS_PER_USER - active)
    if counts.get(Generation.Status.WAITING):
        # older generations go first; with no free slot there is nothing to hand out at all
        return None if free else 0
    return min(count, free)


def runs_announce(runs: list[NodeRun], priority: int) -> None:
    """Announce queued runs when the transaction commits."""
    _announce_on_commit([(r.pk, r.queue, priority) for r in runs])


# ---- claiming ------------------------------------------------------------------------------------

def node_run_claim(*, run_id: int, worker: str) -> NodeRun | None:
    """Take a run for this worker: queued and due, or running with an expired lease."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.NODE_LEASE_SECONDS)
    claimable = (Q(status=NodeRun.Status.QUEUED)
                 & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))) \
        | Q(status=NodeRun.Status.RUNNING, lease_until__lt=now)
    claimed = NodeRun.objects.filter(Q(pk=run_id) & claimable).update(
        status=NodeRun.Status.RUNNING, attempt=F("attempt") + 1, lease_until=lease,
        started_at=now, worker=worker[:200], next_attempt_at=None)
    if not claimed:
        return None
    return NodeRun.objects.select_related("job").get(pk=run_id)


def announce_now(run_id: int, queue: str, priority: int) -> None:
    """Announce one run when the transaction commits (at once outside one: the reaper)."""
    transaction.on_commit(lambda: announce_run(run_id, queue, priority))
