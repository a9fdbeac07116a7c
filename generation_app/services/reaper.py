"""The beat reaper: re-announce work nobody picked up, take back expired leases, enforce limits.

The broker only announces work; this is what makes a lost message or a killed worker harmless.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from emprops.idempotency import idempotency_purge
from generation_app.models import Generation, NodeRun
from generation_app.nodes.base import NodeError
from generation_app.services import admission, recording
from jobs_app import services as jobs
from jobs_app.models import Job

logger = logging.getLogger(__name__)


def reap() -> dict[str, int]:
    """One pass; returns counts of what it did (for logs and tests)."""
    now = timezone.now()
    counts = {"reannounced": 0, "expired": 0, "no_consumer": 0, "timed_out": 0, "due": 0,
              "started": 0}
    # 1. jobs over the maximum run time fail (their running nodes lose their claims)
    limit = now - timedelta(seconds=settings.MAX_JOB_RUN_SECONDS)
    for job in Job.objects.filter(status=Job.Status.PROCESSING, started_at__lt=limit)[:100]:
        _time_out(job)
        counts["timed_out"] += 1
    # 2. a queued run nobody consumes for too long fails, naming its queue
    stale = now - timedelta(seconds=settings.NO_CONSUMER_FAIL_SECONDS)
    consumed: set[str] | None = None
    for run in NodeRun.objects.select_related("job").filter(
            status=NodeRun.Status.QUEUED, next_attempt_at__isnull=True, queued_at__lt=stale,
            attempt=0)[:100]:
        if consumed is None:
            consumed = consumed_queues()
        if consumed is UNKNOWN or run.queue in consumed:
            continue  # a backlog on a queue someone consumes is not an orphaned queue
        # a worker may claim the run between the read and this update: then it is theirs
        # (its attempt is 1 too, so failing it regardless would fail a live run)
        if not NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.QUEUED,
                                      attempt=0).update(status=NodeRun.Status.RUNNING, attempt=1):
            continue
        run.attempt = 1
        recording.node_run_fail(run=run, error=NodeError(
            f"No worker consumes the queue '{run.queue}' (waited "
            f"{settings.NO_CONSUMER_FAIL_SECONDS} s).", failure_type="INTERNAL"))
        counts["no_consumer"] += 1
    # 3. expired leases: the worker died; the work goes back to the queue
    expired = NodeRun.objects.filter(status=NodeRun.Status.RUNNING, lease_until__lt=now)
    for run in expired.select_related("job")[:500]:
        if NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING,
                                  lease_until__lt=now).update(
                status=NodeRun.Status.QUEUED, lease_until=None, announced_at=now):
            admission.announce_now(run.pk, run.queue, run.job.priority)
            counts["expired"] += 1
    # 4. waiting generations that may start: a run_at that has come, or a user under their cap
    # whose admission (queued on the commit of a finished generation) was lost with its worker
    waiting_users = (Generation.objects.filter(
        Q(job__not_before__isnull=True) | Q(job__not_before__lte=now),
        status=Generation.Status.WAITING).exclude(job__status__in=Job.FINISHED)
        .order_by().values_list("job__user_id", flat=True).distinct()[:100])
    for user_id in list(waiting_users):
        admission.admit_waiting(user_id=user_id)
        counts["started"] += 1
    # 5. queued work never picked up (a lost message) or due after a backoff
    unclaimed = now - timedelta(seconds=settings.NODE_UNCLAIMED_SECONDS)
    due = NodeRun.objects.filter(
        Q(status=NodeRun.Status.QUEUED)
        & ((Q(next_attempt_at__isnull=True) & (Q(announced_at__lt=unclaimed)
                                               | Q(announced_at__isnull=True)))
           | (Q(next_attempt_at__lte=now) & (Q(announced_at__isnull=True)
                                             | Q(announced_at__lt=unclaimed)))))
    for run in due.select_related("job")[:500]:
        if run.next_attempt_at is None and run.announced_at and run.queued_at and \
                now - run.announced_at < run.announced_at - run.queued_at:
            # still waiting behind a backlog: re-announce ever more rarely, so a long queue
            # does not fill the broker with duplicate messages
            continue
        if NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.QUEUED).update(
                announced_at=now):
            admission.announce_now(run.pk, run.queue, run.job.priority)
            counts["due" if run.next_attempt_at else "reannounced"] += 1
    counts["idempotency_keys_purged"] = idempotency_purge()
    return counts


UNKNOWN: set[str] = set()


def consumed_queues() -> set[str]:
    """Queues some live worker consumes (asked over the broker); UNKNOWN when nobody answers."""
    from emprops.celery import app

    try:
        replies = app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception:  # the broker is unreachable: decide nothing
        return UNKNOWN
    names = {q["name"] for queues in replies.values() for q in queues or []}
    return names or UNKNOWN


def _time_out(job: Job) -> None:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status in Job.FINISHED:
            return
        error = NodeError(f"The job ran longer than {settings.MAX_JOB_RUN_SECONDS} s.",
                          failure_type="TIMEOUT")
        writes = recording.JobWrites(locked)
        for gen in Generation.objects.select_for_update().filter(job=locked).exclude(
                status__in=Generation.FINISHED):
            recording.generation_fail(writes=writes, gen=gen, component="job", error=error)
        writes.flush()
        # the finished status is the stream's final `job_update` (clients watch for it)
        jobs.job_changed(job=locked)
