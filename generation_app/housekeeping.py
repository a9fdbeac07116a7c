"""The periodic housekeeping task (beat's only entry). Its own module, not tasks.py: workers
import it through CELERY_IMPORTS (autodiscovery looks only for `tasks` modules)."""

from __future__ import annotations

from celery import shared_task

from generation_app.services import ops


@shared_task(ignore_result=True, name="generation.housekeeping")
def housekeeping() -> dict[str, int]:
    # Safe to deliver twice or to overlap: each part claims its rows with conditional updates.
    return ops.housekeeping_run()
