"""Ops endpoints and housekeeping: /healthz, /metrics, the one periodic task."""

from __future__ import annotations

import importlib
import socket
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from emprops.accounts.models import CreditsHold
from emprops.accounts.services import credits_hold
from emprops.celery import app
from generation_app.housekeeping import housekeeping
from generation_app.metrics import broker_queue_keys
from generation_app.models import NodeRun, WebhookDelivery
from generation_app.queues import all_queue_names
from generation_app.services import health, ops
from jobs_app.models import Job
from tests.workers import wait_for

SECRET = "s3cr3t-pa55word"


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- /healthz -------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.timeout(30)
def test_healthz_is_503_naming_redis_when_redis_is_unreachable_and_leaks_no_secret(client):
    # given the events Redis pointed at a closed port (with a password in its URL), no worker
    events_url = f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/2"

    with override_settings(EVENTS_REDIS_URL=events_url):
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started

    # then 503 names the failing parts: Redis, and the queues nobody consumes
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["failing"] == ["queues", "redis"]
    assert body["checks"]["redis"]["error"] == "ConnectionError"
    assert {part: c["status"] for part, c in body["checks"].items()} == {
        "database": "ok", "redis": "fail", "broker": "ok", "storage": "ok", "queues": "fail"}
    assert body["checks"]["queues"]["missing"] == ["engine", "browser", "io"]
    assert body["checks"]["queues"]["consumers"] == dict.fromkeys(all_queue_names(), 0)
    assert all(isinstance(c["latency_ms"], float) for c in body["checks"].values())
    assert elapsed < health.TOTAL_SECONDS + 0.5
    # no secrets and no traceback, however the failure reads
    text = response.content.decode()
    for secret in (SECRET, settings.SECRET_KEY, settings.DATABASES["default"]["PASSWORD"] or SECRET,
                   events_url, settings.CELERY_BROKER_URL, "Traceback"):
        assert secret not in text
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
@pytest.mark.timeout(30)
def test_a_dead_broker_fails_its_parts_within_the_time_bound():
    # given every Redis-backed target on closed ports
    targets = health.HealthTargets(database="default",
                                   redis_urls=(f"redis://127.0.0.1:{_closed_port()}/1",),
                                   broker_url=f"redis://127.0.0.1:{_closed_port()}/0")

    started = time.monotonic()
    result = health.health_check(targets=targets)
    elapsed = time.monotonic() - started

    assert result["failing"] == ["broker", "queues", "redis"]
    assert result["checks"]["database"]["status"] == "ok"
    assert result["checks"]["storage"]["status"] == "ok"
    assert elapsed < health.TOTAL_SECONDS + 0.5


@pytest.mark.django_db
def test_healthz_answers_only_safe_methods(client):
    response = client.post("/healthz")

    assert response.status_code == 405


@pytest.mark.timeout(120)
def test_healthz_is_200_with_a_live_worker_whose_beat_runs_housekeeping(client, worker):
    # given a real worker (every queue, embedded beat at a 1 s interval)

    # when the health check asks
    def healthy() -> Any:
        response = client.get("/healthz")
        return response if response.status_code == 200 else None

    response = wait_for(healthy, timeout=30, interval=0.5)

    # then every part is up and each queue has its one consumer
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert {part: c["status"] for part, c in body["checks"].items()} == dict.fromkeys(
        ["database", "redis", "broker", "storage", "queues"], "ok")
    assert body["checks"]["queues"]["consumers"] == dict.fromkeys(all_queue_names(), 1)
    # and the worker imported the housekeeping task (CELERY_IMPORTS) and beat fires it
    wait_for(lambda: ops.housekeeping_counters().get("runs", 0) >= 2, timeout=30)
    log = worker.output()
    assert "generation.housekeeping" in log
    assert "unregistered task" not in log
    for old in ("generation.reap[", "generation.redeliver_webhooks[",
                "generation.run_due_schedules["):
        assert old not in log


# ---- housekeeping -----------------------------------------------------------------------------

def test_beat_fires_one_housekeeping_task_and_the_old_names_stay_registered():
    app.loader.import_default_modules()  # what a worker does at start (CELERY_IMPORTS)

    assert {name: entry["task"] for name, entry in settings.CELERY_BEAT_SCHEDULE.items()} == {
        "housekeeping": "generation.housekeeping"}
    assert settings.CELERY_BEAT_SCHEDULE["housekeeping"]["schedule"] == \
        settings.REAPER_INTERVAL_SECONDS
    assert {"generation.housekeeping", "generation.reap", "generation.redeliver_webhooks",
            "generation.run_due_schedules"} <= set(app.tasks)


@pytest.mark.django_db
def test_the_migration_removes_the_old_database_beat_entries_only():
    from django.apps import apps
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    for name, task in [("reap-node-runs", "generation.reap"),
                       ("redeliver-webhooks", "generation.redeliver_webhooks"),
                       ("run-due-schedules", "generation.run_due_schedules"),
                       ("housekeeping", "generation.housekeeping"),
                       ("nightly-report", "reports.nightly")]:
        PeriodicTask.objects.create(name=name, task=task, interval=every)
    migration = importlib.import_module("generation_app.migrations.0005_housekeeping_beat_entry")

    migration.remove_old_entries(apps, None)

    assert sorted(PeriodicTask.objects.values_list("name", flat=True)) == [
        "housekeeping", "nightly-report"]


# ---- /metrics ---------------------------------------------------------------------------------

def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _run(job: Job, step: int, node: str, *, status: str = NodeRun.Status.COMPLETED,
         queue: str = "engine", **fields: Any) -> NodeRun:
    return NodeRun.objects.create(job=job, gid=0, step_id=step, node_name=node, queue=queue,
                                  status=status, **fields)


@pytest.mark.django_db
@pytest.mark.timeout(30)
def test_metrics_report_what_the_rows_redis_and_housekeeping_hold(client, alice, purge_broker):
    now = timezone.now()
    # given jobs in several states
    done = Job.objects.create(user=alice, name="done", status=Job.Status.COMPLETED)
    Job.objects.create(user=alice, name="done too", status=Job.Status.COMPLETED)
    running = Job.objects.create(user=alice, name="running", status=Job.Status.PROCESSING)
    Job.objects.create(user=alice, name="failed", status=Job.Status.FAILED)
    # node runs completed in the last hour (p5: 0.3 s, 4 s, 45 s; prompt: 0.05 s), one completed
    # two hours ago and one failed, which the histogram leaves out
    ended = now - timedelta(minutes=10)
    for step, (node, seconds) in enumerate([("p5", 0.3), ("p5", 4), ("p5", 45), ("prompt", 0.05)]):
        _run(done, step, node, started_at=ended - timedelta(seconds=seconds), completed_at=ended)
    _run(done, 10, "p5", started_at=now - timedelta(hours=2, seconds=1),
         completed_at=now - timedelta(hours=2))
    _run(done, 11, "p5", status=NodeRun.Status.FAILED, started_at=ended - timedelta(seconds=1),
         completed_at=ended)
    # queued runs on `browser` (the oldest waits 120 s); one waits out a backoff (not counted)
    for step, age in [(20, 120), (21, 30)]:
        _run(running, step, "p5", status=NodeRun.Status.QUEUED, queue="browser",
             queued_at=now - timedelta(seconds=age), announced_at=now)
    _run(running, 22, "p5", status=NodeRun.Status.QUEUED, queue="browser",
         queued_at=now - timedelta(seconds=1000), announced_at=now,
         next_attempt_at=now + timedelta(minutes=5))
    # a running run whose lease expired: the reaper takes it back
    _run(running, 30, "fetch_api", status=NodeRun.Status.RUNNING, queue="io", attempt=1,
         lease_until=now - timedelta(seconds=5))
    # webhook deliveries: one due (housekeeping announces it), two waiting, one delivered
    for next_at, status in [(now - timedelta(seconds=1), WebhookDelivery.Status.PENDING),
                            (now + timedelta(minutes=1), WebhookDelivery.Status.PENDING),
                            (now + timedelta(minutes=2), WebhookDelivery.Status.PENDING),
                            (None, WebhookDelivery.Status.SUCCEEDED)]:
        WebhookDelivery.objects.create(user=alice, url="http://127.0.0.1:9/hook",
                                       event="job.completed", payload={}, status=status,
                                       next_attempt_at=next_at)
    # credits: two open holds (2 and 1.5), one released
    credits_hold(user=alice, job_id=done.id, per_generation=Decimal(2), generations=1, quote={})
    credits_hold(user=alice, job_id=running.id, per_generation=Decimal("1.5"), generations=1,
                 quote={})
    released = Job.objects.create(user=alice, name="released", status=Job.Status.CANCELLED)
    credits_hold(user=alice, job_id=released.id, per_generation=Decimal(1), generations=1,
                 quote={})
    CreditsHold.objects.filter(job_id=released.id).update(status=CreditsHold.Status.RELEASED)
    # one housekeeping pass, then messages waiting in the broker at several priorities
    counts = housekeeping()
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()
    for queue, priority in [("io", 0), ("io", 5), ("io", 9), ("engine", 3)]:
        app.send_task("generation.metrics_probe", queue=queue, priority=priority)

    try:
        response = client.get("/metrics")
    finally:
        broker.flushdb()

    assert counts == {**{f"reaper:{k}": 0 for k in ("reannounced", "no_consumer", "timed_out",
                                                    "due", "started",
                                                    "idempotency_keys_purged")},
                      "reaper:expired": 1, "webhooks_announced": 1, "schedules_run": 0}
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    samples = _samples(response.content.decode())

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert {s: value("emprops_jobs", status=s) for s in Job.Status.values} == {
        "pending": 0, "processing": 1, "completed": 2, "failed": 1, "cancelled": 1}
    p5 = {le: value("emprops_node_run_duration_seconds_bucket", node_type="p5", le=le)
          for le in ("0.1", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "1800.0",
                     "+Inf")}
    assert p5 == {"0.1": 0, "0.5": 1, "1.0": 1, "2.5": 1, "5.0": 2, "10.0": 2, "30.0": 2,
                  "60.0": 3, "1800.0": 3, "+Inf": 3}
    assert value("emprops_node_run_duration_seconds_gcount", node_type="p5") == 3
    assert value("emprops_node_run_duration_seconds_gsum", node_type="p5") == pytest.approx(49.3)
    assert value("emprops_node_run_duration_seconds_bucket", node_type="prompt", le="0.1") == 1
    assert {q: value("emprops_queue_depth", queue=q) for q in all_queue_names()} == {
        q: {"io": 3, "engine": 1}.get(q, 0) for q in all_queue_names()}
    oldest = {q: value("emprops_queue_oldest_waiting_seconds", queue=q) for q in all_queue_names()}
    assert 120 <= oldest.pop("browser") < 130
    # the expired run went back to `io` as queued, but was never queued_at: not a waiting age
    assert oldest == dict.fromkeys(oldest, 0)
    assert value("emprops_webhook_deliveries_pending") == 3
    assert value("emprops_credits_held") == 3.5
    assert value("emprops_credit_holds_open") == 2
    assert value("emprops_reaper_actions_total", action="expired") == 1
    assert value("emprops_reaper_actions_total", action="reannounced") == 0
    assert value("emprops_webhook_deliveries_reannounced_total") == 1
    assert value("emprops_schedule_runs_total") == 0
    assert value("emprops_housekeeping_runs_total") == 1
    assert value("emprops_housekeeping_errors_total", part="reaper") == 0
    assert abs(value("emprops_housekeeping_last_run_timestamp_seconds") - time.time()) < 30
    assert value("emprops_metrics_redis_up", redis="broker") == 1


def test_broker_queue_keys_follow_kombus_priority_naming():
    assert broker_queue_keys("io") == ["io", *(f"io:{p}" for p in range(1, 10))]


@pytest.mark.django_db
def test_metrics_still_answer_from_the_database_when_redis_is_down(client):
    closed = f"redis://127.0.0.1:{_closed_port()}"

    with override_settings(CELERY_BROKER_URL=f"{closed}/0", EVENTS_REDIS_URL=f"{closed}/2"):
        response = client.get("/metrics")

    samples = _samples(response.content.decode())
    assert response.status_code == 200
    assert samples[("emprops_metrics_redis_up", (("redis", "broker"),))] == 0
    assert samples[("emprops_metrics_redis_up", (("redis", "events"),))] == 0
    assert samples[("emprops_jobs", (("status", "pending"),))] == 0
    assert not any(name == "emprops_queue_depth" for name, _ in samples)


@pytest.mark.django_db
@pytest.mark.parametrize(("token", "remote", "headers", "expected"), [
    ("", "127.0.0.1", {}, 200),
    ("", "::1", {}, 200),
    ("", "203.0.113.5", {}, 404),
    ("", "127.0.0.1", {"HTTP_X_FORWARDED_FOR": "203.0.113.5"}, 404),  # a proxy on the host
    ("", "203.0.113.5", {"HTTP_AUTHORIZATION": "Bearer anything"}, 404),
    ("tok-123", "203.0.113.5", {}, 401),
    ("tok-123", "203.0.113.5", {"HTTP_AUTHORIZATION": "Bearer tok-124"}, 401),
    ("tok-123", "127.0.0.1", {"HTTP_AUTHORIZATION": "Bearer tok-124"}, 401),
    ("tok-123", "203.0.113.5", {"HTTP_AUTHORIZATION": "Bearer tok-123"}, 200),
    ("tok-123", "127.0.0.1", {}, 200),
])
def test_metrics_are_open_to_loopback_and_to_the_bearer_token_only(client, token, remote, headers,
                                                                   expected):
    with override_settings(METRICS_TOKEN=token):
        response = client.get("/metrics", REMOTE_ADDR=remote, **headers)

    assert response.status_code == expected
    if expected == 200:
        assert b"# TYPE emprops_jobs gauge" in response.content
    else:
        assert b"emprops_" not in response.content
    if expected == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
