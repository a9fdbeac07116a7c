"""Collection schedules: generations on a cron (UTC unless a time zone is given) or an interval,
run by beat as the schedule's owner. Each run is an ordinary job.

A due schedule is claimed with a conditional UPDATE that advances `next_run_at` from the slot it
read, in the same transaction as the run's row and its job, so a slot runs exactly once however
many beats fire; missed slots (beat was down) are skipped, not replayed in a burst.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from collections_app import selectors as collection_selectors
from emprops.api import get_or_not_found
from emprops.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InsufficientCredits,
    ValidationFailed,
)
from generation_app.models import CollectionSchedule, ScheduleRun
from generation_app.services.requests import generation_request

logger = logging.getLogger(__name__)

MAX_INTERVAL_SECONDS = 366 * 24 * 3600


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"Unknown time zone {name!r}.",
                               details={"timezone": ["Not an IANA time zone name."]}) from None


def _check_cron(cron: str) -> None:
    from croniter import croniter

    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ValidationFailed(f"Invalid cron expression {cron!r}.",
                               details={"cron": ["Expected 5 fields: minute hour day month "
                                                 "weekday."]})


def next_run_after(*, cron: str | None, interval_seconds: int | None, tz: str,
                   after: datetime, slot: datetime | None = None) -> datetime:
    """The first run time strictly after `after`. An interval counts from `slot` (the previous
    run time) so runs keep their rhythm; a cron reads its fields in `tz`."""
    if interval_seconds:
        if slot is None:
            return after + timedelta(seconds=interval_seconds)
        steps = max(1, math.floor((after - slot).total_seconds() / interval_seconds) + 1)
        return slot + timedelta(seconds=steps * interval_seconds)
    from croniter import croniter

    assert cron is not None
    local = after.astimezone(ZoneInfo(tz))
    nxt = croniter(cron, local).get_next(datetime)
    return nxt.astimezone(ZoneInfo("UTC"))


# ---- reads -------------------------------------------------------------------------------------

def schedule_list(*, user: Any, collection_id: Any = None) -> QuerySet[CollectionSchedule]:
    qs = CollectionSchedule.objects.filter(user=user)
    if collection_id is not None:
        qs = qs.filter(collection_id=collection_id)
    return qs.order_by("-created_at")


def schedule_get(*, user: Any, schedule_id: Any) -> CollectionSchedule:
    return get_or_not_found(schedule_list(user=user), label="Schedule", pk=schedule_id)


def schedule_run_list(*, user: Any, schedule_id: Any) -> QuerySet[ScheduleRun]:
    schedule = schedule_get(user=user, schedule_id=schedule_id)
    return ScheduleRun.objects.filter(schedule=schedule).order_by("-scheduled_for")


# ---- writes ------------------------------------------------------------------------------------

@transaction.atomic
def schedule_create(*, user: Any, collection_id: Any, cron: str | None = None,
                    interval_seconds: int | None = None, timezone_name: str = "UTC",
                    end_at: datetime | None = None, count: int = 1,
                    variables: Mapping[str, Any] | None = None) -> CollectionSchedule:
    """A schedule on one of the user's collections (404 for others'); 400 for a bad cron, time
    zone or interval, or an end in the past."""
    collection = collection_selectors.collection_get(user=user, collection_id=collection_id)
    if (cron is None) == (interval_seconds is None):
        raise ValidationFailed("Give either cron or interval_seconds.",
                               details={"cron": ["Give either cron or interval_seconds."]})
    _zone(timezone_name)
    if cron is not None:
        cron = " ".join(cron.split())
        _check_cron(cron)
    if interval_seconds is not None and not (
            settings.SCHEDULE_MIN_INTERVAL_SECONDS <= interval_seconds <= MAX_INTERVAL_SECONDS):
        raise ValidationFailed(
            f"interval_seconds must be between {settings.SCHEDULE_MIN_INTERVAL_SECONDS} and "
            f"{MAX_INTERVAL_SECONDS}.",
            details={"interval_seconds": ["Out of range."]})
    known = {v.get("name") for v in (collection.data or {}).get("variables") or []
             if isinstance(v, dict)}
    unknown = sorted(str(k) for k in (variables or {}) if k not in known)
    if unknown:  # caught now rather than as a refused run later
        raise ValidationFailed(f"Unknown variables: {', '.join(unknown)}.",
                               details={"variables": [f"The collection has no variable '{n}'."
                                                      for n in unknown]})
    now = timezone.now()
    if end_at is not None and end_at <= now:
        raise ValidationFailed("end_at is in the past.", details={"end_at": ["In the past."]})
    first = next_run_after(cron=cron, interval_seconds=interval_seconds, tz=timezone_name,
                           after=now)
    ended = end_at is not None and first > end_at
    return CollectionSchedule.objects.create(
        user=user, collection=collection, cron=cron, interval_seconds=interval_seconds,
        timezone=timezone_name, end_at=end_at, count=count, variables=dict(variables or {}),
        status=CollectionSchedule.Status.ENDED if ended else CollectionSchedule.Status.ACTIVE,
        next_run_at=None if ended else first)


def schedule_delete(*, user: Any, schedule_id: Any) -> None:
    """Deletes the schedule and its run rows (the jobs it started stay)."""
    schedule_get(user=user, schedule_id=schedule_id).delete()


@transaction.atomic
def schedule_pause(*, user: Any, schedule_id: Any) -> CollectionSchedule:
    """No runs until resumed; 409 for an ended schedule."""
    schedule = schedule_get(user=user, schedule_id=schedule_id)
    schedule = CollectionSchedule.objects.select_for_update().get(pk=schedule.pk)
    if schedule.status == CollectionSchedule.Status.ENDED:
        raise Conflict("The schedule has ended.", details={"status": schedule.status})
    schedule.status = CollectionSchedule.Status.PAUSED
    schedule.save(update_fields=["status", "updated_at"])
    return schedule


@transaction.atomic
def schedule_resume(*, user: Any, schedule_id: Any) -> CollectionSchedule:
    """Runs again from the next slot after now (missed slots are not replayed); 409 when ended."""
    schedule = schedule_get(user=user, schedule_id=schedule_id)
    schedule = CollectionSchedule.objects.select_for_update().get(pk=schedule.pk)
    if schedule.status == CollectionSchedule.Status.ENDED:
        raise Conflict("The schedule has ended.", details={"status": schedule.status})
    now = timezone.now()
    nxt = next_run_after(cron=schedule.cron, interval_seconds=schedule.interval_seconds,
                         tz=schedule.timezone, after=now)
    if schedule.end_at is not None and nxt > schedule.end_at:
        schedule.status, schedule.next_run_at = CollectionSchedule.Status.ENDED, None
    else:
        schedule.status, schedule.next_run_at = CollectionSchedule.Status.ACTIVE, nxt
    schedule.save(update_fields=["status", "next_run_at", "updated_at"])
    return schedule


# ---- running -----------------------------------------------------------------------------------

def schedules_run_due(*, limit: int = 100) -> int:
    """Run every due active schedule once (beat calls this); returns how many runs were made."""
    now = timezone.now()
    due = CollectionSchedule.objects.filter(status=CollectionSchedule.Status.ACTIVE,
                                            next_run_at__lte=now).order_by("next_run_at")
    runs = 0
    for schedule_id, slot in list(due.values_list("pk", "next_run_at")[:limit]):
        assert slot is not None  # filtered on next_run_at__lte
        try:
            if schedule_run(schedule_id=schedule_id, slot=slot, now=now):
                runs += 1
        except Exception:  # one broken schedule must not stop the others; beat retries it
            logger.exception("schedule %s failed to run", schedule_id)
    return runs


@transaction.atomic
def schedule_run(*, schedule_id: Any, slot: datetime, now: datetime) -> ScheduleRun | None:
    """Claim the slot and start its job; None when another beat already took it.

    A refusal (credits, a deactivated owner, or a collection that no longer validates) is recorded
    as a refused run and pauses the schedule: it would be refused again until someone acts.
    """
    schedule = CollectionSchedule.objects.select_related("user").get(pk=schedule_id)
    nxt = next_run_after(cron=schedule.cron, interval_seconds=schedule.interval_seconds,
                         tz=schedule.timezone, after=now, slot=slot)
    ended = schedule.end_at is not None and nxt > schedule.end_at
    claimed = CollectionSchedule.objects.filter(
        pk=schedule_id, status=CollectionSchedule.Status.ACTIVE, next_run_at=slot).update(
        next_run_at=None if ended else nxt, last_run_at=now,
        status=CollectionSchedule.Status.ENDED if ended else CollectionSchedule.Status.ACTIVE,
        updated_at=now)
    if not claimed:
        return None
    run = ScheduleRun(schedule=schedule, scheduled_for=slot, status=ScheduleRun.Status.ACCEPTED)
    try:
        with transaction.atomic():  # a refused request leaves nothing behind
            if not schedule.user.is_active:  # nobody runs or spends as a deactivated user
                raise Forbidden("The schedule's owner is deactivated.",
                                details={"user": ["Deactivated."]})
            run.job = generation_request(user=schedule.user, collection_id=schedule.collection_id,
                                         variables=schedule.variables, count=schedule.count)
    except DomainError as exc:
        run.status = ScheduleRun.Status.REFUSED
        run.error = exc.message[:2000]
        if not ended:
            CollectionSchedule.objects.filter(pk=schedule_id).update(
                status=CollectionSchedule.Status.PAUSED)
        log = logger.info if isinstance(exc, InsufficientCredits) else logger.warning
        log("schedule %s run refused, paused: %s", schedule_id, exc.message)
    run.save()
    return run
