"""Cancel and retry a job."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from emprops.accounts import services as accounts
from emprops.errors import Conflict
from generation_app.services import execution
from jobs_app import selectors as job_selectors
from jobs_app import services as jobs
from jobs_app.models import Generation, Job, NodeRun


@transaction.atomic
def job_cancel(*, user: Any, job_id: UUID) -> Job:
    """Stop queued and running work, release unspent credits; 409 when already finished."""
    job = job_selectors.job_get(user=user, job_id=job_id)
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status in Job.FINISHED:
        raise Conflict(f"The job is already {job.status}.", details={"status": job.status})
    NodeRun.objects.filter(job=job, status__in=(
        NodeRun.Status.BLOCKED, NodeRun.Status.QUEUED, NodeRun.Status.RUNNING)).update(
        status=NodeRun.Status.CANCELLED, lease_until=None)
    Generation.objects.filter(job=job).exclude(status__in=Generation.FINISHED).update(
        status=Generation.Status.CANCELLED, completed_at=timezone.now())
    job.status = Job.Status.CANCELLED
    job.completed_at = timezone.now()
    job.save(update_fields=["status", "completed_at", "updated_at"])
    accounts.credits_release_job(job_id=job.id)
    jobs.history_add(job=job, status="cancelled", message="Job cancelled")
    jobs.job_changed(job=job)
    transaction.on_commit(lambda: execution.admit_waiting(user_id=job.user_id))
    return job


@transaction.atomic
def job_retry(*, user: Any, job_id: UUID) -> Job:
    """Re-run the failed generations only (their failed and cancelled steps); 409 when none failed."""
    job = job_selectors.job_get(user=user, job_id=job_id)
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status not in Job.FINISHED:
        raise Conflict("The job is still running.", details={"status": job.status})
    failed = list(Generation.objects.filter(job=job, status=Generation.Status.FAILED))
    if not failed:
        raise Conflict("Nothing failed: there is nothing to retry.",
                       details={"status": job.status})
    gids = [g.gid for g in failed]
    accounts.credits_hold_reopen(job_id=job.id, gids=gids)
    job.retry_count += 1
    job.status = Job.Status.PROCESSING
    job.error_message = None
    job.completed_at = None
    job.save(update_fields=["retry_count", "status", "error_message", "completed_at",
                            "updated_at"])
    NodeRun.objects.filter(job=job, gid__in=gids).exclude(
        status__in=(NodeRun.Status.COMPLETED, NodeRun.Status.SKIPPED)).update(
        status=NodeRun.Status.BLOCKED, attempt=0, error=None, progress=0, lease_until=None,
        next_attempt_at=None)
    Generation.objects.filter(pk__in=[g.pk for g in failed]).update(
        status=Generation.Status.WAITING, error=None, failure_type=None, completed_at=None)
    jobs.history_add(job=job, status="processing", message=f"Retry attempt {job.retry_count}",
                     data={"gids": gids}, retry_attempt=job.retry_count)
    jobs.job_changed(job=job)
    transaction.on_commit(lambda: execution.admit_waiting(user_id=job.user_id))
    return job
