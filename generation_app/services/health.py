"""The health check behind `/healthz`: database, Redis, broker, storage and queue consumers.

Every part is probed in its own thread with its own timeout, all at once, and the answer waits
at most `TOTAL_SECONDS`; a part still running then is reported as timed out. The check is
unauthenticated, so it is cheap to call often: a part already being probed (or probed less than
`REUSE_SECONDS` ago) for the same target is not probed again, which bounds the threads, broker
broadcasts and storage writes to a few per second however often it is called. Failures are
named by exception class only: messages carry hosts and URLs, which are not for the public.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import connections
from kombu import Connection

from emprops import storage
from generation_app.queues import FIXED_QUEUES, all_queue_names

PART_TIMEOUT = 0.8  # each socket operation, and the wait for workers' replies
TOTAL_SECONDS = 3.0
REUSE_SECONDS = 1.0

Result = dict[str, Any]


@dataclass(frozen=True)
class HealthTargets:
    """What the check probes (the defaults come from settings: `health_targets()`)."""

    database: str  # a DATABASES alias
    redis_urls: tuple[str, ...]  # cache and events
    broker_url: str


def health_targets() -> HealthTargets:
    urls = [settings.CACHES["default"]["LOCATION"], settings.EVENTS_REDIS_URL]
    return HealthTargets(database="default", redis_urls=tuple(dict.fromkeys(urls)),
                         broker_url=settings.CELERY_BROKER_URL)


def check_database(alias: str) -> Result:
    conn = connections[alias]
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        conn.close()  # this thread's own connection (back to the pool when there is one)
    return {}


def check_redis(urls: tuple[str, ...]) -> Result:
    for url in urls:
        client = redis.Redis.from_url(url, socket_connect_timeout=PART_TIMEOUT,
                                      socket_timeout=PART_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()
    return {}


def _broker(url: str) -> Connection:
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "socket_timeout": PART_TIMEOUT,
               "socket_connect_timeout": PART_TIMEOUT, "max_retries": 0}
    return Connection(url, connect_timeout=PART_TIMEOUT, transport_options=options)


def check_broker(url: str) -> Result:
    with _broker(url) as conn:
        conn.ensure_connection(max_retries=0, timeout=PART_TIMEOUT)
        client = getattr(conn.default_channel, "client", None)
        if client is not None:  # the Redis transport: one command there and back
            client.ping()
    return {}


def check_storage() -> Result:
    key = f"healthz/{uuid.uuid4().hex}.txt"
    storage.save_overwrite(key, b"ok")
    try:
        if storage.read(key) != b"ok":
            raise OSError("storage returned other bytes than were written")
    finally:
        storage.delete(key)
    return {}


class MissingConsumers(Exception):
    pass


def check_queues(url: str) -> Result:
    """Live consumers per queue (asked over the broker); `engine`, `browser` and `io` need one,
    `service.<name>` queues are listed but optional."""
    from emprops.celery import app

    with _broker(url) as conn:
        replies = app.control.inspect(timeout=PART_TIMEOUT, connection=conn).active_queues() or {}
    consumers = dict.fromkeys(all_queue_names(), 0)
    for queues in replies.values():
        for name in {q["name"] for q in queues or []}:
            if name in consumers:
                consumers[name] += 1
    missing = [q for q in FIXED_QUEUES if not consumers[q]]
    if missing:
        raise MissingConsumers({"consumers": consumers, "missing": missing})
    return {"consumers": consumers}


_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="healthz")
_lock = threading.RLock()  # a done future runs its callback at once, under the lock
_recent: dict[tuple[str, str], tuple[Future[Result], float]] = {}


def _timed(call: Callable[[], Result]) -> Result:
    start = time.monotonic()
    try:
        detail = call()
        status = "ok"
    except MissingConsumers as exc:
        detail, status = exc.args[0], "fail"
    except Exception as exc:  # any failure of the part is the answer, never a traceback
        detail, status = {"error": type(exc).__name__}, "fail"
    return {"status": status, "latency_ms": round((time.monotonic() - start) * 1000, 1),
            **detail}


def _probe(part: str, target: str, call: Callable[[], Result]) -> Future[Result]:
    """The part's probe: one already running (or just finished) for this target, or a new one."""
    key = (part, target)
    now = time.monotonic()
    with _lock:
        known = _recent.get(key)
        if known and (not known[0].done() or now - known[1] < REUSE_SECONDS):
            return known[0]
        future = _pool.submit(_timed, call)
        _recent[key] = (future, now)
        future.add_done_callback(lambda _f: _finished(key, future))
        return future


def _finished(key: tuple[str, str], future: Future[Result]) -> None:
    with _lock:
        if key in _recent and _recent[key][0] is future:
            _recent[key] = (future, time.monotonic())


def health_check(*, targets: HealthTargets | None = None) -> dict[str, Any]:
    """`{"status": "ok"|"fail", "failing": [...], "checks": {part: {status, latency_ms, ...}}}`,
    within about TOTAL_SECONDS."""
    t = targets or health_targets()
    start = time.monotonic()
    futures = {
        "database": _probe("database", t.database, lambda: check_database(t.database)),
        "redis": _probe("redis", " ".join(t.redis_urls), lambda: check_redis(t.redis_urls)),
        "broker": _probe("broker", t.broker_url, lambda: check_broker(t.broker_url)),
        "storage": _probe("storage", "default", check_storage),
        "queues": _probe("queues", t.broker_url, lambda: check_queues(t.broker_url)),
    }
    futures_wait(list(futures.values()), timeout=TOTAL_SECONDS)
    checks: dict[str, Result] = {}
    for part, future in futures.items():
        if future.done():
            checks[part] = future.result()
        else:
            checks[part] = {"status": "fail", "error": "timeout",
                            "latency_ms": round((time.monotonic() - start) * 1000, 1)}
    failing = sorted(part for part, result in checks.items() if result["status"] != "ok")
    return {"status": "fail" if failing else "ok", "failing": failing, "checks": checks}
