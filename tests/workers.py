"""Real processes for tests: a Celery worker subprocess and a uvicorn subprocess, both pointed
at the test database (pytest-django's) and the test Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent


def test_env(**extra: str) -> dict[str, str]:
    base = settings.DATABASE_URL.rsplit("/", 1)[0]
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": f"{base}/{connection.settings_dict['NAME']}",
        "DJANGO_SETTINGS_MODULE": "emprops.settings",
        "PYTHONUNBUFFERED": "1",
        "NODE_LEASE_SECONDS": "6",
        "REAPER_INTERVAL_SECONDS": "1",
        "NODE_UNCLAIMED_SECONDS": "5",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "OUTBOUND_ALLOW_HOSTS": ",".join(settings.OUTBOUND_ALLOW_HOSTS),
        "LLM_BASE_URL": settings.LLM_BASE_URL,
        "MAX_RUNNING_GENERATIONS_PER_USER": str(settings.MAX_RUNNING_GENERATIONS_PER_USER),
    })
    env.update(extra)
    return env


class WorkerProcess:
    """`celery worker` (with an embedded beat running the reaper) as a subprocess."""

    def __init__(self, tmp: Path, *, queues: str | None = None, concurrency: int = 2,
                 env: dict[str, str] | None = None) -> None:
        from generation_app.queues import all_queue_names

        self.tmp = tmp
        self.log = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.queues = queues or ",".join(all_queue_names())
        self.concurrency = concurrency
        self.env = test_env(**(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "emprops", "worker", "-Q", self.queues,
             "-c", str(self.concurrency), "-B", "--scheduler", "celery.beat:PersistentScheduler",
             "-s", str(self.tmp / f"beat-{uuid.uuid4().hex[:6]}"), "--loglevel", "INFO",
             "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.output()[-3000:]}")
            if " ready." in self.output():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def child_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill9(self) -> None:
        """SIGKILL the whole worker (parent and children), as a crash would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebProcess:
    """uvicorn serving the ASGI app as a subprocess (SSE cannot stream through live_server)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, *,
                 app: str = "emprops.asgi:application") -> None:
        self.app = app
        self.port = free_port()
        self.log = tmp / f"web-{self.port}.log"
        # as `make run` serves it: Django's psycopg connection pool in the web process
        self.env = test_env(**{"DB_POOL": "1", **(env or {})})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> WebProcess:
        out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
             "--port", str(self.port), "--timeout-graceful-shutdown", "1", "--log-level", "warning"],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("uvicorn did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def outside_playwright(fn: Any) -> Any:
    """Run ORM code in a plain thread: Playwright's sync API keeps an event loop in this one."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(fn())
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert result, "the ORM call failed or hung"
    return result[0]
