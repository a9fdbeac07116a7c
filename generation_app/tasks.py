"""Thin, idempotent tasks: they take ids and call one service. Delivering one twice is harmless:
the node run's conditional claim lets only one delivery do the work."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from generation_app.services import reaper, running, schedules, webhooks


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="generation.run_node")
def run_node(self: Any, run_id: int) -> None:
    worker = f"{self.request.hostname or 'local'}"
    pending = [run_id]
    while pending:  # cheap built-ins that become ready run right here, in order
        pending.extend(running.node_run_execute(run_id=pending.pop(0), worker=worker))


@shared_task(ignore_result=True, name="generation.reap")
def reap() -> dict[str, int]:
    return reaper.reap()


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="generation.deliver_webhook")
def deliver_webhook(self: Any, delivery_id: str) -> None:
    webhooks.webhook_deliver(delivery_id=delivery_id)


@shared_task(ignore_result=True, name="generation.redeliver_webhooks")
def redeliver_webhooks() -> int:
    return webhooks.deliveries_announce_due()


@shared_task(ignore_result=True, name="generation.run_due_schedules")
def run_due_schedules() -> int:
    return schedules.schedules_run_due()
