"""Content-addressed node runs: a demo collection generated, then generated again from the cache.

    .venv/bin/python -m emprops.embedded exec --dir var/bench -- \
        .venv/bin/python bench/cache.py [--hashes 4] [--concurrency 2] \
        [--out var/bench/cache.json] [--readme bench/README.md]

Brings its own services (the embedded PostgreSQL and Redis under var/bench, migrated here) and
one real Celery worker subprocess on every queue (prefork, `--concurrency`). The demo collection
Palette Grid (one 512 px p5 step, two variables) is created for a fresh user and generated with
`--hashes` fixed hashes through `generation_request` (the path `POST /api/collections/{id}/
generations` takes); then generated again with the same hashes; then generation 0 of the first
job is replayed. Each wall time runs from the request to the job committed as finished (polled
every 10 ms). Prints JSON: both walls, their ratio, what each job was charged, whether every
output of the second says `cached`, and the replay's verdict. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import git_rev, write_block  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

MARKER = "cache"  # bench/README.md block


def _finished(job_id: Any, timeout: float) -> tuple[Any, float]:
    from jobs_app.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.status in Job.FINISHED:
            return job, time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} not finished within {timeout} s")


def _generate(*, user: Any, collection_id: Any, hashes: list[str],
              timeout: float) -> dict[str, Any]:
    from emprops.accounts.models import CreditsHistory
    from generation_app.services.requests import generation_request

    started = time.monotonic()
    job = generation_request(user=user, collection_id=collection_id, variables={},
                             hashes=list(hashes))
    job, ended = _finished(job.id, timeout)
    outputs = (job.data or {}).get("outputs") or []
    responses = [s["nodeResponse"] for o in outputs for s in o["steps"]]
    charged = sum(CreditsHistory.objects.filter(job_id=job.id, flow="out")
                  .values_list("amount", flat=True), Decimal(0))
    return {"job_id": str(job.id), "status": job.status, "wall_s": round(ended - started, 3),
            "charged": float(charged), "quoted": (job.data or {}).get("quote", {}).get("total_cost"),
            "outputs": len(responses),
            "cached_outputs": sum(1 for r in responses if r.get("cached") is True),
            "cost": (job.data or {}).get("cost")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   check=True)
    import django

    django.setup()
    import redis
    from django.conf import settings

    from bench.harness import Worker
    from collections_app.demo import demos
    from collections_app.models import Collection, Project
    from emprops.accounts.services import user_provision
    from generation_app.services.replay import generation_replay

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # var/bench's own broker
    user = user_provision(username=f"bench-{uuid.uuid4().hex[:8]}",
                          free_credits=Decimal("1000"))
    demo = next(d for d in demos() if d.key == "palette-grid")
    project = Project.objects.create(user=user, name="bench")
    collection = Collection.objects.create(project=project, title=demo.title, data=demo.data)
    hashes = [f"0x{uuid.uuid4().hex}" for _ in range(args.hashes)]
    worker = Worker(concurrency=args.concurrency, log=settings.VAR_DIR / "bench-worker.log")
    worker.start(timeout=args.timeout)
    try:
        first = _generate(user=user, collection_id=collection.id, hashes=hashes,
                          timeout=args.timeout)
        second = _generate(user=user, collection_id=collection.id, hashes=hashes,
                           timeout=args.timeout)
        replay = generation_replay(user=user, job_id=first["job_id"], gid=0)
        replay_job, _ended = _finished(replay.id, args.timeout)
        deadline = time.monotonic() + args.timeout
        while not (replay_job.data or {}).get("verdict") and time.monotonic() < deadline:
            time.sleep(0.05)
            replay_job.refresh_from_db()
    finally:
        worker.stop()
    verdict = (replay_job.data or {}).get("verdict") or {}
    return {
        "config": {"collection": f"{demo.title} (1 p5 step, 512 px)", "hashes": args.hashes,
                   "concurrency": args.concurrency, "cpus": os.cpu_count(),
                   "python": platform.python_version(), "git": git_rev()},
        "first": first, "second": second,
        "ratio_second_over_first": round(second["wall_s"] / first["wall_s"], 4),
        "replay": {"job_id": str(replay_job.id), "verdict": verdict.get("verdict")},
    }


def readme_block(result: dict[str, Any]) -> str:
    c, a, b = result["config"], result["first"], result["second"]
    return "\n".join([
        f"Collection: {c['collection']}, {c['hashes']} fixed hashes. Last run: "
        f"{time.strftime('%Y-%m-%d')}, commit {c['git']}, {c['cpus']} CPUs, Python "
        f"{c['python']}, worker concurrency {c['concurrency']}.",
        "",
        "| job | wall (s) | charged / quoted credits | outputs cached |",
        "|---|---|---|---|",
        f"| first run | {a['wall_s']} | {a['charged']:g} / {a['quoted']:g} | "
        f"{a['cached_outputs']} of {a['outputs']} |",
        f"| same hashes again | {b['wall_s']} | {b['charged']:g} / {b['quoted']:g} | "
        f"{b['cached_outputs']} of {b['outputs']} |",
        "",
        f"Second / first (wall): **{result['ratio_second_over_first']}**. Replay of generation 0 "
        f"of the first job (rendered again, no cache): **{result['replay']['verdict']}**.",
    ])


def write_readme(path: Path, result: dict[str, Any]) -> None:
    """Replace this benchmark's figures between its markers (the rest of the file is kept)."""
    write_block(path, MARKER, readme_block(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hashes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300, help="bound on every wait (s)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--readme", type=Path, help="update the figures in this README")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.readme:
        write_readme(args.readme, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
