"""The Celery app. Queues: `engine`, `browser`, `io`, `service.<name>`; see generation_app.tasks."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

app = Celery("emprops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _use_django_logging(**_kwargs: object) -> None:
    # Django's LOGGING (request ids, secret redaction) applies to workers too
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_init.connect
@worker_process_init.connect
def _sync_worker(**_kwargs: object) -> None:
    # Playwright's sync API keeps an asyncio loop on the worker's thread, which Django's
    # async-safety check mistakes for an async context. Worker code is plain synchronous code, so
    # the check is a false positive in workers only (the web process keeps it).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
