"""API under load: `POST /api/collections/generate` and `GET /api/jobs/{id}` against `GET /api`.

    .venv/bin/python -m emprops.embedded exec --dir var/bench-api -- \
        .venv/bin/python bench/api_load.py [--clients 1,10,50] [--duration 4] [--rounds 3] \
        [--worker] [--out var/bench-api/api_load.json] [--readme bench/README.md]

One web process as `make run` starts it (uvicorn, one process, `DB_POOL=1`) on its own embedded
PostgreSQL and Redis, migrated here. 50 users, each with its own API key and credits; client i is
user i, on its own keep-alive connection from its own loopback address, sending its next request when the last one answered
(closed loop). Three kinds of request:

- baseline: `GET /api`, the API index: no credentials, no database (0 queries), through the same
  middleware, DRF view, throttles (Redis) and envelope renderer as the others;
- `POST /api/collections/generate` with the built-in `prompt` workflow, count 1 (a collection and
  a job per request: validation, quote, credits hold, generation and node-run rows, the message);
- `GET /api/jobs/{id}` of one of the client's own jobs.

For each number of clients, each round runs the three for `--duration` seconds each, in an order
that rotates between rounds, after a warm-up; the figures are the medians over the rounds, and
ratios are to the baseline at the same number of clients. Rate limits and the running-generation
cap are raised for the run (bench/harness.py LOAD_ENV). Any 429, 402, 5xx or transport error
voids that figure. No worker runs unless `--worker`: on a 2-CPU machine a worker running the
jobs the POST phase creates would take CPU from the web process in the POST phases only, so the
ratio would measure CPU sharing rather than the API; the GET figure does not need finished jobs.
Queries per request are counted in-process with Django's CaptureQueriesContext (one request of
each kind, after one of the same kind warmed the caches), not from the load run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

from bench.harness import (  # noqa: E402
    LOAD_ENV,
    Web,
    git_rev,
    http_client,
    percentile,
    quiet_client_logs,
    raise_nofile,
    self_cpu_s,
    users_with_keys,
    write_block,
)

GENERATE_BODY = {"workflow_name": "prompt", "inputs": {"prompt": "a quiet harbour at dawn"},
                 "count": 1}
KINDS = ("baseline", "generate", "job")
LABELS = {"baseline": "GET /api (baseline)", "generate": "POST /api/collections/generate",
          "job": "GET /api/jobs/{id}"}
EXPECTED = {"baseline": 200, "generate": 202, "job": 200}
MARKER = "api-load"


class Client:
    """One user on one keep-alive connection."""

    def __init__(self, *, base_url: str, key: str, index: int, timeout: float,
                 ssl_context: Any) -> None:
        self.key = key
        self.jobs: list[str] = []
        self.refused: dict[str, str] = {}  # the first body of each unexpected answer
        self.http = http_client(base_url=base_url, index=index, timeout=timeout, connections=1,
                                keepalive=1, ssl_context=ssl_context)

    async def call(self, kind: str, i: int) -> tuple[int, str | None]:
        """One request of `kind`: (status, the new job id for a generate)."""
        if kind == "baseline":  # no credentials: authenticating would query the database
            response = await self.http.get("/api")
        elif kind == "generate":
            response = await self.http.post("/api/collections/generate", json=GENERATE_BODY,
                                            headers={"X-API-Key": self.key})
        else:
            response = await self.http.get(f"/api/jobs/{self.jobs[i % len(self.jobs)]}",
                                           headers={"X-API-Key": self.key})
        if kind == "generate" and response.status_code == 202:
            return 202, response.json()["data"]["job"]["id"]
        if response.status_code != EXPECTED[kind]:
            self.refused.setdefault(f"{kind} {response.status_code}", response.text[:300])
        return response.status_code, None


async def phase(clients: list[Client], kind: str, *, duration: float, max_requests: int,
                web: Web) -> dict[str, Any]:
    """`len(clients)` closed-loop clients sending `kind` for `duration` s (or `max_requests`)."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    budget = [max_requests]
    deadline = time.perf_counter() + duration

    async def loop(client: Client) -> None:
        i = 0
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                status, job_id = await client.call(kind, i)
            except Exception as exc:  # a transport error or timeout: counted, voids the figure
                statuses[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[str(status)] += 1
            if job_id:
                client.jobs.append(job_id)
            i += 1

    cpu_web, cpu_self = web.cpu_s(), self_cpu_s()
    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = time.perf_counter() - t0
    ok = statuses.get(str(EXPECTED[kind]), 0)
    return {
        "requests": sum(statuses.values()), "ok": ok, "elapsed_s": round(elapsed, 3),
        "req_per_s": round(ok / elapsed, 1),
        "p50_ms": round(1000 * percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 2) if latencies else None,
        "statuses": dict(statuses),
        "cpu": {"web": round((web.cpu_s() - cpu_web) / elapsed, 2),
                "client": round((self_cpu_s() - cpu_self) / elapsed, 2)},
    }


def voiding(statuses: dict[str, int], kind: str) -> dict[str, int]:
    """The responses that void a figure: 429, 402, 5xx, transport errors, any other non-success."""
    return {k: v for k, v in statuses.items() if k != str(EXPECTED[kind])}


def summarize(rounds: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    bad: Counter[str] = Counter()
    for r in rounds:
        bad.update(voiding(r["statuses"], kind))
    return {
        "req_per_s": round(statistics.median(r["req_per_s"] for r in rounds), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] or 0 for r in rounds), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] or 0 for r in rounds), 2),
        "requests": sum(r["requests"] for r in rounds),
        "void": bool(bad), "errors": dict(bad),
        "cpu": {"web": round(statistics.median(r["cpu"]["web"] for r in rounds), 2),
                "client": round(statistics.median(r["cpu"]["client"] for r in rounds), 2)},
        "rounds": rounds,
    }


def queries_per_request(users: list[tuple[Any, str]]) -> dict[str, int]:
    """Queries of one request of each kind, in-process (after one of the same kind)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    user_client, anonymous = APIClient(), APIClient()
    user_client.credentials(HTTP_X_API_KEY=users[0][1])
    counts: dict[str, int] = {}

    def measure(kind: str, send: Any) -> Any:
        send()  # warm: the user's default project, caches
        with CaptureQueriesContext(connection) as queries:
            response = send()
        if response.status_code != EXPECTED[kind]:
            raise RuntimeError(f"{kind}: {response.status_code} {response.content[:300]!r}")
        counts[kind] = len(queries.captured_queries)
        return response

    measure("baseline", lambda: anonymous.get("/api"))
    made = measure("generate", lambda: user_client.post("/api/collections/generate",
                                                        GENERATE_BODY, format="json"))
    job_id = made.json()["data"]["job"]["id"]
    measure("job", lambda: user_client.get(f"/api/jobs/{job_id}"))
    return counts


async def load(args: argparse.Namespace, web: Web, users: list[tuple[Any, str]]) -> dict[str, Any]:
    import ssl

    context = ssl.create_default_context()
    clients = [Client(base_url=web.url, key=key, index=i, timeout=args.timeout,
                      ssl_context=context) for i, (_, key) in enumerate(users)]
    try:
        # warm-up: every connection open, imports and caches warm, each user with jobs to GET
        for kind in KINDS:
            await phase(clients, kind, duration=1.0, max_requests=10 * len(clients), web=web)
        refused = {k: v for c in clients for k, v in c.refused.items()}
        if any(not c.jobs for c in clients):
            raise RuntimeError(f"warm-up: a client has no job to GET: {refused}")
        results: dict[str, Any] = {}
        for n in args.clients:
            rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
            for r in range(args.rounds):
                order = KINDS[r % 3:] + KINDS[:r % 3]
                for kind in order:
                    rounds[kind].append(await phase(
                        clients[:n], kind, duration=args.duration,
                        max_requests=args.max_requests, web=web))
            summary = {k: summarize(v, k) for k, v in rounds.items()}
            base = summary["baseline"]
            for kind in ("generate", "job"):
                s = summary[kind]
                s["x_baseline_req_per_s"] = round(s["req_per_s"] / base["req_per_s"], 3)
                s["x_baseline_p99"] = round(s["p99_ms"] / base["p99_ms"], 2)
            results[str(n)] = summary
        return results
    finally:
        await asyncio.gather(*(c.http.aclose() for c in clients))


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(LOAD_ENV)
    nofile = raise_nofile()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   check=True)
    import django

    django.setup()
    quiet_client_logs()
    import redis
    from django.conf import settings

    from bench.harness import Worker

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # messages of earlier runs
    redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).flushdb()  # throttle counters
    users = users_with_keys(max(args.clients), prefix="load")
    queries = queries_per_request(users)
    worker = Worker(concurrency=args.worker, log=settings.VAR_DIR / "bench-api-worker.log") \
        if args.worker else None
    web = Web(log=settings.VAR_DIR / "bench-api-web.log", application_name="bench-api-web")
    web.start(timeout=args.timeout)
    try:
        if worker:
            worker.start(timeout=args.timeout)
        phases = (len(args.clients) * args.rounds + 1) * len(KINDS)
        results = asyncio.run(asyncio.wait_for(load(args, web, users),
                                               phases * (args.duration + args.timeout)))
        web_rss = web.rss_mb()
    finally:
        if worker:
            worker.stop()
        web.stop()
    top = results[str(max(args.clients))]["generate"]
    return {
        "benchmark": "api_load",
        "config": {"clients": args.clients, "duration_s": args.duration, "rounds": args.rounds,
                   "worker_concurrency": args.worker, "users": len(users),
                   "load_tool": f"asyncio + httpx {_httpx_version()} (bench/api_load.py)",
                   "server": "uvicorn, 1 process, DB_POOL=1", "nofile": nofile,
                   "cpus": os.cpu_count(), "loadavg_1m_at_start": os.getloadavg()[0], "python": platform.python_version(),
                   "machine": platform.machine(), "git": git_rev(),
                   "date": time.strftime("%Y-%m-%d")},
        "queries_per_request": queries,
        "results": results,
        "web_rss_mb": web_rss,
        "targets": {
            "clients": max(args.clients),
            "generate_req_per_s_at_least_one_third_of_baseline": _met(
                top, top["x_baseline_req_per_s"] >= 1 / 3),
            "generate_p99_at_most_3x_baseline": _met(top, top["x_baseline_p99"] <= 3),
        },
    }


def _met(summary: dict[str, Any], ok: bool) -> str:
    return "void" if summary["void"] else ("met" if ok else "missed")


def _httpx_version() -> str:
    import httpx

    return str(httpx.__version__)


def readme_block(result: dict[str, Any]) -> str:
    c, q, t = result["config"], result["queries_per_request"], result["targets"]
    lines = [
        f"Last run: {c['date']}, commit {c['git']}, {c['cpus']} CPUs, Python {c['python']}; "
        f"{c['server']}; {c['duration_s']} s per figure and round, median of {c['rounds']} "
        f"rounds; worker: {c['worker_concurrency'] or 'none'}; load: {c['load_tool']}; load "
        f"average {c['loadavg_1m_at_start']:.1f} at the start.",
        "",
        "| clients | request | req/s | p50 (ms) | p99 (ms) | x baseline req/s | x baseline p99 "
        "| errors | CPU web / client |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, summary in result["results"].items():
        for kind in KINDS:
            s = summary[kind]
            errors = ("VOID " + ", ".join(f"{k}: {v}" for k, v in s["errors"].items())
                      if s["void"] else "0")
            lines.append(
                f"| {n} | {LABELS[kind]} | {s['req_per_s']} | {s['p50_ms']} | {s['p99_ms']} | "
                f"{s.get('x_baseline_req_per_s', '1')} | {s.get('x_baseline_p99', '1')} | "
                f"{errors} | {s['cpu']['web']} / {s['cpu']['client']} |")
    lines += [
        "",
        f"Queries per request (in-process, CaptureQueriesContext): baseline {q['baseline']}, "
        f"generate {q['generate']}, job {q['job']}. Web process RSS after the run: "
        f"{result['web_rss_mb']} MiB.",
        f"Targets at {t['clients']} clients: generate req/s >= 1/3 of the baseline's: "
        f"**{t['generate_req_per_s_at_least_one_third_of_baseline']}**; generate p99 <= 3x the "
        f"baseline's: **{t['generate_p99_at_most_3x_baseline']}**.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 10, 50], help="numbers of concurrent clients (max 50 users)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-requests", type=int, default=20000,
                        help="bound on requests per figure and round")
    parser.add_argument("--worker", type=int, default=0, metavar="CONCURRENCY",
                        help="run a Celery worker with this concurrency during the load")
    parser.add_argument("--timeout", type=float, default=60, help="bound on every wait (s)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--readme", type=Path, help="update the figures in this README")
    args = parser.parse_args()
    # a TERM runs the `finally` blocks that stop the web process and the worker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.readme:
        write_block(args.readme, MARKER, readme_block(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
