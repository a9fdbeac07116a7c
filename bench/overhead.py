"""Platform overhead: N cheap jobs through the engine against a bare Celery task baseline.

    .venv/bin/python -m emprops.embedded exec --dir var/bench -- \
        .venv/bin/python bench/overhead.py [--jobs 20] [--concurrency 2] [--rounds 3] \
        [--out bench/overhead.json] [--readme bench/README.md]

Brings its own services (the embedded PostgreSQL and Redis under var/bench, migrated here) and
one real Celery worker subprocess (prefork, `--concurrency`) that serves both sides:

- platform: N jobs, each one generation of two cheap `prompt` steps (the second mentions the
  first), submitted with `job_input_prepare` (validation, quote) and `job_create_from_input`
  (credits hold, node runs),
  run by the worker to `completed` (claims, leases, stored prompt.txt files, flat_file rows,
  history rows, events published on commit, charges);
- baseline: N bare tasks (`bench/bare_tasks.py`) that each write, in one transaction, a job row
  plus as many history and event rows as a platform job wrote.

Wall time runs from the first submit to the last job committed as finished. A warm-up round of
each side runs first (imports, connections); then `--rounds` rounds alternate the order of the
two sides. Prints JSON with every round's figures, the medians and the ratio platform/baseline.
Every wait is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Worker, git_rev, write_block  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

GENERATION_INPUT = {
    "version": "v2",
    "steps": [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a quiet harbour at dawn"}},
        {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "an etching of #1"}},
    ],
    "generations": {"hashes": [], "generations": 1, "use_custom_hashes": False},
    "variables": [],
}
# `--ref plain|filter`: step 2 also takes step 1's output through a `$ref`, a plain path (the
# in-process fast path) or a jq filter (the time- and memory-limited helper process).
REF_PATHS = {"plain": ".data", "filter": ".data | ascii_upcase"}


def generation_input(ref: str | None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(GENERATION_INPUT))
    if ref:
        data["steps"][1]["nodePayload"]["extra"] = {"$ref": 1, "path": REF_PATHS[ref]}
    return data


def _block_name(result: dict[str, Any]) -> str:
    return "overhead" + (f"-ref-{result['config']['ref']}" if result["config"].get("ref") else "")


def wait_until(count: Any, n: int, timeout: float, what: str) -> float:
    """Poll `count()` until it reaches n; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count() >= n:
            return time.perf_counter()
        time.sleep(0.005)  # fine enough for sub-second rounds
    raise RuntimeError(f"{what}: only {count()} of {n} finished within {timeout} s")


def platform_round(*, user: Any, n: int, tag: str, timeout: float,
                   data: dict[str, Any] = GENERATION_INPUT) -> dict[str, Any]:
    from generation_app.services.requests import job_create_from_input, job_input_prepare
    from jobs_app.models import Job, JobEvent, JobHistory

    t0 = time.perf_counter()
    ids = [job_create_from_input(user=user, collection_id=None,
                                 job_input=job_input_prepare(user=user, data=data),
                                 name=f"bench {tag} {i}").id for i in range(n)]
    submitted = time.perf_counter()
    done = wait_until(lambda: Job.objects.filter(id__in=ids, status__in=Job.FINISHED).count(),
                      n, timeout, f"platform round {tag}")
    jobs = list(Job.objects.filter(id__in=ids))
    failed = [(j.status, j.error_message) for j in jobs if j.status != Job.Status.COMPLETED]
    if failed:
        raise RuntimeError(f"platform round {tag}: jobs did not complete: {failed[:3]}")
    latencies = sorted((j.completed_at - j.created_at).total_seconds() for j in jobs)
    wall = done - t0
    return {
        "wall_s": round(wall, 4), "submit_s": round(submitted - t0, 4),
        "jobs_per_s": round(n / wall, 2),
        "job_latency_s": {"p50": round(statistics.median(latencies), 4),
                          "max": round(latencies[-1], 4)},
        "history_rows": JobHistory.objects.filter(job_id__in=ids).count(),
        "event_rows": JobEvent.objects.filter(job_id__in=ids).count(),
    }


def baseline_round(*, user: Any, n: int, history_rows: int, event_rows: int, tag: str,
                   timeout: float) -> dict[str, Any]:
    from bench.bare_tasks import BARE_JOB_TYPE, bare_write
    from jobs_app.models import Job

    t0 = time.perf_counter()
    for _ in range(n):
        bare_write.apply_async((str(user.id), history_rows, event_rows, tag), queue="engine")
    submitted = time.perf_counter()
    done = wait_until(lambda: Job.objects.filter(job_type=BARE_JOB_TYPE, data__run=tag).count(),
                      n, timeout, f"baseline round {tag}")
    wall = done - t0
    return {"wall_s": round(wall, 4), "submit_s": round(submitted - t0, 4),
            "jobs_per_s": round(n / wall, 2)}


def single_latencies(*, user: Any, n: int, timeout: float,
                     data: dict[str, Any]) -> dict[str, Any]:
    """One job at a time on an otherwise idle platform: median seconds from the submit's start to
    the job committed as finished (platform), and from `apply_async` to the bare task's row
    (baseline), alternating the two sides."""
    from bench.bare_tasks import BARE_JOB_TYPE, bare_write
    from generation_app.services.requests import job_create_from_input, job_input_prepare
    from jobs_app.models import Job

    platform_s, bare_s = [], []
    for i in range(n):
        t0 = time.perf_counter()
        job_id = job_create_from_input(user=user, collection_id=None,
                                       job_input=job_input_prepare(user=user, data=data),
                                       name=f"bench single {i}").id
        done = wait_until(lambda j=job_id: Job.objects.filter(id=j, status__in=Job.FINISHED)
                          .count(), 1, timeout, "single platform job")
        platform_s.append(done - t0)
        tag = f"single-{i}-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        bare_write.apply_async((str(user.id), 6, 10, tag), queue="engine")
        done = wait_until(lambda t=tag: Job.objects.filter(job_type=BARE_JOB_TYPE, data__run=t)
                          .count(), 1, timeout, "single bare task")
        bare_s.append(done - t0)
    platform_p50, bare_p50 = statistics.median(platform_s), statistics.median(bare_s)
    return {"jobs": n, "platform_p50_s": round(platform_p50, 4),
            "baseline_p50_s": round(bare_p50, 4), "ratio": round(platform_p50 / bare_p50, 2)}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in rounds]
    return {"median_wall_s": round(statistics.median(walls), 4),
            "median_jobs_per_s": round(statistics.median(r["jobs_per_s"] for r in rounds), 2),
            "rounds": rounds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   check=True)
    import django

    django.setup()
    import redis
    from django.conf import settings

    from emprops.accounts.services import user_provision

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # var/bench's own broker
    user = user_provision(username=f"bench-{uuid.uuid4().hex[:8]}",
                          free_credits=Decimal("1000000"))
    worker = Worker(concurrency=args.concurrency, log=settings.VAR_DIR / "bench-worker.log")
    worker.start(timeout=args.timeout)
    try:
        warm = max(2, args.concurrency * 2)
        data = generation_input(args.ref)
        warm_platform = platform_round(user=user, n=warm, tag="warm-p", timeout=args.timeout,
                                       data=data)
        per_job_history = warm_platform["history_rows"] // warm
        per_job_events = warm_platform["event_rows"] // warm
        baseline_round(user=user, n=warm, history_rows=per_job_history,
                       event_rows=per_job_events, tag="warm-b", timeout=args.timeout)
        platform_rounds, baseline_rounds = [], []
        for i in range(args.rounds):
            def do_platform(i: int = i) -> None:
                platform_rounds.append(platform_round(user=user, n=args.jobs, tag=f"p{i}",
                                                      timeout=args.timeout, data=data))

            def do_baseline(i: int = i) -> None:
                baseline_rounds.append(baseline_round(
                    user=user, n=args.jobs, history_rows=per_job_history,
                    event_rows=per_job_events, tag=f"b{i}-{uuid.uuid4().hex[:6]}",
                    timeout=args.timeout))

            order = (do_platform, do_baseline) if i % 2 == 0 else (do_baseline, do_platform)
            for step in order:
                step()
        single = single_latencies(user=user, n=args.single, timeout=args.timeout, data=data)
    finally:
        worker.stop()
    platform_summary = summary(platform_rounds)
    baseline_summary = summary(baseline_rounds)
    return {
        "benchmark": "overhead",
        "config": {"jobs": args.jobs, "concurrency": args.concurrency, "rounds": args.rounds,
                   "job": "1 generation x 2 prompt steps (inline)"
                          + (f", step 2 with a $ref path {REF_PATHS[args.ref]!r}" if args.ref else ""),
                   "rows_per_job": {"history": per_job_history, "events": per_job_events},
                   "max_running_generations_per_user": settings.MAX_RUNNING_GENERATIONS_PER_USER,
                   "ref": args.ref, "cpus": os.cpu_count(), "python": platform.python_version(),
                   "machine": platform.machine(), "git": git_rev()},
        "platform": platform_summary,
        "baseline": baseline_summary,
        "ratio_wall_platform_over_baseline": round(
            platform_summary["median_wall_s"] / baseline_summary["median_wall_s"], 2),
        "single_job": single,
    }


def readme_block(result: dict[str, Any]) -> str:
    c, p, b = result["config"], result["platform"], result["baseline"]
    return "\n".join([
        f"Job: {c['job']}.",
        f"Last run: {time.strftime('%Y-%m-%d')}, commit {c['git']}, {c['cpus']} CPUs, "
        f"Python {c['python']}, worker concurrency {c['concurrency']}, {c['jobs']} jobs a round, "
        f"median of {c['rounds']} rounds (rows per job: {c['rows_per_job']['history']} history, "
        f"{c['rows_per_job']['events']} events).",
        "",
        "| side | median wall (s) | jobs/s | per-round walls (s) |",
        "|---|---|---|---|",
        f"| platform | {p['median_wall_s']} | {p['median_jobs_per_s']} | "
        f"{', '.join(str(r['wall_s']) for r in p['rounds'])} |",
        f"| bare Celery baseline | {b['median_wall_s']} | {b['median_jobs_per_s']} | "
        f"{', '.join(str(r['wall_s']) for r in b['rounds'])} |",
        "",
        f"Ratio platform / baseline (wall): **{result['ratio_wall_platform_over_baseline']}**. "
        f"Platform job latency (created to completed) p50 "
        f"{statistics.median(r['job_latency_s']['p50'] for r in p['rounds'])} s; submitting "
        f"{c['jobs']} jobs took a median "
        f"{statistics.median(r['submit_s'] for r in p['rounds'])} s of the platform's wall time.",
        *([""] + [f"One job at a time (median of {s['jobs']}): created to completed "
                  f"{s['platform_p50_s']} s against a bare task's round trip of "
                  f"{s['baseline_p50_s']} s, **{s['ratio']}x**."]
          if (s := result.get("single_job")) else []),
    ])


def write_readme(path: Path, result: dict[str, Any]) -> None:
    """Replace this benchmark's figures between its markers (the rest of the file is kept)."""
    write_block(path, _block_name(result), readme_block(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300, help="bound on every wait (s)")
    parser.add_argument("--single", type=int, default=10,
                        help="jobs measured one at a time for the idle latency (and as many bare)")
    parser.add_argument("--ref", choices=sorted(REF_PATHS), help="add a $ref to step 2")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--readme", type=Path, help="update the figures in this README")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.readme:
        write_readme(args.readme, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
