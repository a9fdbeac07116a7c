"""What `/metrics` exposes, computed at scrape time from the database and Redis.

A custom collector rather than counters in process memory: the work happens in Celery worker
processes and the scrape hits a web process, so the figures come from where the work is
recorded (rows, broker lists, the housekeeping counters in Redis), the same from any web
process, with no multiprocess mode. Every query is an aggregate with a bounded cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.db.models.functions import Greatest
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from emprops.accounts.models import CreditsHold
from generation_app.models import NodeRun, WebhookDelivery
from generation_app.queues import all_queue_names
from generation_app.services import ops
from jobs_app.models import Job

logger = logging.getLogger(__name__)

# Node-run durations: a snapshot of the runs completed in the last hour (a gauge histogram, since
# runs leave the window), looked for among the newest DURATION_MAX_ROWS node runs only, so the
# query reads a bounded primary-key range however large the table grows.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DURATION_WINDOW = timedelta(hours=1)
DURATION_MAX_ROWS = 100_000

REAPER_ACTIONS = ("reannounced", "expired", "no_consumer", "timed_out", "due", "started",
                  "idempotency_keys_purged")


def broker_queue_keys(queue: str) -> list[str]:
    """The Redis lists a Celery queue's messages wait in: one per priority step (kombu's naming:
    the queue itself for step 0, `<queue><sep><step>` for the others)."""
    options: dict[str, Any] = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    sep: str = options.get("sep", Channel.sep)
    prefix: str = options.get("global_keyprefix", "")
    steps: list[int] = options.get("priority_steps", PRIORITY_STEPS)
    return [prefix + (f"{queue}{sep}{step}" if step else queue) for step in steps]


def _broker_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1,
                                socket_timeout=1)


class EmpropsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield self._jobs()
        yield self._durations()
        yield self._oldest_waiting()
        yield from self._webhooks_and_credits()
        up = GaugeMetricFamily("emprops_metrics_redis_up",
                               "1 when the broker and counter Redis answered this scrape",
                               labels=["redis"])
        try:
            yield self._queue_depth()
            up.add_metric(["broker"], 1)
        except redis.RedisError:
            logger.warning("metrics: the broker Redis did not answer")
            up.add_metric(["broker"], 0)
        try:
            yield from self._housekeeping()
            up.add_metric(["events"], 1)
        except redis.RedisError:
            logger.warning("metrics: the events Redis did not answer")
            up.add_metric(["events"], 0)
        yield up

    def _jobs(self) -> Metric:
        family = GaugeMetricFamily("emprops_jobs", "Jobs by status", labels=["status"])
        counts = dict.fromkeys(Job.Status.values, 0)
        for row in Job.objects.order_by().values("status").annotate(n=Count("id")):
            counts[row["status"]] = row["n"]
        for status, n in counts.items():
            family.add_metric([status], n)
        return family

    def _durations(self) -> Metric:
        family = GaugeHistogramMetricFamily(
            "emprops_node_run_duration_seconds",
            "Run time (started to completed) of the node runs completed in the last hour, "
            "by node type", labels=["node_type"])
        newest = NodeRun.objects.aggregate(m=Max("id"))["m"] or 0
        duration = ExpressionWrapper(F("completed_at") - F("started_at"),
                                     output_field=DurationField())
        buckets = {f"le_{i}": Count("id", filter=Q(
            completed_at__lte=F("started_at") + timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)}
        rows = (NodeRun.objects.order_by()
                .filter(id__gt=newest - DURATION_MAX_ROWS, status=NodeRun.Status.COMPLETED,
                        completed_at__gte=timezone.now() - DURATION_WINDOW,
                        started_at__isnull=False)
                .values("node_name").annotate(n=Count("id"), total=Sum(duration), **buckets))
        for values in rows:
            row: dict[str, Any] = dict(values)
            cumulative = [(str(bound), float(row[f"le_{i}"]))
                          for i, bound in enumerate(DURATION_BUCKETS)]
            cumulative.append(("+Inf", float(row["n"])))
            total = row["total"] or timedelta(0)
            family.add_metric([row["node_name"]], cumulative,
                              gsum_value=total.total_seconds())
        return family

    def _oldest_waiting(self) -> Metric:
        family = GaugeMetricFamily(
            "emprops_queue_oldest_waiting_seconds",
            "Age of the longest-waiting queued node run per queue (since it was queued, or since "
            "its retry came due); 0 when none waits", labels=["queue"])
        now = timezone.now()
        ages = dict.fromkeys(all_queue_names(), 0.0)
        rows = (NodeRun.objects.order_by()
                .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
                        status=NodeRun.Status.QUEUED, queued_at__isnull=False)
                .values("queue").annotate(since=Min(Greatest("queued_at", "next_attempt_at"))))
        for row in rows:
            ages[row["queue"]] = max(0.0, (now - row["since"]).total_seconds())
        for queue, age in ages.items():
            family.add_metric([queue], age)
        return family

    def _webhooks_and_credits(self) -> Iterator[Metric]:
        pending = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).count()
        yield GaugeMetricFamily("emprops_webhook_deliveries_pending",
                                "Webhook deliveries not yet delivered nor given up",
                                value=pending)
        held = CreditsHold.objects.filter(status=CreditsHold.Status.HELD).aggregate(
            n=Count("id"), remaining=Sum("remaining"))
        yield GaugeMetricFamily("emprops_credits_held",
                                "Credits held for running jobs and not yet charged or released",
                                value=float(held["remaining"] or 0))
        yield GaugeMetricFamily("emprops_credit_holds_open", "Open credit holds (one per job)",
                                value=held["n"])

    def _queue_depth(self) -> Metric:
        family = GaugeMetricFamily("emprops_queue_depth",
                                   "Messages waiting in the broker per queue (all priorities)",
                                   labels=["queue"])
        queues = all_queue_names()
        pipe = _broker_redis().pipeline(transaction=False)
        for queue in queues:
            for key in broker_queue_keys(queue):
                pipe.llen(key)
        lengths = iter(pipe.execute())
        for queue in queues:
            family.add_metric([queue], sum(next(lengths) for _ in broker_queue_keys(queue)))
        return family

    def _housekeeping(self) -> Iterator[Metric]:
        counters = ops.housekeeping_counters()
        reaper = CounterMetricFamily("emprops_reaper_actions",
                                     "What the reaper did, by action", labels=["action"])
        actions = dict.fromkeys(REAPER_ACTIONS, 0.0)
        actions.update({k.split(":", 1)[1]: v for k, v in counters.items()
                        if k.startswith("reaper:")})
        for action, n in actions.items():
            reaper.add_metric([action], n)
        yield reaper
        yield CounterMetricFamily("emprops_webhook_deliveries_reannounced",
                                  "Due webhook deliveries announced again by housekeeping",
                                  value=counters.get("webhooks_announced", 0.0))
        yield CounterMetricFamily("emprops_schedule_runs", "Scheduled runs started",
                                  value=counters.get("schedules_run", 0.0))
        yield CounterMetricFamily("emprops_housekeeping_runs", "Housekeeping passes",
                                  value=counters.get("runs", 0.0))
        errors = CounterMetricFamily("emprops_housekeeping_errors",
                                     "Housekeeping parts that raised", labels=["part"])
        for part in ("reaper", "webhooks", "schedules"):
            errors.add_metric([part], counters.get(f"errors:{part}", 0.0))
        yield errors
        if "last_run" in counters:
            yield GaugeMetricFamily("emprops_housekeeping_last_run_timestamp_seconds",
                                    "When the last housekeeping pass finished (unix time)",
                                    value=counters["last_run"])


registry = CollectorRegistry(auto_describe=False)
registry.register(EmpropsCollector())
