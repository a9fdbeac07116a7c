"""The Celery app. Queues: `engine`, `browser`, `io`, `service.<name>`; see generation_app.tasks."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging

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
