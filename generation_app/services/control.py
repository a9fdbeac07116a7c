"""Cancel and retry a job."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from collections_app.services import generation_input_validate
from emprops.accounts import services as accounts
from emprops.errors import Conflict
from generation_app.models import Generation, NodeRun
from generation_app.services import admission
from generation_app.services.quote import quote_steps
from generation_app.services.steps import node_run_plan, plan_steps, workflow_snapshots_store
from jobs_app import selectors as job_selectors
from jobs_app import services as jobs
from jobs_app.models import Job


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
    transaction.on_commit(lambda: admission.admit_waiting(user_id=job.user_id))
    return job


@transaction.atomic
def job_retry(*, user: Any, job_id: UUID, refresh_workflows: bool = False) -> Job:
    """Re-run the failed generations only (their failed and cancelled steps); 409 when none failed.

    A retry runs the job's frozen plan. With `refresh_workflows` the job's input is validated,
    planned and quoted again against the workflows as they are now (400/422 when it no longer
    can run, 402 when the new quote is more than the user has), and the retried runs take the
    new plan; generations that completed keep theirs.
    """
    job = job_selectors.job_get(user=user, job_id=job_id)
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status not in Job.FINISHED:
        raise Conflict("The job is still running.", details={"status": job.status})
    failed = list(Generation.objects.filter(job=job, status=Generation.Status.FAILED))
    if not failed:
        raise Conflict("Nothing failed: there is nothing to retry.",
                       details={"status": job.status})
    gids = [g.gid for g in failed]
    replan = _replan(job=job, gids=gids) if refresh_workflows else None
    accounts.credits_hold_reopen(job_id=job.id, gids=gids,
                                 per_generation=replan.per_generation if replan else None)
    job.retry_count += 1
    job.status = Job.Status.PROCESSING
    job.error_message = None
    job.completed_at = None
    job.save(update_fields=["retry_count", "status", "error_message", "completed_at",
                            "updated_at"])
    retried = NodeRun.objects.filter(job=job, gid__in=gids).exclude(
        status__in=(NodeRun.Status.COMPLETED, NodeRun.Status.SKIPPED))
    if replan is not None:
        for step_id, (queue, inline, depends_on, digest) in replan.runs.items():
            retried.filter(step_id=step_id).update(queue=queue, inline=inline,
                                                   depends_on=depends_on, workflow_digest=digest)
    retried.update(status=NodeRun.Status.BLOCKED, attempt=0, retries=0, retrying_since=None,
                   error=None, progress=0, lease_until=None, next_attempt_at=None)
    Generation.objects.filter(pk__in=[g.pk for g in failed]).update(
        status=Generation.Status.WAITING, error=None, failure_type=None, completed_at=None)
    jobs.history_add(job=job, status="processing", message=f"Retry attempt {job.retry_count}",
                     data={"gids": gids, "refresh_workflows": refresh_workflows,
                           **({"quote": replan.quote} if replan else {})},
                     retry_attempt=job.retry_count)
    jobs.job_changed(job=job)
    transaction.on_commit(lambda: admission.admit_waiting(user_id=job.user_id))
    return job


@dataclass(frozen=True)
class _Replan:
    per_generation: Decimal
    quote: dict[str, Any]
    runs: dict[int, tuple[str, bool, list[int], str | None]]  # step id -> frozen plan


def _replan(*, job: Job, gids: list[int]) -> _Replan:
    """The job's input planned and quoted again against the workflows as they are now."""
    # a workflow deleted or misconfigured since the job was planned: 422 before validation
    # would call the stored input a bad request
    plan_steps(job.input or {})
    data = generation_input_validate(job.input or {})
    plan = plan_steps(data)
    quoted = quote_steps(plan.steps, generations=len(gids), workflows=plan.named)
    quote, per_generation = quoted.public(), quoted.per_generation
    digests = workflow_snapshots_store(plan.workflows)
    runs = {}
    for step in plan.steps:
        queue, inline, depends_on = node_run_plan(step, plan)
        runs[step["id"]] = (queue, inline, depends_on, digests.get(step["nodeName"]))
    return _Replan(per_generation=per_generation, quote=quote, runs=runs)
