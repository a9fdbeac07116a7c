"""What the HTTP benchmarks (`api_load.py`, `sse_load.py`) share: the web process they measure,
its file-descriptor limit, percentiles, users with API keys, and their README blocks.

The web process is the one `make run` starts (emprops/runner.py): uvicorn on loopback, one
process, Django's psycopg pool (`DB_POOL=1`), warnings-only logging. Its database connections
carry an `application_name`, so `pg_stat_activity` can tell them from the bench's own.
"""

from __future__ import annotations

import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]

# Limits raised for a load run, so what is measured is the request path and not the throttles:
# set in the bench process before Django starts, and inherited by the web process and workers.
# RATE_LIMIT_AUTH_FAIL keeps its default: each client connects from its own loopback address.
LOAD_ENV = {
    "RATE_LIMIT_USER": "100000000/min",
    "RATE_LIMIT_ANON": "100000000/min",
    "MAX_RUNNING_GENERATIONS_PER_USER": "100000",
}


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's soft limit on open files towards `want` (up to the hard limit);
    children started afterwards inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def client_address(i: int) -> str:
    """A loopback source address of its own for client `i` (all of 127/8 is the loopback), so
    each client is a different address to the per-address limits, as distinct users are."""
    return f"127.0.{1 + i // 250}.{2 + i % 250}"


def http_client(*, base_url: str, index: int, timeout: Any, connections: int,
                keepalive: int, ssl_context: Any) -> Any:
    """An httpx.AsyncClient that connects from `client_address(index)`.

    `ssl_context` is shared: httpx would otherwise build one (loading the CA bundle) per client.
    An idle connection is dropped after 2 s: httpx keeps one 5 s by default, as long as uvicorn
    does, so a request sent on it just as the server closes it would fail for the client alone."""
    import httpx

    transport = httpx.AsyncHTTPTransport(
        local_address=client_address(index), verify=ssl_context,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=keepalive,
                            keepalive_expiry=2.0))
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)


def quiet_client_logs() -> None:
    """The bench's own httpx would log every request at INFO under the project's LOGGING."""
    import logging

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_application_name(url: str, name: str) -> str:
    """DATABASE_URL with `application_name` (settings pass query parameters to psycopg)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    query.append(("application_name", name))
    return urlunsplit(parts._replace(query=urlencode(query)))


class Web:
    """One uvicorn process serving `emprops.asgi:application` as `make run` serves it."""

    def __init__(self, *, log: Path, application_name: str) -> None:
        self.port = free_port()
        self.log = log
        self.application_name = application_name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float) -> Web:
        env = {**os.environ, "DB_POOL": os.environ.get("DB_POOL", "1"),
               "DATABASE_URL": with_application_name(os.environ["DATABASE_URL"],
                                                     self.application_name),
               "PUBLIC_BASE_URL": self.url}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "emprops.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--timeout-graceful-shutdown", "2", "--no-server-header",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"web process exited: {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"web process did not listen within {timeout} s: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    def rss_mb(self) -> float:
        """Resident memory of the web process (MiB)."""
        return round(self._status("VmRSS") / 1024, 1)

    def threads(self) -> int:
        return self._status("Threads")

    def cpu_s(self) -> float:
        """User + system CPU time the web process has used (s)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def nofile(self) -> int:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise RuntimeError("no open-files limit")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def users_with_keys(n: int, *, prefix: str) -> list[tuple[Any, str]]:
    """`n` new users, each with plenty of credits and one API key: (user, raw key)."""
    import uuid

    from emprops.accounts.services import api_key_create, user_provision

    run = uuid.uuid4().hex[:6]
    out = []
    for i in range(n):
        user = user_provision(username=f"{prefix}-{run}-{i}", free_credits=Decimal("1000000"))
        _, raw = api_key_create(user=user, name="bench")
        out.append((user, raw))
    return out


def web_connections(application_name: str) -> dict[str, Any]:
    """The web process's database connections right now (pg_stat_activity): how many in each
    state, and for those not idle, the age of their transaction and their last statement."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(state, '?'), "
                       "extract(epoch FROM now() - xact_start), left(query, 120) "
                       "FROM pg_stat_activity WHERE application_name = %s", [application_name])
        rows = cursor.fetchall()
    states: dict[str, int] = {}
    for state, _, _ in rows:
        states[state] = states.get(state, 0) + 1
    busy = [{"state": state, "xact_s": round(float(age), 3) if age is not None else None,
             "query": query} for state, age, query in rows if state != "idle"]
    return {"states": states, "not_idle": busy}


def git_rev() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


def write_block(path: Path, name: str, body: str) -> None:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` (appended when the
    markers are missing); the rest of the file is kept."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


class Worker:
    """`celery worker` on every platform queue, plus the baseline task module."""

    def __init__(self, *, concurrency: int, log: Path) -> None:
        self.concurrency = concurrency
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> Worker:
        from generation_app.queues import all_queue_names

        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "emprops", "worker",
             "-Q", ",".join(all_queue_names()), "-c", str(self.concurrency), "-P", "prefork",
             "-I", "bench.bare_tasks", "-n", f"bench-{uuid.uuid4().hex[:6]}@%h",
             "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self._tail()}")
            if self._ready():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout} s: {self._tail()}")

    def _ready(self) -> bool:
        # at WARNING the "ready." banner is not logged: ask the worker itself
        from emprops.celery import app

        replies = app.control.ping(timeout=0.5)
        return bool(replies)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
