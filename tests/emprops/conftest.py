from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.workers import WebProcess, WorkerProcess


@pytest.fixture(scope="module")
def live_platform(django_db_setup: Any, django_db_blocker: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    """One uvicorn server and one Celery worker for a whole module (tests using it also need
    `transactional_db`, so the two processes see what the test writes)."""
    import redis
    from django.conf import settings

    tmp = tmp_path_factory.mktemp("platform")
    with django_db_blocker.unblock():
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        worker = WorkerProcess(tmp).start()
        try:
            web = WebProcess(tmp).start()
        except BaseException:
            worker.stop()
            raise
    yield web
    web.stop()
    worker.stop()
