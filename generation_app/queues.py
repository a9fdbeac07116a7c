"""Queue names (`engine`, `browser`, `io`, and `service.<name>` per direct_job service plugin),
and the announcements sent to them.

A message only announces work whose row is the record (a node run, a webhook delivery). Tasks
are named, not imported, so the services that announce work do not import the task module that
calls them.
"""

from __future__ import annotations

RUN_NODE = "generation.run_node"
DELIVER_WEBHOOK = "generation.deliver_webhook"

FIXED_QUEUES = ("engine", "browser", "io")
SERVICE_PREFIX = "service."


def service_queue(service: str) -> str:
    return SERVICE_PREFIX + service


def all_queue_names() -> list[str]:
    from generation_app.nodes.services import registered_services

    return [*FIXED_QUEUES, *(service_queue(s) for s in registered_services())]


def announce_run(run_id: int, queue: str, priority: int, *, countdown: float | None = None) -> None:
    """Tell a queue that a node run is ready; a `countdown` (a short retry backoff) delays the
    message, and the reaper covers its loss."""
    from emprops.celery import app

    app.send_task(RUN_NODE, args=(run_id,), queue=queue, priority=priority, countdown=countdown)


def announce_webhook(delivery_id: str) -> None:
    """Tell the `io` queue that a webhook delivery is due."""
    from emprops.celery import app

    app.send_task(DELIVER_WEBHOOK, args=(delivery_id,), queue="io")
