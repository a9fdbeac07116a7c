"""Chaos: faults injected into a real run, then every job counted for loss and doubles.

    .venv/bin/python bench/chaos.py [--dir var/chaos] [--scenario worker-kill ...] \
        [--out var/chaos/chaos.json] [--readme bench/README.md]

Unlike the other benchmarks this script owns its embedded PostgreSQL and Redis (an
`emprops.embedded.Supervisor` under `--dir`, not `emprops.embedded exec`), because it restarts
them mid-run on the same port and data directory. It runs a Celery beat and Celery worker
subprocesses (prefork, every queue) and a ComfyUI-protocol peer (tests/peers/comfyui_server.py)
on loopback in this process.

Each scenario submits 3 jobs x 6 generations of two inline `prompt` steps and one ComfyUI step
(a slow graph on the `io` queue, so work is in flight), waits until some generations are done
and a prompt is running at the peer, injects its fault, and waits for every job to finish:

- control:      nothing injected (gives the expected rows per job);
- worker-kill:  SIGKILL the worker's process group mid-node, then start another worker;
- redis:        SIGKILL redis-server, start it again on the same port and directory;
- postgres:     immediate shutdown of PostgreSQL (no checkpoint), start it again on the same
                port and data directory;
- comfy-outage: the ComfyUI peer dies without last messages and comes back on the same port
                after `--outage` seconds (60); the engine retries it over
                UPSTREAM_RETRY_WINDOW_SECONDS (900 s by default).

Then, per job, from the database and storage: the job completed once, 6 completed generation
rows, every node run completed, `flat_file` rows = stored files (distinct keys, each readable)
= the control's count, one charge row per generation summing to the hold, the hold settled and
the balance down by exactly the charges, `job_event` sequence 1..N with no gap or duplicate,
history rows equal to the control's (retry notices aside), one output per generation. Prints
JSON; exits 1 on any loss or double. Every wait is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

JOBS = 3
GENERATIONS = 6
SCENARIOS = ("control", "worker-kill", "redis", "postgres", "comfy-outage")
# short leases and a fast reaper, as the worker tests use, so a lost claim is noticed in seconds
WORKER_ENV = {"NODE_LEASE_SECONDS": "6", "REAPER_INTERVAL_SECONDS": "1",
              "NODE_UNCLAIMED_SECONDS": "5", "LOG_LEVEL": "WARNING"}
RETRY_NOTICE = re.compile(r"^Node \S+ retrying in ")


def generation_input() -> dict[str, Any]:
    return {
        "version": "v2",
        "steps": [
            {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a lighthouse in fog"}},
            {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "a woodcut of #1"}},
            {"id": 3, "nodeName": "invert", "nodePayload": {"size": "24"}},
        ],
        "generations": {"hashes": [], "generations": GENERATIONS, "use_custom_hashes": False},
        "variables": [],
    }


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Proc:
    """A Celery subprocess (worker or beat) in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float) -> Proc:
        from emprops.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            try:
                if any(self.name in r for r in app.control.ping(timeout=0.5)):
                    return self
            except Exception:  # noqa: BLE001 - the broker may be restarting; ask again
                time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready in {timeout} s: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def worker(env: dict[str, str], logs: Path, tag: str) -> Proc:
    from generation_app.queues import all_queue_names

    name = f"chaos-{tag}-{uuid.uuid4().hex[:4]}@{platform.node()}"
    return Proc(name, [sys.executable, "-m", "celery", "-A", "emprops", "worker",
                       "-Q", ",".join(all_queue_names()), "-c", "2", "-P", "prefork",
                       "-n", name, "--without-gossip", "--without-mingle",
                       "--loglevel", "WARNING"],
                env=env, log=logs / f"worker-{tag}.log").start()


def beat(env: dict[str, str], logs: Path, tag: str) -> Proc:
    return Proc(f"beat-{tag}", [sys.executable, "-m", "celery", "-A", "emprops", "beat",
                                "--loglevel", "WARNING",
                                "-s", str(logs / f"celerybeat-{tag}")],
                env=env, log=logs / f"beat-{tag}.log").start()


def db_retry(fn: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Run an ORM read, reconnecting while the database is being restarted."""
    from django.db import Error, connection

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Error as exc:
            connection.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: database unreachable: {exc}") from exc
            time.sleep(0.5)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = db_retry(predicate, what)
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout} s")


def setup_workflow(comfy_url: str) -> None:
    from tests.peers.comfyui_server import invert_graph
    from workflows_app.models import Server, Workflow

    server, _ = Server.objects.update_or_create(name="chaos-comfy", defaults={"url": comfy_url})
    Workflow.objects.update_or_create(name="invert", defaults=dict(
        label="Invert", type="comfy_workflow", output_mime_type="image/png", server=server,
        data={
            "workflow": invert_graph(prefix="chaos", slow=1.5),
            # the generation's seed on the slow node: every prompt differs, so the peer's
            # cache (it keeps the last prompt's nodes, as ComfyUI does) never skips the wait
            "inputs": {"1": {"width": {"value": "size", "is_required": True, "default": 24},
                             "height": {"value": "size", "is_required": True, "default": 24}},
                       "4": {"seed": {"value": "seed", "default": 0}}},
            "form": {"config": {"maxNumberOfGenerations": GENERATIONS},
                     "fields": [{"id": "size", "name": "Size", "type": "slider",
                                 "constraints": {"min": 8, "max": 512}}]},
            "output_node_id": "3",
            "credits_script": "function computeCost(c){ return {cost: 2} }",
        }))


class Run:
    """One scenario's services, processes and jobs."""

    def __init__(self, sup: Any, env: dict[str, str], scenario: str, args: argparse.Namespace):
        self.sup, self.env, self.scenario, self.args = sup, env, scenario, args
        self.logs = Path(sup.state_dir) / "logs" / scenario
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.procs: list[Proc] = []
        self.injected: list[str] = []
        self.comfy: Any = None
        self.comfy_executions: Counter[str] = Counter()

    def start_comfy(self, port: int = 0) -> None:
        from tests.peers.comfyui_server import ComfyTestServer

        self.comfy = ComfyTestServer(port=port).start()

    def _collect_comfy(self) -> None:
        if self.comfy is not None:
            self.comfy_executions.update(self.comfy.executions)

    def submit(self) -> list[str]:
        from emprops.accounts.services import user_provision
        from generation_app.services.requests import job_create_from_input, job_input_prepare

        self.user = user_provision(username=f"chaos-{self.scenario}-{uuid.uuid4().hex[:6]}",
                                   free_credits=Decimal("1000"))
        ids = []
        for i in range(JOBS):
            job_input = job_input_prepare(user=self.user, data=generation_input())
            ids.append(str(job_create_from_input(user=self.user, collection_id=None,
                                                 job_input=job_input,
                                                 name=f"chaos {self.scenario} {i}").id))
        return ids

    def mid_run(self, ids: list[str]) -> None:
        """Wait until some generations are done and a prompt is running at the peer."""
        from generation_app.models import Generation

        wait_until(lambda: Generation.objects.filter(job_id__in=ids, status="completed").count()
                   >= 2 and self.comfy.running_prompt_id is not None,
                   self.args.timeout, "mid-run point")

    def inject(self, ids: list[str]) -> None:
        from generation_app.models import Generation

        done = db_retry(lambda: Generation.objects.filter(job_id__in=ids,
                                                          status="completed").count(), "count")
        at = f"{done}/{JOBS * GENERATIONS} generations completed, prompt running at the peer"
        if self.scenario == "worker-kill":
            self.procs[-1].kill9()
            self.injected.append(f"SIGKILL worker process group ({at})")
            self.procs.append(worker(self.env, self.logs, "second"))
            self.injected.append("started a second worker")
        elif self.scenario == "redis":
            t0 = time.monotonic()
            self.sup.crash_restart("redis", down_seconds=2)
            self.injected.append(f"SIGKILL redis-server, restarted on port "
                                 f"{self.sup.ports['redis']} after "
                                 f"{time.monotonic() - t0:.1f} s ({at})")
        elif self.scenario == "postgres":
            t0 = time.monotonic()
            self.sup.crash_restart("postgres", down_seconds=2)
            self.injected.append(f"PostgreSQL immediate shutdown, restarted on port "
                                 f"{self.sup.ports['postgres']} after "
                                 f"{time.monotonic() - t0:.1f} s ({at})")
        elif self.scenario == "comfy-outage":
            port = self.comfy.port
            self.comfy.crash()
            self._collect_comfy()
            self.injected.append(f"ComfyUI peer crashed ({at})")
            time.sleep(self.args.outage)
            self.start_comfy(port)
            self.injected.append(f"ComfyUI peer back on port {port} after {self.args.outage:g} s")

    def execute(self) -> dict[str, Any]:
        from jobs_app.models import Job

        self.start_comfy()
        setup_workflow(self.comfy.url)
        t0 = time.monotonic()
        try:
            self.procs.append(beat(self.env, self.logs, self.scenario))
            self.procs.append(worker(self.env, self.logs, "first").wait_ready(self.args.timeout))
            ids = self.submit()
            log(f"{self.scenario}: submitted {len(ids)} jobs")
            if self.scenario != "control":
                self.mid_run(ids)
                self.inject(ids)
                for line in self.injected:
                    log(f"{self.scenario}: {line}")
            wait_until(lambda: Job.objects.filter(id__in=ids, status__in=Job.FINISHED).count()
                       == len(ids), self.args.timeout, f"{self.scenario}: jobs finished")
            wall = time.monotonic() - t0
            log(f"{self.scenario}: all jobs finished in {wall:.1f} s")
        finally:
            for proc in reversed(self.procs):
                proc.stop()
            self._collect_comfy()
            if self.comfy is not None:
                self.comfy.stop()
        worker_logs = "\n".join(p.tail(100_000) for p in self.procs if p.name.startswith("chaos"))
        return {"scenario": self.scenario, "injected": self.injected, "wall_s": round(wall, 1),
                "jobs": ids, "comfy_executions": sum(self.comfy_executions.values()),
                "comfy_prompts": len(self.comfy_executions),
                "worker_errors": sorted({m.group(0) for m in re.finditer(
                    r"(?m)^.*(?:ERROR|CRITICAL).*$", worker_logs)})[:10],
                "counts": count_jobs(ids, self.user)}


def count_jobs(ids: list[str], user: Any) -> dict[str, Any]:
    """Per job: what the database and storage hold."""
    from django.core.files.storage import default_storage

    from collections_app.models import FlatFile
    from emprops.accounts.models import CreditsHistory, CreditsHold
    from emprops.accounts.services import credits_summary
    from generation_app.models import Generation, NodeRun
    from jobs_app.models import Job, JobEvent, JobHistory

    per_job = {}
    charged_total = Decimal(0)
    for job_id in ids:
        job = Job.objects.get(pk=job_id)
        keys = list(FlatFile.objects.filter(job_id=job_id).values_list("storage_key", flat=True))
        readable = sum(1 for k in set(keys) if default_storage.exists(k))
        prefix = Path(str(default_storage.path(f"generations/{user.id}/{job_id}")))
        on_disk = sum(len(f) for _d, _s, f in os.walk(prefix)) if prefix.exists() else 0
        charges = list(CreditsHistory.objects.filter(job_id=job_id, flow="out")
                       .values_list("amount", "idempotency_key"))
        charged_total += sum((a for a, _k in charges), Decimal(0))
        hold = CreditsHold.objects.get(job_id=job_id)
        seqs = list(JobEvent.objects.filter(job_id=job_id).order_by("seq")
                    .values_list("seq", flat=True))
        history = list(JobHistory.objects.filter(job_id=job_id).values_list("status", "message"))
        retry_notices = sum(1 for _s, m in history if RETRY_NOTICE.match(m))
        per_job[job_id] = {
            "status": job.status,
            "error": job.error_message,
            "generations": dict(Counter(Generation.objects.filter(job_id=job_id)
                                        .values_list("status", flat=True))),
            "node_runs": dict(Counter(NodeRun.objects.filter(job_id=job_id)
                                      .values_list("status", flat=True))),
            "node_attempts_over_1": NodeRun.objects.filter(job_id=job_id, attempt__gt=1).count(),
            "flat_files": len(keys), "distinct_keys": len(set(keys)), "readable": readable,
            "files_on_disk": on_disk,
            "charges": len(charges), "distinct_charge_keys": len({k for _a, k in charges}),
            "charged": str(sum((a for a, _k in charges), Decimal(0))),
            "hold": {"amount": str(hold.amount), "remaining": str(hold.remaining),
                     "status": hold.status, "settled": sorted(hold.settled_gids)},
            "events": len(seqs), "event_seq": job.event_seq,
            "events_contiguous": seqs == list(range(1, len(seqs) + 1)),
            "history": dict(Counter(f"{s}: {m}" for s, m in history if not RETRY_NOTICE.match(m))),
            "retry_notices": retry_notices,
            "outputs": len(job.data.get("outputs") or []),
        }
    summary = credits_summary(user=user)
    return {"per_job": per_job,
            "balance": {"start": "1000", "now": summary["total"], "held": summary["held"],
                        "charged": str(charged_total)}}


def check(result: dict[str, Any], control: dict[str, Any] | None) -> list[str]:
    """Every loss or double found, as readable lines."""
    problems = []
    counts = result["counts"]
    expected = next(iter(control["counts"]["per_job"].values())) if control else None
    for job_id, c in counts["per_job"].items():
        def bad(msg: str, job_id: str = job_id) -> None:
            problems.append(f"{result['scenario']} job {job_id}: {msg}")

        if c["status"] != "completed":
            bad(f"status {c['status']} ({c['error']})")
        if c["generations"] != {"completed": GENERATIONS}:
            bad(f"generations {c['generations']}")
        if set(c["node_runs"]) != {"completed"}:
            bad(f"node runs {c['node_runs']}")
        files = (c["flat_files"], c["distinct_keys"], c["readable"], c["files_on_disk"])
        if len(set(files)) != 1:
            bad(f"flat_file rows / distinct keys / readable / files on disk = {files}")
        if expected and c["flat_files"] != expected["flat_files"]:
            bad(f"{c['flat_files']} flat files, control has {expected['flat_files']}")
        if c["charges"] != GENERATIONS or c["distinct_charge_keys"] != GENERATIONS:
            bad(f"{c['charges']} charge rows ({c['distinct_charge_keys']} keys), "
                f"expected {GENERATIONS}")
        if Decimal(c["charged"]) != Decimal(c["hold"]["amount"]) or c["hold"]["status"] != "settled" \
                or Decimal(c["hold"]["remaining"]) != 0 \
                or c["hold"]["settled"] != list(range(GENERATIONS)):
            bad(f"charged {c['charged']} against hold {c['hold']}")
        if not c["events_contiguous"] or c["event_seq"] != c["events"]:
            bad(f"{c['events']} events, job.event_seq {c['event_seq']}, contiguous "
                f"{c['events_contiguous']}")
        if expected and c["history"] != expected["history"]:
            diff = {k: (c["history"].get(k, 0), expected["history"].get(k, 0))
                    for k in set(c["history"]) | set(expected["history"])
                    if c["history"].get(k, 0) != expected["history"].get(k, 0)}
            bad(f"history differs from the control (this, control): {diff}")
        if c["outputs"] != GENERATIONS:
            bad(f"{c['outputs']} outputs")
    b = counts["balance"]
    if Decimal(b["start"]) - Decimal(b["charged"]) != Decimal(b["now"]) or Decimal(b["held"]):
        problems.append(f"{result['scenario']}: balance {b}")
    return problems


def _git_rev() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


def readme_block(report: dict[str, Any]) -> str:
    lines = ["<!-- chaos:begin -->",
             f"Last run: {report['date']}, commit {report['git']}, {report['cpus']} CPUs, "
             f"{JOBS} jobs x {GENERATIONS} generations (2 inline `prompt` steps + 1 ComfyUI step, "
             f"1.5 s at the peer) per scenario, worker concurrency 2.",
             "",
             "| scenario | injected | wall (s) | jobs completed | flat files | charges | events "
             "(contiguous) | history rows | retries | peer runs | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["scenarios"]:
        per = list(r["counts"]["per_job"].values())
        done = sum(1 for c in per if c["status"] == "completed")
        events = sum(c["events"] for c in per)
        contiguous = all(c["events_contiguous"] for c in per)
        history = sum(sum(c["history"].values()) for c in per)
        retries = sum(c["retry_notices"] for c in per)
        verdict = "ok" if not r["problems"] else f"**{len(r['problems'])} problems**"
        lines.append(
            f"| {r['scenario']} | {'; '.join(r['injected']) or '-'} | {r['wall_s']} | "
            f"{done}/{len(per)} | {sum(c['flat_files'] for c in per)} | "
            f"{sum(c['charges'] for c in per)} | {events} ({'yes' if contiguous else 'NO'}) | "
            f"{history} | {retries} | {r['comfy_executions']} ({r['comfy_prompts']} prompts) | "
            f"{verdict} |")
    problems = [p for r in report["scenarios"] for p in r["problems"]]
    lines += ["", "Problems: " + ("none." if not problems else "; ".join(problems)),
              "<!-- chaos:end -->"]
    return "\n".join(lines)


def write_readme(path: Path, report: dict[str, Any]) -> None:
    """Replace the chaos figures between their markers (the rest of the file is kept)."""
    text = path.read_text() if path.exists() else ""
    block = readme_block(report)
    pattern = re.compile(r"<!-- chaos:begin -->.*?<!-- chaos:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "chaos")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only these (the control always runs first)")
    parser.add_argument("--outage", type=float, default=60, help="ComfyUI peer down (s)")
    parser.add_argument("--timeout", type=float, default=600, help="bound on every wait (s)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--readme", type=Path, help="update the figures in this README")
    args = parser.parse_args()
    for var in ("DATABASE_URL", "REDIS_URL"):
        if os.environ.get(var):
            parser.error(f"{var} is set: chaos restarts its own embedded services, unset it")

    from emprops.embedded import Supervisor, secret_key

    state = args.dir.resolve()
    # a fresh database every run: jobs left unfinished by an interrupted run would otherwise be
    # re-announced by the reaper and run against this run's peer
    Supervisor(state).kill_stale()
    shutil.rmtree(state, ignore_errors=True)
    sup = Supervisor(state)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # stop what was started (the finally below)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        env_services = sup.start_services()
        os.environ.update(env_services)
        os.environ.update({"EMPROPS_VAR_DIR": str(state), "SECRET_KEY": secret_key(state),
                           "PYTHONUNBUFFERED": "1", **WORKER_ENV,
                           # the ComfyUI peer is on loopback
                           "OUTBOUND_ALLOW_HOSTS": "127.0.0.1"})
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, check=True)
        import django

        django.setup()
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        env = dict(os.environ)
        chosen = [s for s in SCENARIOS if s == "control" or s in (args.scenario or SCENARIOS)]
        results: list[dict[str, Any]] = []
        control = None
        for scenario in chosen:
            result = Run(sup, env, scenario, args).execute()
            result["problems"] = check(result, control)
            if scenario == "control":
                control = result
            results.append(result)
            log(f"{scenario}: {'ok' if not result['problems'] else result['problems']}")
    finally:
        sup.stop_all()
    report = {"benchmark": "chaos", "date": time.strftime("%Y-%m-%d"), "git": _git_rev(),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "config": {"jobs": JOBS, "generations": GENERATIONS, "outage_s": args.outage,
                         "worker_env": WORKER_ENV},
              "scenarios": results,
              "problems": [p for r in results for p in r["problems"]]}
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.readme:
        write_readme(args.readme, report)
    print(readme_block(report), file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
