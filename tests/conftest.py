"""Shared fixtures. The suite runs inside `python -m emprops.embedded exec` (see the Makefile),
which starts PostgreSQL and Redis under var/test/ and points DATABASE_URL / REDIS_URL at them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _clean_redis(settings: Any) -> Iterator[None]:
    """Nothing in cache, throttling or event channels leaks from one test into the next."""
    import redis
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
    redis.Redis.from_url(settings.EVENTS_REDIS_URL).flushdb()


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    from emprops.accounts.services import user_provision

    def make(name: str, **kwargs: Any) -> Any:
        return user_provision(username=name, **kwargs)

    return make


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., Any]) -> Any:
    return make_user("bob")


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Any:
    return make_user("staffer", is_staff=True)


@pytest.fixture
def api_for(db: Any) -> Callable[[Any], Any]:
    """An API client authenticated with a fresh API key of `user` (None: anonymous)."""
    from rest_framework.test import APIClient

    from emprops.accounts.services import api_key_create

    def make(user: Any) -> APIClient:
        client = APIClient()
        if user is not None:
            _, raw = api_key_create(user=user, name="test")
            client.credentials(HTTP_X_API_KEY=raw)
        return client

    return make


def pytest_report_header(config: Any) -> str:
    return f"database: {os.environ.get('DATABASE_URL', '?')}  redis: {os.environ.get('REDIS_URL', '?')}"


@pytest.fixture
def purge_broker(settings: Any) -> None:
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture
def worker(transactional_db: Any, purge_broker: None, tmp_path: Any) -> Iterator[Any]:
    """A real Celery worker subprocess consuming every queue, with the reaper running."""
    from tests.workers import WorkerProcess

    proc = WorkerProcess(tmp_path).start()
    yield proc
    proc.stop()


@pytest.fixture
def start_worker(transactional_db: Any, purge_broker: None, tmp_path: Any) -> Iterator[Any]:
    """Start workers with custom settings: `start_worker(env={...})`; all are stopped after."""
    from tests.workers import WorkerProcess

    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        proc = WorkerProcess(tmp_path, **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# Fixtures that start real subprocesses (a Celery worker, a uvicorn server): a test using one is
# marked like the tests that start them by hand, so `make test-fast` can leave them all out.
_SUBPROCESS_FIXTURES = {"worker": "worker", "start_worker": "worker", "web": "server"}


_SLOW_MARKERS = ("worker", "server", "browser")


@pytest.hookimpl(trylast=True)  # after pytest-django's own ordering, which this refines
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        for fixture, marker in _SUBPROCESS_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))
    # the tests that start subprocesses (seconds each) first, the in-process ones (milliseconds)
    # after: with `-n 2` the two pytest processes then finish together instead of one waiting on
    # the other's last slow test. A stable sort keeps each module's tests together.
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in _SLOW_MARKERS))
