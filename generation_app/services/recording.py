"""Recording node runs' results and failures: files, outputs, history, progress, costs, charges.

Completion is a conditional UPDATE on (status=running, attempt), so a run whose claim was lost
(cancelled, or reaped after its worker died) cannot record anything. Outputs are written to
deterministic storage keys and upserted by key, and history rows carry a dedupe key, so a
redelivered run leaves exactly one file, one row and one charge. A retryable failure goes back
to the queue with bounded backoff; a final one fails its generation. A generation that finishes
releases its user's cap (`admission.admit_waiting`) and, the last one, finishes its job.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from collections_app.services import StepFiles, output_files_record
from emprops import storage
from emprops.accounts import services as accounts
from generation_app.engine.variables import generation_traits
from generation_app.models import Generation, NodeRun
from generation_app.nodes.base import NodeError, NodeOutput
from generation_app.services import runcache, webhooks
from generation_app.services.admission import (
    DONE,
    _announce_on_commit,
    _generation_runs,
    _queue_ready,
    admit_waiting,
)
from generation_app.services.runcache import NOT_CACHED, Probe
from jobs_app import services as jobs
from jobs_app.models import Job

logger = logging.getLogger(__name__)

Ran = tuple[NodeRun, NodeOutput, Probe]  # an inline run done in memory: run, output, probe


@dataclass
class JobWrites:
    """What one recording transaction changes on its (locked) job, written once: the changed
    fields in one UPDATE and the history rows, with their events, in one statement. `flush`
    writes what is pending (before an event that must follow it, and at the end)."""

    job: Job
    fields: set[str] = field(default_factory=set)
    history: list[jobs.HistoryEntry] = field(default_factory=list)
    admit: bool = False  # a generation finished: its user's cap has a free slot
    started: bool = False  # the job became processing: its `job_update` precedes the rows

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self.job, name, value)
        self.fields.update(values)

    def flush(self) -> None:
        if self.admit:  # the freed slots go to the user's oldest waiting generations, now
            self.admit = False
            admit_waiting(user_id=self.job.user_id)
        if self.started:
            self.started = False
            if self.job.status not in Job.FINISHED:  # else its final `job_update` says it all
                jobs.job_changed(job=self.job)
        if self.history:
            jobs.history_add_many(job=self.job, entries=self.history)
            self.history = []
        if self.fields:
            self.job.save(update_fields=sorted(self.fields | {"updated_at"}))
            self.fields = set()


def _job_started(writes: JobWrites) -> None:
    """A pending job becomes processing (the caller holds its row lock)."""
    job = writes.job
    if job.status == Job.Status.PENDING:
        now = timezone.now()
        writes.set(status=Job.Status.PROCESSING, started_at=now, updated_at=now)
        writes.started = True


def _history_started(*, writes: JobWrites, run: NodeRun) -> None:
    writes.history.append(jobs.HistoryEntry(
        status="processing", message="Node started",
        data={"gid": run.gid, "node": run.node_name, "nodeId": run.step_id},
        retry_attempt=run.attempt - 1,
        # one row per node (per job retry), however often it is redelivered
        dedupe_key=f"start:{run.gid}:{run.step_id}:{writes.job.retry_count}"))


def _mark_started(*, run: NodeRun, job: Job, gen: Generation) -> None:
    with transaction.atomic():
        writes = JobWrites(Job.objects.select_for_update().get(pk=job.pk))
        _job_started(writes)
        Generation.objects.filter(pk=gen.pk, status=Generation.Status.PENDING).update(
            status=Generation.Status.PROCESSING, started_at=timezone.now())
        _history_started(writes=writes, run=run)
        writes.flush()


def storage_key(*, job: Job, gid: int, step_id: int, filename: str) -> str:
    return f"generations/{job.user_id}/{job.id}/{gid}/{step_id}/{filename}"


def _file_keys(run: NodeRun, job: Job, result: NodeOutput) -> dict[str, tuple[str, str]]:
    """Where each file of a result is stored (the same on every attempt): name -> (key, mime)."""
    keys = {}
    for f in result.files:
        safe = f.filename.replace("/", "_").replace("..", "_")
        key = storage_key(job=job, gid=run.gid, step_id=run.step_id, filename=safe)
        keys[f.filename] = (key, f.mime_type or mimetypes.guess_type(safe)[0] or
                            "application/octet-stream")
    return keys


def _store_files(result: NodeOutput, keys: Mapping[str, tuple[str, str]]) -> None:
    """Write each file at its deterministic key (overwrite)."""
    for f in result.files:
        storage.save_overwrite(keys[f.filename][0], f.content)


def _step_output(result: NodeOutput, stored: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"mimeType": result.mime_type}
    if result.src_file and result.src_file in stored:
        key, mime = stored[result.src_file]
        out["src"] = storage.public_url(key)
        out["mimeType"] = result.mime_type or mime
    elif stored and not result.src_file:
        key, mime = next(iter(stored.values()))
        out["src"] = storage.public_url(key)
    if result.data is not None:
        out["data"] = result.data
    if result.alt_file and result.alt_file in stored:
        key, mime = stored[result.alt_file]
        out["altSrc"] = storage.public_url(key)
        out["altMimeType"] = mime
    if result.src_files:  # every image of a batch, the first one also as `src`
        out["srcs"] = [{"src": storage.public_url(stored[name][0]), "mimeType": stored[name][1]}
                       for name in result.src_files if name in stored]
    out.update(result.extra)
    return out


def _claim_renew(run: NodeRun) -> bool:
    """Renew this attempt's lease if it still holds the claim (False: cancelled or taken over).

    While the lease is live no one may take the run over, so what is written next (the output
    files) belongs to the attempt that records it."""
    lease = timezone.now() + timedelta(seconds=settings.NODE_LEASE_SECONDS)
    return bool(NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING,
                                       attempt=run.attempt).update(lease_until=lease))


def _claim_held(run: NodeRun) -> bool:
    return NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING,
                                  attempt=run.attempt).exists()


def _charge_reason(run: NodeRun, probe: Probe, job: Job) -> str:
    """Why a recorded step costs what it does: reused (`cached`, free), run again after a
    failure (`retry`) or run once (`ran`)."""
    if probe.source is not None:
        return "cached"
    return "retry" if run.attempt > 1 or job.retry_count else "ran"


def _recorded_fields(run: NodeRun, probe: Probe, job: Job, result: NodeOutput,
                     keys: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    reason = _charge_reason(run, probe, job)
    return {"cache_key": probe.key, "env": probe.env or None,
            "output_files": runcache.files_meta(result, keys),
            "cached_from_id": probe.source["id"] if probe.source else None,
            "charged": Decimal(0) if reason == "cached" else F("cost"),
            "charge_reason": reason}


def node_run_complete(*, run: NodeRun, result: NodeOutput, payload: Mapping[str, Any],
                      chain: list[Ran] | None = None, probe: Probe = NOT_CACHED) -> list[int]:
    """Record a claimed run's result, and the inline runs `chain` ran after it in memory (still
    blocked in the database), in one transaction; return the inline runs it made ready. A
    result reused from the cache (`probe.source`) is recorded as such: free, and naming its
    source in the output, the history and the events."""
    job = run.job
    # An attempt that lost its claim stores nothing: its files would overwrite the winner's (the
    # keys are the same on every attempt) or be orphans of a cancelled job. An inline chain that
    # finished well inside its fresh lease cannot have been taken over, so a read (no commit)
    # tells whether it was cancelled; anything slower renews the lease first.
    fresh = run.inline and run.started_at is not None and (
        timezone.now() - run.started_at).total_seconds() < settings.NODE_LEASE_SECONDS / 3
    if not (_claim_held(run) if fresh else _claim_renew(run)):
        return []
    done = [(run, result, _file_keys(run, job, result), probe)]
    done += [(r, out, _file_keys(r, job, out), p) for r, out, p in chain or ()]
    for _r, res, keys, _p in done:  # idempotent: same keys on every attempt
        _store_files(res, keys)
    now = timezone.now()
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        writes = JobWrites(locked)
        recorded = []
        sources: dict[int, dict[str, Any]] = {}
        for r, res, keys, p in done:
            output = _step_output(res, keys)
            if p.source is not None:
                sources[r.step_id] = runcache.source_ref(p.source)
                output.update(cached=True, cachedFrom=sources[r.step_id])
            fields = _recorded_fields(r, p, locked, res, keys)
            if r is run:
                won = NodeRun.objects.filter(pk=r.pk, status=NodeRun.Status.RUNNING,
                                             attempt=r.attempt).update(
                    status=NodeRun.Status.COMPLETED, output=output, progress=1.0,
                    completed_at=now, lease_until=None, error=None, **fields)
            else:  # ran in memory after `run`: blocked until now, unless cancelled meanwhile
                won = NodeRun.objects.filter(pk=r.pk, status=NodeRun.Status.BLOCKED).update(
                    status=NodeRun.Status.COMPLETED, output=output, progress=1.0, attempt=1,
                    worker=run.worker, started_at=run.started_at, completed_at=now,
                    lease_until=None, error=None, **fields)
            if not won:  # cancelled or taken over meanwhile: this attempt records no more
                break
            recorded.append((r, keys, output))
        if not recorded:
            return []
        gen = Generation.objects.select_for_update().get(job=locked, gid=run.gid)
        if run.inline:  # an inline run did not say it started: it does now, with its result
            _job_started(writes)
        _record_files(job=locked, gen=gen, recorded=recorded)
        for r, _keys, output in recorded:
            if r.inline:
                _history_started(writes=writes, run=r)
            source = sources.get(r.step_id)
            writes.history.append(jobs.HistoryEntry(
                status="processing",
                message=f"Node {r.node_name} completed"
                + (f" from cache (job {source['jobId']})" if source else ""),
                data={"gid": r.gid, "node": r.node_name, "nodeId": r.step_id, "output": output,
                      **({"cached": True, "cachedFrom": source} if source else {})},
                retry_attempt=r.attempt - 1,
                dedupe_key=f"done:{r.gid}:{r.step_id}:{locked.retry_count}"))
        unfinished: list[int] = []
        rows = _generation_runs(locked, run.gid)
        ready = _queue_ready(locked, run.gid, unfinished=unfinished, rows=rows)
        if not unfinished:
            _generation_completed(writes=writes, gen=gen, rows=rows)
        elif gen.status == Generation.Status.PENDING:
            Generation.objects.filter(pk=gen.pk).update(status=Generation.Status.PROCESSING,
                                                        started_at=run.started_at or now)
        _update_progress(writes)
        inline = [item.run_id for item in ready if item.inline]
        _announce_on_commit([r.announce() for r in ready if r.run_id not in inline])
    return inline


def _record_files(*, job: Job, gen: Generation,
                  recorded: Sequence[tuple[NodeRun, Mapping[str, tuple[str, str]], dict[str, Any]]],
                  ) -> None:
    collection_id = (job.data or {}).get("collectionId")
    gen_in = dict(job.input or {})
    gen_in["generations"] = {"hashes": [gen.hash], "generations": 1, "use_custom_hashes": True}
    features, _ = _traits(job, gen)
    output_files_record(user_id=job.user_id, job_id=job.id, collection_id=collection_id, steps=[
        StepFiles(component_id=r.step_id, rel_id=f"{collection_id}_{r.step_id}", files=keys,
                  gen_in_data=gen_in, gen_out_data=output, features=features)
        for r, keys, output in recorded])


def _traits(job: Job, gen: Generation) -> tuple[dict[str, str], dict[str, str]]:
    """The generation's `(features, feature_labels)`, from its picks and the job's variables."""
    return generation_traits(gen.variables or {}, (job.input or {}).get("variables") or [])


def _generation_output(job: Job, gen: Generation,
                       rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    runs = {r["step_id"]: r for r in (rows if rows is not None else _generation_runs(job, gen.gid))}
    steps = []
    for s in (job.input or {}).get("steps") or []:
        r = runs.get(s.get("id"))
        if r is None or r["status"] != NodeRun.Status.COMPLETED:
            continue
        steps.append({"id": s["id"], "nodeName": s["nodeName"], "nodeAlias": s.get("alias"),
                      "nodeResponse": r["output"]})
    features, labels = _traits(job, gen)
    return {"id": str(job.id), "generation": {"id": gen.gid, "hash": gen.hash,
                                              "features": features, "feature_labels": labels},
            "steps": steps}


def _as_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _generation_cost(job: Job, rows: list[dict[str, Any]], *,
                     failed: bool) -> tuple[dict[str, Any], Decimal | None]:
    """One finished generation's itemised cost (per step: quoted, charged and why) and what to
    charge for it: the steps that ran, not those served from the cache; nothing for a failed
    generation (its share is released). The amount is None for runs planned before steps
    carried their quoted cost: the quote's per-generation amount is charged then."""
    order = {s.get("id"): i for i, s in enumerate((job.input or {}).get("steps") or [])}
    quoted = charged = Decimal(0)
    known = True
    steps = []
    for r in sorted(rows, key=lambda r: (order.get(r["step_id"], len(order)), r["step_id"])):
        if r["status"] == NodeRun.Status.SKIPPED:
            continue
        cost: Decimal | None = r["cost"]
        known = known and cost is not None
        cached = r["cached_from_id"] is not None
        if failed:
            reason = "failed: released"
        elif cached:
            reason = "cached"
        else:
            reason = r["charge_reason"] if r["charge_reason"] in ("ran", "retry") else "ran"
        spent = (cost or Decimal(0)) if reason in ("ran", "retry") else Decimal(0)
        quoted += cost or Decimal(0)
        charged += spent
        item: dict[str, Any] = {"stepId": r["step_id"], "nodeName": r["node_name"],
                                "quoted": _as_float(cost), "charged": float(spent),
                                "reason": reason}
        if cached and isinstance(r["output"], Mapping) and r["output"].get("cachedFrom"):
            item["cachedFrom"] = r["output"]["cachedFrom"]
        steps.append(item)
    cost_doc = {"quoted": float(quoted), "charged": float(charged),
                "released": float(quoted - charged), "steps": steps}
    return cost_doc, charged if known else None


def _job_cost_record(job: Job, *, gid: int, status: str, cost: Mapping[str, Any]) -> None:
    """Put a finished generation's cost into `job.data.cost` (the caller saves `data`)."""
    data = dict(job.data or {})
    summary = dict(data.get("cost") or {})
    generations = [g for g in summary.get("generations") or [] if g.get("gid") != gid]
    generations.append({"gid": gid, "status": status, **cost})
    generations.sort(key=lambda g: g["gid"])
    data["cost"] = {"quoted": sum(g["quoted"] for g in generations),
                    "charged": sum(g["charged"] for g in generations),
                    "released": sum(g["released"] for g in generations),
                    "generations": generations}
    job.data = data


def _generation_completed(*, writes: JobWrites, gen: Generation,
                          rows: list[dict[str, Any]] | None = None) -> None:
    if gen.status in Generation.FINISHED:
        return
    job = writes.job
    rows = rows if rows is not None else _generation_runs(job, gen.gid)
    output = _generation_output(job, gen, rows)
    cost, amount = _generation_cost(job, rows, failed=False)
    output["cost"] = cost
    gen.status = Generation.Status.COMPLETED
    gen.outputs = output
    gen.completed_at = timezone.now()
    gen.save(update_fields=["status", "outputs", "completed_at"])
    data = dict(job.data or {})
    outputs = [o for o in data.get("outputs") or [] if o["generation"]["id"] != gen.gid]
    outputs.append(output)
    data["outputs"] = sorted(outputs, key=lambda o: o["generation"]["id"])
    job.data = data
    _job_cost_record(job, gid=gen.gid, status=Generation.Status.COMPLETED, cost=cost)
    writes.fields.add("data")
    accounts.credits_charge_generation(job_id=job.id, gid=gen.gid, amount=amount,
                                       comment=f"{job.name} (generation {gen.gid})")
    writes.history.append(jobs.HistoryEntry(
        status="completed", message="Generation completed successfully",
        data={"gid": gen.gid, "outputs": output},
        dedupe_key=f"gen-done:{gen.gid}:{job.retry_count}"))
    webhooks.generation_completed(job=job, output=output)
    _after_generation_finished(writes)


def _after_generation_finished(writes: JobWrites) -> None:
    job = writes.job
    writes.admit = True
    statuses = list(Generation.objects.filter(job=job).values_list("status", flat=True))
    if any(s not in Generation.FINISHED for s in statuses):
        return
    now = timezone.now()
    if Generation.Status.FAILED in statuses:
        failed = Generation.objects.filter(job=job, status=Generation.Status.FAILED).order_by(
            "gid").first()
        writes.set(status=Job.Status.FAILED,
                   error_message=failed.error if failed else "Generation failed")
    elif Generation.Status.CANCELLED in statuses:
        writes.set(status=Job.Status.CANCELLED)
    else:
        writes.set(status=Job.Status.COMPLETED, error_message=None)
    writes.set(completed_at=now)
    accounts.credits_release_job(job_id=job.id)
    webhooks.job_finished(job=job)
    if job.job_type == "replay" and job.status == Job.Status.COMPLETED:
        from generation_app.services.replay import replay_verdict_record

        # files are read and compared after the commit, outside any transaction
        job_id = job.id
        transaction.on_commit(lambda: replay_verdict_record(job_id=job_id))


def _update_progress(writes: JobWrites) -> None:
    """Write what is pending on the job with its new progress, then its `job_update`."""
    job = writes.job
    # one row back whatever the job's size
    has_runs = True
    if job.status == Job.Status.COMPLETED:  # every run is done
        writes.set(progress=100)
    else:
        agg = NodeRun.objects.filter(job=job).aggregate(
            n=Count("id"), done=Count("id", filter=Q(status__in=DONE)),
            partial=Sum("progress", filter=~Q(status__in=DONE)))
        has_runs = bool(agg["n"])
        if has_runs:
            writes.set(progress=int(100 * (agg["done"] + (agg["partial"] or 0.0)) / agg["n"]))
    writes.flush()
    if has_runs:
        jobs.job_changed(job=job)
        webhooks.job_progress(job=job)


def node_run_progress(*, run: NodeRun, fraction: float) -> None:
    """Record a running node's progress (0-1) and the job's mean progress."""
    fraction = max(0.0, min(1.0, float(fraction)))
    with transaction.atomic():
        updated = NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING,
                                         attempt=run.attempt).update(progress=fraction)
        if not updated:
            return
        job = Job.objects.select_for_update().get(pk=run.job_id)
        if job.status in Job.FINISHED:
            return
        _update_progress(JobWrites(job))


def backoff_seconds(attempt: int) -> float:
    return float(min(60, 2 ** max(0, attempt - 1)))


def calls_upstream(run: NodeRun) -> bool:
    """Whether the run waits on an outside server (its errors may outlast a few attempts)."""
    return run.queue == "io" or run.queue.startswith("service.")


def retry_delay(*, run: NodeRun, error: NodeError, now: datetime) -> float | None:
    """Seconds until a failed run is tried again, or None when it fails for good.

    An upstream node retries a transient error with capped exponential backoff (1, 2, 4 ... s,
    at most UPSTREAM_RETRY_MAX_BACKOFF_SECONDS) until UPSTREAM_RETRY_WINDOW_SECONDS have passed
    since the first failure of the streak; other nodes retry NODE_MAX_ATTEMPTS times."""
    if not error.retryable:
        return None
    if calls_upstream(run):
        since = run.retrying_since or now
        if (now - since).total_seconds() >= settings.UPSTREAM_RETRY_WINDOW_SECONDS:
            return None
        return float(min(settings.UPSTREAM_RETRY_MAX_BACKOFF_SECONDS, 2 ** min(run.retries, 30)))
    if run.attempt < settings.NODE_MAX_ATTEMPTS:
        return backoff_seconds(run.attempt)
    return None


def node_run_fail(*, run: NodeRun, error: NodeError) -> list[int]:
    """A transient error goes back to the queue with `next_attempt_at` (and a history row that
    says when it is retried and why) while retries are left; otherwise the run and its
    generation fail."""
    job = run.job
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        now = timezone.now()
        delay = retry_delay(run=run, error=error, now=now) \
            if locked.status not in Job.FINISHED else None
        if delay is not None:
            # announced now with a countdown when that is sooner than the reaper's next pass
            soon = delay <= settings.REAPER_INTERVAL_SECONDS
            requeued = NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING,
                                              attempt=run.attempt).update(
                status=NodeRun.Status.QUEUED, next_attempt_at=now + timedelta(seconds=delay),
                lease_until=None, error=error.message[:2000], queued_at=now,
                announced_at=now if soon else None, retries=F("retries") + 1,
                retrying_since=Coalesce(F("retrying_since"), Value(now)))
            if not requeued:
                return []
            jobs.history_add(
                job=locked, status="processing",
                message=f"Node {run.node_name} retrying in {delay:g} s: {error.message}"[:2000],
                data={"gid": run.gid, "node": run.node_name, "nodeId": run.step_id,
                      "attempt": run.attempt, "retryInSeconds": delay,
                      "error": error.message[:2000]},
                retry_attempt=run.attempt - 1,
                dedupe_key=f"retry:{run.gid}:{run.step_id}:{run.attempt}:{locked.retry_count}")
            if soon:
                _announce_on_commit([(run.pk, run.queue, locked.priority)],
                                    countdown=delay + 0.05)
            logger.info("node %s of job %s failed (attempt %s), retrying in %s s: %s",
                        run.node_name, job.id, run.attempt, delay, error.message)
            return []
        won = NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING,
                                     attempt=run.attempt).update(
            status=NodeRun.Status.FAILED, error=error.message[:2000], lease_until=None,
            completed_at=now)
        if not won:
            return []
        gen = Generation.objects.select_for_update().get(job=locked, gid=run.gid)
        writes = JobWrites(locked)
        generation_fail(writes=writes, gen=gen, component=run.alias or run.node_name,
                        error=error)
        _update_progress(writes)
    return []


def generation_fail(*, writes: JobWrites, gen: Generation, component: str,
                    error: NodeError) -> None:
    """Fail one generation: its other work stops, its hold share is released. The caller
    flushes `writes`."""
    if gen.status in Generation.FINISHED:
        return
    job = writes.job
    message = f"Error in component '{component}': {error.message}"
    gen.status = Generation.Status.FAILED
    gen.error = message
    gen.failure_type = error.failure_type
    gen.completed_at = timezone.now()
    gen.save(update_fields=["status", "error", "failure_type", "completed_at"])
    NodeRun.objects.filter(job=job, gid=gen.gid, status__in=(
        NodeRun.Status.BLOCKED, NodeRun.Status.QUEUED, NodeRun.Status.RUNNING)).update(
        status=NodeRun.Status.CANCELLED, lease_until=None)
    accounts.credits_release_generation(job_id=job.id, gid=gen.gid)
    cost, _amount = _generation_cost(job, _generation_runs(job, gen.gid), failed=True)
    _job_cost_record(job, gid=gen.gid, status=Generation.Status.FAILED, cost=cost)
    writes.fields.add("data")
    writes.history.append(jobs.HistoryEntry(
        status="failed", message=f"Generation failed: {message}",
        data={"gid": gen.gid, "error": message, "failure_type": error.failure_type,
              "retryable": error.retryable},
        dedupe_key=f"gen-failed:{gen.gid}:{job.retry_count}"))
    _after_generation_finished(writes)
