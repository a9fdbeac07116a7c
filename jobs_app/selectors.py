"""Reads for jobs; every read takes the viewer."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from emprops.api import get_or_not_found
from jobs_app.models import Job, JobEvent, JobHistory


def job_list(*, user: Any) -> QuerySet[Job]:
    return Job.objects.filter(user=user).order_by("-created_at")


def job_get(*, user: Any, job_id: UUID | str) -> Job:
    """The user's job, or NotFound: other users' jobs look exactly like missing ones."""
    return get_or_not_found(job_list(user=user), label="Job", pk=job_id)


def job_history_list(*, user: Any, job_id: UUID | str) -> QuerySet[JobHistory]:
    job = job_get(user=user, job_id=job_id)
    return JobHistory.objects.filter(job=job).order_by("created_at", "id")


def job_events_after(*, job_id: UUID | str, seq: int) -> list[JobEvent]:
    """Events of a job after `seq` (callers have checked the viewer already)."""
    return list(JobEvent.objects.filter(job_id=job_id, seq__gt=seq).order_by("seq"))
