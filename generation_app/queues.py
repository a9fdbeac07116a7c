"""Queue names: `engine`, `browser`, `io`, and `service.<name>` per direct_job service plugin."""

from __future__ import annotations

FIXED_QUEUES = ("engine", "browser", "io")
SERVICE_PREFIX = "service."


def service_queue(service: str) -> str:
    return SERVICE_PREFIX + service


def all_queue_names() -> list[str]:
    from generation_app.nodes.services import registered_services

    return [*FIXED_QUEUES, *(service_queue(s) for s in registered_services())]
