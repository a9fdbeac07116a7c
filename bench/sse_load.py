"""Event streams: 1,000 concurrent SSE subscribers on one web process, events from a real worker.

    ulimit -Sn $(ulimit -Hn)   # the embedded Redis holds one connection per stream
    .venv/bin/python -m emprops.embedded exec --dir var/bench-sse -- \
        .venv/bin/python bench/sse_load.py [--subscribers 1000] [--jobs 50] [--rounds 2] \
        [--connect-concurrency 1000,100] [--out var/bench-sse/sse_load.json] \
        [--readme bench/README.md]

One web process as `make run` starts it (uvicorn, one process, `DB_POOL=1`) on its own embedded
PostgreSQL and Redis. Each round:

1. `--jobs` users each submit one job (two `prompt` steps, through the services a request uses)
   while no worker runs, so the jobs wait in the queue;
2. `--subscribers` streams (`GET /api/jobs/{id}/events`, each with its user's API key, spread
   evenly over the jobs) are opened, each on its own connection from its own loopback address
   (as many browsers would: the per-address limits see them apart), in one of two shapes
   (`--connect-concurrency`): all at once, or at most N connecting at a time (a stream stops
   counting once connected). A stream counts as connected when its snapshot (`history_init`)
   arrives. Connect time: from the first attempt to the last snapshot;
3. while every stream is open and idle (the web process under 5 % of a core, so the streams'
   connect-time reads are over): the web process's database connections in
   `pg_stat_activity` (its connections carry their own `application_name`), sampled, and its RSS.
   `--heartbeat` (EVENTS_HEARTBEAT_SECONDS, 60 here against 15 in production) is longer than the
   connect and idle phases: on each quiet heartbeat a stream reads the job's missed events from
   the database, a short transaction that is not a connection held while waiting, and would
   otherwise fall into the samples;
4. a Celery worker (prefork, 2) starts and runs the jobs; every event it publishes is timed as it
   leaves Redis by a tap process subscribed to the same channels, and again as each subscriber
   receives it: delivery latency is the difference (both on CLOCK_MONOTONIC). The round ends when
   every stream has closed (a stream ends with its job).

Baseline, in the same run and the same shape: as many `GET /api` requests (no credentials, no
database), each on its own new connection and address, all at once or N at a time; its wall
time against the streams' connect time. Rounds alternate which of the two goes first; figures
are medians. Every wait is bounded by `--timeout`.
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
    web_connections,
    write_block,
)

APP_NAME = "bench-sse-web"
MARKER = "sse-load"
CHANNEL_PATTERN = "emprops:job-events:*"


# ---- the tap: a separate process, so its timestamps do not wait for the clients' event loop ----

def tap_main(redis_url: str, out: Path) -> int:
    """Record (job, seq, monotonic time) of every event published, until SIGTERM."""
    import redis

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.psubscribe(CHANNEL_PATTERN)
    while pubsub.get_message(timeout=1.0) is None:  # the psubscribe confirmation
        pass
    print("ready", flush=True)
    seen: list[tuple[str, int, float]] = []
    while not stopping:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is None or message["type"] != "pmessage":
            continue
        at = time.monotonic()
        job = message["channel"].decode().rsplit(":", 1)[1]
        try:
            seen.append((job, int(json.loads(message["data"])["seq"]), at))
        except (ValueError, KeyError, TypeError):
            continue
    out.write_text(json.dumps(seen))
    return 0


class Tap:
    def __init__(self, redis_url: str, out: Path) -> None:
        self.out = out
        out.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, __file__, "--tap", str(out),
                                      "--tap-redis", redis_url],
                                     cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == b"ready":
                return
            if self.proc.poll() is not None:
                raise RuntimeError("tap exited")
            time.sleep(0.05)
        raise RuntimeError("tap not ready")

    def stop(self, timeout: float) -> dict[tuple[str, int], float]:
        """Stop the tap; what it saw, by (job, seq)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        if not self.out.exists():  # it died before writing
            return {}
        return {(job, seq): at for job, seq, at in json.loads(self.out.read_text())}


# ---- clients ------------------------------------------------------------------------------------

class Subscriber:
    """One stream: when its snapshot came, and when each live event after it did."""

    def __init__(self, job_id: str, key: str) -> None:
        self.job_id, self.key = job_id, key
        self.status: int | str | None = None
        self.connect_s: float | None = None
        self.snapshot_seq = 0
        self.events: dict[int, float] = {}
        self.duplicates = 0


async def subscribe(http: Any, sub: Subscriber, connected: asyncio.Queue[float],
                    gate: asyncio.Semaphore) -> None:
    """Follow one stream to its end; `gate` is held from the request until the snapshot."""
    await gate.acquire()
    gated = True
    started = time.perf_counter()
    try:
        async with http.stream("GET", f"/api/jobs/{sub.job_id}/events",
                               headers={"X-API-Key": sub.key,
                                        "Accept": "text/event-stream"}) as response:
            sub.status = response.status_code
            if response.status_code != 200:
                return
            buffer = b""
            async for chunk in response.aiter_raw():
                at = time.monotonic()
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    seq, event = None, None
                    for line in frame.split(b"\n"):
                        if line.startswith(b"id: "):
                            seq = int(line[4:])
                        elif line.startswith(b"event: "):
                            event = line[7:].decode()
                    if seq is None:  # `retry:`, keep-alive comments
                        continue
                    if sub.connect_s is None:  # the snapshot: job_update, then history_init
                        if event == "history_init":
                            sub.snapshot_seq = seq
                            sub.connect_s = time.perf_counter() - started
                            connected.put_nowait(time.perf_counter())
                            gate.release()
                            gated = False
                        continue
                    if seq in sub.events:
                        sub.duplicates += 1
                    sub.events[seq] = at
    except Exception as exc:  # counted; voids the figure
        sub.status = type(exc).__name__
    finally:
        if gated:
            gate.release()
        if sub.connect_s is None:
            connected.put_nowait(-1.0)  # failed before its snapshot


def clients(base_url: str, n: int, timeout: float) -> list[Any]:
    """`n` clients, each with one connection from its own loopback address (as many browsers)."""
    import ssl

    context = ssl.create_default_context()
    return [http_client(base_url=base_url, index=i, timeout=timeout, connections=1, keepalive=0,
                        ssl_context=context) for i in range(n)]


async def baseline(web: Web, n: int, timeout: float, concurrency: int) -> dict[str, Any]:
    """`n` `GET /api`, `concurrency` at a time, each on its own new connection and address."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    https = clients(web.url, n, timeout)
    gate = asyncio.Semaphore(concurrency)

    async def one(http: Any) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                response = await http.get("/api")
                statuses[str(response.status_code)] += 1
                latencies.append(time.perf_counter() - started)
            except Exception as exc:
                statuses[type(exc).__name__] += 1

    try:
        cpu, cpu_web = self_cpu_s(), web.cpu_s()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(http) for http in https))
        wall = time.perf_counter() - t0
        cpu_web = web.cpu_s() - cpu_web
    finally:
        await asyncio.gather(*(http.aclose() for http in https))
    return {"wall_s": round(wall, 3), "ok": statuses.get("200", 0), "statuses": dict(statuses),
            "p50_ms": round(1000 * percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(1000 * percentile(latencies, 99), 1) if latencies else None,
            "cpu": {"web_s": round(cpu_web, 2), "client_s": round(self_cpu_s() - cpu, 2)}}


# ---- one round ----------------------------------------------------------------------------------

def submit_jobs(users: list[tuple[Any, str]], tag: str) -> list[str]:
    from bench.overhead import GENERATION_INPUT
    from generation_app.services.requests import job_create_from_input, job_input_prepare

    return [str(job_create_from_input(
        user=user, collection_id=None, name=f"sse {tag} {i}",
        job_input=job_input_prepare(user=user, data=GENERATION_INPUT)).id)
        for i, (user, _) in enumerate(users)]


def final_seqs(job_ids: list[str]) -> dict[str, tuple[str, int]]:
    from jobs_app.models import Job

    return {str(pk): (status, seq) for pk, status, seq in
            Job.objects.filter(id__in=job_ids).values_list("id", "status", "event_seq")}


async def streams_round(args: argparse.Namespace, web: Web, users: list[tuple[Any, str]],
                        tag: str, concurrency: int) -> dict[str, Any]:
    from django.conf import settings

    from bench.overhead import Worker

    job_ids = await asyncio.to_thread(submit_jobs, users, tag)
    keys = {job_id: key for job_id, (_, key) in zip(job_ids, users, strict=True)}
    subs = [Subscriber(job_ids[i % len(job_ids)], keys[job_ids[i % len(job_ids)]])
            for i in range(args.subscribers)]
    tap = Tap(settings.EVENTS_REDIS_URL, settings.VAR_DIR / f"bench-sse-tap-{tag}.json")
    worker = Worker(concurrency=2, log=settings.VAR_DIR / "bench-sse-worker.log")
    connected: asyncio.Queue[float] = asyncio.Queue()
    rss_before = web.rss_mb()
    rss_peak = [rss_before]
    stop_sampling = asyncio.Event()

    async def sample_rss() -> None:
        while not stop_sampling.is_set():
            rss_peak[0] = max(rss_peak[0], web.rss_mb())
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_rss())
    https = clients(web.url, args.subscribers, args.timeout)
    tasks: list[asyncio.Task[None]] = []
    published: dict[tuple[str, int], float] = {}
    try:
        await asyncio.to_thread(tap.wait_ready, args.timeout)
        cpu_web, cpu_self = web.cpu_s(), self_cpu_s()
        t0 = time.perf_counter()
        gate = asyncio.Semaphore(concurrency)
        tasks = [asyncio.create_task(subscribe(http, s, connected, gate))
                 for http, s in zip(https, subs, strict=True)]
        last = t0
        deadline = t0 + args.timeout
        for _ in range(args.subscribers):  # each stream reports once: connected or failed
            try:
                at = await asyncio.wait_for(connected.get(),
                                            max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                break
            last = max(last, at)
        connect_wall = last - t0
        connect_cpu = {"web_s": round(web.cpu_s() - cpu_web, 2),
                       "client_s": round(self_cpu_s() - cpu_self, 2)}
        n_connected = sum(s.connect_s is not None for s in subs)
        rss_connected, threads_connected = web.rss_mb(), web.threads()

        # idle: every stream open, nothing published, and the web process done with the streams'
        # connect-time reads (after its snapshot a stream subscribes, then reads what it missed):
        # sampled once the web process has used under 5 % of a core for half a second (bounded)
        await asyncio.sleep(1.0)
        quiet_deadline = time.perf_counter() + 30
        while time.perf_counter() < quiet_deadline:
            before = web.cpu_s()
            await asyncio.sleep(0.5)
            if web.cpu_s() - before < 0.025:
                break
        samples = []
        for _ in range(args.idle_samples):
            samples.append(await asyncio.to_thread(web_connections, APP_NAME))
            await asyncio.sleep(0.2)

        await asyncio.to_thread(worker.start, args.timeout)
        events_started = time.perf_counter()
        _, pending = await asyncio.wait(tasks, timeout=args.timeout)
        delivery_wall = time.perf_counter() - events_started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(http.aclose() for http in https))
        stop_sampling.set()
        await sampler
        await asyncio.to_thread(worker.stop)
        published = await asyncio.to_thread(tap.stop, args.timeout)
    finals = await asyncio.to_thread(final_seqs, job_ids)

    latencies: list[float] = []
    missing = duplicates = untapped = 0
    for s in subs:
        duplicates += s.duplicates
        last_seq = finals[s.job_id][1]
        expected = set(range(s.snapshot_seq + 1, last_seq + 1)) if s.connect_s is not None else set()
        missing += len(expected - set(s.events))
        for seq, at in s.events.items():
            sent = published.get((s.job_id, seq))
            if sent is None:
                untapped += 1  # not published (read back from the rows after a gap)
            else:
                latencies.append(at - sent)
    statuses = Counter(str(s.status) for s in subs)
    connect_times = [s.connect_s for s in subs if s.connect_s is not None]
    held = [len(sample["not_idle"]) for sample in samples]
    return {
        "subscribers": args.subscribers, "connected": n_connected, "statuses": dict(statuses),
        "connect_wall_s": round(connect_wall, 3),
        "connect_p50_ms": round(1000 * percentile(connect_times, 50), 1) if connect_times else None,
        "connect_p99_ms": round(1000 * percentile(connect_times, 99), 1) if connect_times else None,
        "connect_cpu": connect_cpu,
        "jobs": len(job_ids),
        "jobs_completed": sum(1 for status, _ in finals.values() if status == "completed"),
        "streams_still_open": len(pending),
        "events_published": len(published),
        "deliveries": len(latencies), "missing": missing, "duplicates": duplicates,
        "untapped": untapped,
        "delivery_p50_ms": round(1000 * percentile(latencies, 50), 1) if latencies else None,
        "delivery_p99_ms": round(1000 * percentile(latencies, 99), 1) if latencies else None,
        "delivery_max_ms": round(1000 * max(latencies), 1) if latencies else None,
        "delivery_wall_s": round(delivery_wall, 2),
        "rss_mb": {"before": rss_before, "connected": rss_connected, "peak": rss_peak[0]},
        "web_threads_connected": threads_connected,
        "db_connections_idle_streams": {"samples": samples,
                                        "max_not_idle": max(held) if held else None,
                                        "max_open": max((sum(s["states"].values())
                                                         for s in samples), default=None)},
    }


def _shape(n: int, subscribers: int) -> str:
    return "all at once" if n >= subscribers else f"{n} at a time"


def summarize(rounds: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one connect shape's rounds, its baseline, ratio, errors and targets."""
    def med(key: str, items: list[dict[str, Any]]) -> float | None:
        values = [x[key] for x in items if x[key] is not None]
        return round(statistics.median(values), 3) if values else None

    bad_streams = sum(r["subscribers"] - r["connected"] + r["missing"] + r["streams_still_open"]
                      for r in rounds)
    bad_baseline = sum(sum(v for k, v in b["statuses"].items() if k != "200") for b in baselines)
    connect_wall, baseline_wall = med("connect_wall_s", rounds), med("wall_s", baselines)
    ratio = round(connect_wall / baseline_wall, 2) if connect_wall and baseline_wall else None
    max_held = max(r["db_connections_idle_streams"]["max_not_idle"] or 0 for r in rounds)
    errors = Counter[str]()
    for r in rounds:
        errors.update({k: v for k, v in r["statuses"].items() if k != "200"})
    return {
        "streams": {"connect_wall_s": connect_wall,
                    "connect_p50_ms": med("connect_p50_ms", rounds),
                    "connect_p99_ms": med("connect_p99_ms", rounds),
                    "delivery_p50_ms": med("delivery_p50_ms", rounds),
                    "delivery_p99_ms": med("delivery_p99_ms", rounds),
                    "rss_mb_before": med("before", [r["rss_mb"] for r in rounds]),
                    "rss_mb_connected": med("connected", [r["rss_mb"] for r in rounds]),
                    "rss_mb_peak": med("peak", [r["rss_mb"] for r in rounds]),
                    "db_connections_not_idle_max": max_held, "errors": dict(errors),
                    "rounds": rounds},
        "baseline": {"wall_s": baseline_wall, "p50_ms": med("p50_ms", baselines),
                     "p99_ms": med("p99_ms", baselines), "rounds": baselines},
        "ratio_connect_over_baseline": ratio,
        "void": {"streams": bad_streams, "baseline": bad_baseline},
        "targets": {
            "all_connected_within_5x_baseline": "void" if bad_streams or bad_baseline
            else ("met" if ratio is not None and ratio <= 5 else "missed"),
            "no_db_connection_held_while_idle": "met" if max_held == 0 else "missed",
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(LOAD_ENV)
    os.environ["EVENTS_HEARTBEAT_SECONDS"] = str(args.heartbeat)
    nofile = raise_nofile()
    if nofile < 3 * args.subscribers + 500:
        raise SystemExit(f"open-files limit {nofile} is too low for {args.subscribers} streams: "
                         "raise it (`ulimit -Sn $(ulimit -Hn)`) before starting the services")
    loadavg = os.getloadavg()[0]
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   check=True)
    import django

    django.setup()
    quiet_client_logs()
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # messages of earlier runs
    users = users_with_keys(args.jobs, prefix="sse")
    web = Web(log=settings.VAR_DIR / "bench-sse-web.log", application_name=APP_NAME)
    web.start(timeout=args.timeout)
    shapes = [min(n, args.subscribers) for n in args.connect_concurrency]
    rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in shapes}
    baselines: dict[int, list[dict[str, Any]]] = {n: [] for n in shapes}

    async def main_async() -> None:
        await baseline(web, min(50, args.subscribers), args.timeout, 50)  # warm-up
        for r in range(args.rounds):
            for n in shapes:
                async def do_streams(r: int = r, n: int = n) -> None:
                    rounds[n].append(await streams_round(args, web, users, tag=f"r{r}-{n}",
                                                         concurrency=n))

                async def do_baseline(n: int = n) -> None:
                    baselines[n].append(await baseline(web, args.subscribers, args.timeout, n))

                order = (do_baseline, do_streams) if r % 2 == 0 else (do_streams, do_baseline)
                for step in order:
                    await step()

    try:
        asyncio.run(asyncio.wait_for(main_async(),
                                     args.rounds * len(shapes) * 5 * args.timeout))
        server_nofile = web.nofile()
    finally:
        web.stop()
    return {
        "benchmark": "sse_load",
        "config": {"subscribers": args.subscribers, "jobs": args.jobs, "rounds": args.rounds,
                   "connect_concurrency": shapes,
                   "job": "2 prompt steps, 1 generation", "worker_concurrency": 2,
                   "server": "uvicorn, 1 process, DB_POOL=1",
                   "db_pool_max": int(os.environ.get("DB_POOL_SIZE", "10")),
                   "heartbeat_s": settings.EVENTS_HEARTBEAT_SECONDS,
                   "nofile": {"client": nofile, "server": server_nofile},
                   "load_tool": "asyncio + httpx (bench/sse_load.py)",
                   "cpus": os.cpu_count(), "loadavg_1m_at_start": loadavg,
                   "python": platform.python_version(), "machine": platform.machine(),
                   "git": git_rev(), "date": time.strftime("%Y-%m-%d")},
        "shapes": {_shape(n, args.subscribers): summarize(rounds[n], baselines[n])
                   for n in shapes},
    }


def readme_block(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"Last run: {c['date']}, commit {c['git']}, {c['cpus']} CPUs, Python {c['python']}; "
        f"{c['server']}; {c['subscribers']} streams over {c['jobs']} jobs ({c['job']}) of "
        f"{c['jobs']} users; worker prefork {c['worker_concurrency']}; median of {c['rounds']} "
        f"round(s); EVENTS_HEARTBEAT_SECONDS {c['heartbeat_s']:g}; open-files limit "
        f"{c['nofile']['client']} (bench) / {c['nofile']['server']} (web); load average "
        f"{c['loadavg_1m_at_start']:.1f} at the start.",
    ]
    for shape, r in result["shapes"].items():
        s, b, t = r["streams"], r["baseline"], r["targets"]
        per_stream_kb = (round(1024 * (s["rss_mb_connected"] - s["rss_mb_before"])
                               / c["subscribers"], 1) if s["rss_mb_connected"] else None)
        deliveries = sum(x["deliveries"] for x in s["rounds"])
        missing = sum(x["missing"] for x in s["rounds"])
        open_max = max(x["db_connections_idle_streams"]["max_open"] or 0 for x in s["rounds"])
        threads = max(x["web_threads_connected"] for x in s["rounds"])
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "none"
        lines += [
            "",
            f"**Connecting {shape}** ({c['subscribers']} streams; the baseline: as many `GET "
            f"/api`, each on a new connection, {shape}):",
            "",
            "| figure | streams | baseline | ratio |",
            "|---|---|---|---|",
            f"| all connected, wall (s) | {s['connect_wall_s']} | {b['wall_s']} | "
            f"**{r['ratio_connect_over_baseline']}** |",
            f"| per connection p50 / p99 (ms) | {s['connect_p50_ms']} / {s['connect_p99_ms']} | "
            f"{b['p50_ms']} / {b['p99_ms']} | |",
            f"| event delivery p50 / p99 (ms), publish to subscriber | {s['delivery_p50_ms']} / "
            f"{s['delivery_p99_ms']} | | |",
            f"| web RSS before / connected / peak (MiB) | {s['rss_mb_before']} / "
            f"{s['rss_mb_connected']} / {s['rss_mb_peak']} (~{per_stream_kb} KiB a stream) "
            "| | |",
            f"| web DB connections while streams idle: in use / open (pool max "
            f"{c['db_pool_max']}) | {s['db_connections_not_idle_max']} / {open_max} | | |",
            f"| web process threads, every stream open | {threads} | | |",
            "",
            f"Deliveries timed: {deliveries} ({missing} missing). Stream errors: {errors}; "
            f"baseline errors: {r['void']['baseline']}. Targets: all connected within 5x the "
            f"baseline: **{t['all_connected_within_5x_baseline']}**; no database connection "
            f"held while idle: **{t['no_db_connection_held_while_idle']}**.",
        ]
    return "\n".join(lines)


def main() -> int:
    if "--tap" in sys.argv:  # the tap process (see Tap)
        tap = argparse.ArgumentParser()
        tap.add_argument("--tap", type=Path, required=True)
        tap.add_argument("--tap-redis", required=True)
        targs = tap.parse_args()
        return tap_main(targs.tap_redis, targs.tap)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50, help="jobs (and users) the streams follow")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connect-concurrency", default="1000,100",
                        type=lambda v: [int(x) for x in v.split(",")],
                        help="how many streams (and baseline requests) may be connecting at "
                             "once: one shape per number (>= --subscribers: all at once)")
    parser.add_argument("--idle-samples", type=int, default=10)
    parser.add_argument("--heartbeat", type=float, default=60,
                        help="EVENTS_HEARTBEAT_SECONDS for the run (production: 15): longer than "
                             "a round's connect and idle phases, so no keep-alive catch-up read "
                             "falls into the idle samples")
    parser.add_argument("--timeout", type=float, default=120, help="bound on every wait (s)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--readme", type=Path, help="update the figures in this README")
    args = parser.parse_args()
    # a TERM runs the `finally` blocks that stop the web process, the worker and the tap
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
