"""Housekeeping: the one periodic pass (reaper, due webhooks, due schedules) and its counters.

Beat fires one `generation.housekeeping` task instead of three, so Flower shows one line per
interval; what the pass did is added to counters in Redis, which `/metrics` reads on the web
process (generation_app/metrics.py), so no worker has to expose anything itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from django.conf import settings

from generation_app.collectors.services.housekeeping import collectors_housekeeping
from generation_app.services import reaper, schedules, webhooks

logger = logging.getLogger(__name__)

# One hash: fields `reaper:<action>`, `webhooks_announced`, `schedules_run`, `errors:<part>`,
# `runs` (counters) and `last_run` (unix time of the last finished pass).
COUNTERS_KEY = "emprops:ops:housekeeping"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.EVENTS_REDIS_URL, socket_connect_timeout=2,
                                socket_timeout=2)


def housekeeping_run() -> dict[str, int]:
    """One pass of the periodic work; returns what it did and adds it to the counters.

    Each part runs even when another raised; the first error is re-raised after the counts
    are recorded, so the task still shows as failed."""
    counts: dict[str, int] = {}
    errors: list[Exception] = []

    def part(name: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # the other parts still run
            logger.exception("housekeeping: %s failed", name)
            counts[f"errors:{name}"] = 1
            errors.append(exc)

    def reap() -> None:
        counts.update({f"reaper:{k}": v for k, v in reaper.reap().items()})

    def announce() -> None:
        counts["webhooks_announced"] = webhooks.deliveries_announce_due()

    def run_schedules() -> None:
        counts["schedules_run"] = schedules.schedules_run_due()

    part("reaper", reap)
    part("webhooks", announce)
    part("schedules", run_schedules)
    # only what it did: a pass with no collectors' work adds no keys
    part("collectors", lambda: counts.update(
        {k: v for k, v in collectors_housekeeping().items() if v}))
    _record(counts)
    if errors:
        raise errors[0]
    return counts


def _record(counts: dict[str, int]) -> None:
    try:
        pipe = _redis().pipeline(transaction=False)
        for field, value in counts.items():
            if value:
                pipe.hincrby(COUNTERS_KEY, field, value)
        pipe.hincrby(COUNTERS_KEY, "runs", 1)
        pipe.hset(COUNTERS_KEY, "last_run", repr(time.time()))
        pipe.execute()
    except redis.RedisError:  # the work is done; only its tally is lost
        logger.warning("housekeeping: could not record counts %s", counts)


def housekeeping_counters() -> dict[str, float]:
    """The counters so far (empty before the first pass); raises redis.RedisError when down."""
    raw = _redis().hgetall(COUNTERS_KEY)
    return {k.decode(): float(v) for k, v in raw.items()}
