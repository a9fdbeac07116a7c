"""Running node runs: claim, execute, record, advance. The database is the record of pending work.

A node run is claimed with a conditional UPDATE that sets a lease; while the node runs, a
heartbeat renews the lease. Completion is a conditional UPDATE on (status=running, attempt), so a
run whose claim was lost (cancelled, or reaped after its worker died) cannot record anything.
Outputs are written to deterministic storage keys and upserted by key, and history rows carry a
dedupe key, so a redelivered run leaves exactly one file, one row and one charge.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from collections_app.services import StepFiles, output_files_record
from emprops import storage
from emprops.accounts import services as accounts
from generation_app.engine import richtext
from generation_app.engine.refs import RefError, resolve_payload
from generation_app.engine.variables import generation_traits
from generation_app.models import Generation, NodeRun, WorkflowSnapshot
from generation_app.nodes.base import NodeError, NodeOutput, RunContext
from generation_app.nodes.registry import VARIABLES_STEP_ID, node_class
from generation_app.queues import announce_run
from generation_app.services import runcache, webhooks
from generation_app.services.runcache import NOT_CACHED, Probe
from generation_app.services.steps import workflow_snapshot_load
from jobs_app import services as jobs
from jobs_app.models import Job
from workflows_app.models import UserApiSecret
from workflows_app.node_types import truthy

logger = logging.getLogger(__name__)

DONE = (NodeRun.Status.COMPLETED, NodeRun.Status.SKIPPED)
Announce = tuple[int, str, int]  # (node run id, queue, priority)


class Ready(NamedTuple):
    """A run `_queue_ready` released, with its frozen plan so the caller need not look it up."""

    run_id: int
    queue: str
    priority: int
    inline: bool

    def announce(self) -> Announce:
        return self.run_id, self.queue, self.priority


def _step(job: Job, step_id: int) -> dict[str, Any]:
    for s in (job.input or {}).get("steps") or []:
        if s.get("id") == step_id:
            return dict(s)
    raise KeyError(step_id)


# ---- announcing work ----------------------------------------------------------------------------

def _announce_on_commit(items: list[Announce], *, countdown: float | None = None) -> None:
    if not items:
        return

    def send() -> None:
        for run_id, queue, priority in items:
            announce_run(run_id, queue, priority, countdown=countdown)

    transaction.on_commit(send)


def _queue_ready(job: Job, gid: int, *, unfinished: list[int] | None = None,
                 rows: list[dict[str, Any]] | None = None) -> list[Ready]:
    """Mark the generation's blocked runs whose dependencies (frozen in the plan) are done as
    queued. `unfinished`, when given, receives the ids of the generation's runs not done; `rows`,
    when given, are the generation's runs as `_generation_runs` read them under the job's lock."""
    runs = rows if rows is not None else _generation_runs(job, gid)
    done = {r["step_id"] for r in runs if r["status"] in DONE}
    if unfinished is not None:
        unfinished += [r["id"] for r in runs if r["status"] not in DONE]
    ready = [r for r in runs if r["status"] == NodeRun.Status.BLOCKED
             and all(d in done or d == VARIABLES_STEP_ID for d in r["depends_on"] or ())]
    if not ready:
        return []
    now = timezone.now()
    NodeRun.objects.filter(id__in=[r["id"] for r in ready], status=NodeRun.Status.BLOCKED).update(
        status=NodeRun.Status.QUEUED, queued_at=now, announced_at=now)
    return [Ready(r["id"], r["queue"], job.priority, r["inline"]) for r in ready]


def _user_lock(user_id: Any) -> None:
    key = int.from_bytes(hashlib.sha256(f"gen-cap:{user_id}".encode()).digest()[:8], "big",
                         signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def admit_waiting(*, user_id: Any, known_waiting: bool = False) -> None:
    """Start the user's oldest waiting generations while they are under their running cap.

    The cap is per user, so one user's flood never holds back another user's work.
    """
    # Most users have nothing waiting: a plain read says so without a transaction. A generation
    # made to wait by a request that commits just after this read is started by the reaper.
    if not known_waiting and not Generation.objects.filter(job__user_id=user_id,
                                     status=Generation.Status.WAITING).exists():
        return
    with transaction.atomic():
        _user_lock(user_id)
        active = Generation.objects.filter(
            job__user_id=user_id,
            status__in=(Generation.Status.PENDING, Generation.Status.PROCESSING)).count()
        slots = settings.MAX_RUNNING_GENERATIONS_PER_USER - active
        if slots <= 0:
            return
        due = Q(job__not_before__isnull=True) | Q(job__not_before__lte=timezone.now())
        waiting = list(Generation.objects.filter(due, job__user_id=user_id,
                                                 status=Generation.Status.WAITING)
                       .select_related("job").order_by("job__created_at", "job_id", "gid")[:slots])
        items: list[Announce] = []
        for gen in waiting:
            Generation.objects.filter(pk=gen.pk, status=Generation.Status.WAITING).update(
                status=Generation.Status.PENDING)
            items += [r.announce() for r in _queue_ready(gen.job, gen.gid)]
        _announce_on_commit(items)


def generations_admit_new(*, job: Job, count: int) -> int | None:
    """How many of a new job's `count` generations may start at once (the rest wait), holding
    the user's cap lock to the end of the transaction; None when older generations of the user
    are waiting, which go first (`admit_waiting`)."""
    if job.not_before is not None and job.not_before > timezone.now():
        return 0
    _user_lock(job.user_id)
    counts = dict(Generation.objects.filter(
        job__user_id=job.user_id, status__in=(Generation.Status.WAITING, Generation.Status.PENDING,
                                              Generation.Status.PROCESSING))
        .values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    if counts.get(Generation.Status.WAITING):
        return None
    active = counts.get(Generation.Status.PENDING, 0) + counts.get(Generation.Status.PROCESSING, 0)
    return max(0, min(count, settings.MAX_RUNNING_GENERATIONS_PER_USER - active))


def runs_announce(runs: list[NodeRun], priority: int) -> None:
    """Announce queued runs when the transaction commits."""
    _announce_on_commit([(r.pk, r.queue, priority) for r in runs])


# ---- claiming ------------------------------------------------------------------------------------

def node_run_claim(*, run_id: int, worker: str) -> NodeRun | None:
    """Take a run for this worker: queued and due, or running with an expired lease."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.NODE_LEASE_SECONDS)
    claimable = (Q(status=NodeRun.Status.QUEUED)
                 & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))) \
        | Q(status=NodeRun.Status.RUNNING, lease_until__lt=now)
    claimed = NodeRun.objects.filter(Q(pk=run_id) & claimable).update(
        status=NodeRun.Status.RUNNING, attempt=F("attempt") + 1, lease_until=lease,
        started_at=now, worker=worker[:200], next_attempt_at=None)
    if not claimed:
        return None
    return NodeRun.objects.select_related("job").get(pk=run_id)


class _Heartbeat:
    """Renews a running node's lease and tells the node at once when its job is cancelled.

    The cancel is pushed: the heartbeat listens on the job's event channel, where the cancel's
    `job_update` is published on commit, so a long node (a queued ComfyUI prompt, a polled API)
    stops within a fraction of a second instead of at the next lease renewal. The renewal, which
    also finds a cancel, remains the fallback when Redis is unreachable.
    """

    POLL_SECONDS = 0.1

    def __init__(self, run: NodeRun) -> None:
        self.run = run
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"lease-{run.pk}")
        self._last_progress = 0.0

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _renew(self) -> None:
        lease = timezone.now() + timedelta(seconds=settings.NODE_LEASE_SECONDS)
        alive = NodeRun.objects.filter(pk=self.run.pk, status=NodeRun.Status.RUNNING,
                                       attempt=self.run.attempt).update(lease_until=lease)
        if not alive:
            self.cancelled.set()

    def _subscribe(self) -> Any:
        try:
            pubsub = jobs.events_pubsub()
            pubsub.subscribe(jobs.events_channel(self.run.job_id))
            return pubsub
        except Exception:  # noqa: BLE001 - Redis down: the lease renewal still finds a cancel
            logger.warning("no cancel push for node run %s: cannot subscribe", self.run.pk)
            return None

    def _listen(self, pubsub: Any, seconds: float) -> Any:
        try:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=seconds)
        except Exception:  # noqa: BLE001
            self._stop.wait(seconds)
            return None
        if message and jobs.event_says_cancelled(message.get("data")):
            self.cancelled.set()
        return pubsub

    def _loop(self) -> None:
        interval = max(0.5, settings.NODE_LEASE_SECONDS / 3)
        pubsub = self._subscribe()
        try:
            # a cancel committed between the claim and the subscription was published unheard
            self._renew()
            next_renew = time.monotonic() + interval
            while not self._stop.is_set():
                wait = min(self.POLL_SECONDS, max(0.0, next_renew - time.monotonic()))
                if pubsub is not None:
                    pubsub = self._listen(pubsub, wait)
                else:
                    self._stop.wait(wait)
                if time.monotonic() >= next_renew and not self._stop.is_set():
                    self._renew()
                    next_renew = time.monotonic() + interval
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001, S110 - closing is best effort
                    pass
            connection.close()

    def progress(self, fraction: float) -> None:
        now = timezone.now().timestamp()
        if now - self._last_progress < 1.0 and fraction < 1.0:
            return
        self._last_progress = now
        try:
            node_run_progress(run=self.run, fraction=fraction)
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()


# ---- running -------------------------------------------------------------------------------------

def _component_texts(outputs: Mapping[int, Mapping[str, Any]]) -> dict[int, str]:
    texts = {}
    for step_id, out in outputs.items():
        data = out.get("data")
        if isinstance(data, str):
            texts[step_id] = data
        elif data is not None and step_id != VARIABLES_STEP_ID:
            texts[step_id] = str(data)
        elif out.get("src"):
            texts[step_id] = str(out["src"])
    return texts


def resolve_step_payload(*, step: Mapping[str, Any], workflow: Mapping[str, Any] | None,
                         outputs: Mapping[int, Mapping[str, Any]], variables: Mapping[str, str],
                         seed: int) -> dict[str, Any]:
    """`$ref`s resolved with jq, rich-text prompts rendered, `seed` filled from the generation."""
    payload = resolve_payload(step.get("nodePayload") or {}, outputs)
    form = ((workflow or {}).get("data") or {}).get("form")
    from workflows_app.forms import prompt_fields

    prompt_keys = {"prompt", *prompt_fields(form)}
    texts = _component_texts(outputs)
    for key in prompt_keys:
        value = payload.get(key)
        if isinstance(value, str):
            payload[key] = richtext.render(value, variables=variables, components=texts)
    if payload.get("seed") in (None, ""):
        payload["seed"] = seed
    return payload


def _config() -> dict[str, Any]:
    return {
        "LLM_BASE_URL": settings.LLM_BASE_URL, "LLM_API_KEY": settings.LLM_API_KEY,
        "LLM_MODEL": settings.LLM_MODEL, "LLM_TIMEOUT_SECONDS": settings.LLM_TIMEOUT_SECONDS,
        "OUTBOUND_ALLOW_HOSTS": list(settings.OUTBOUND_ALLOW_HOSTS),
        "MEDIA_URL": settings.MEDIA_URL,
        "OPENAI_BASE_URL": settings.OPENAI_BASE_URL, "OPENAI_API_KEY": settings.OPENAI_API_KEY,
        "OPENAI_MODEL": settings.OPENAI_MODEL, "OPENAI_IMAGE_MODEL": settings.OPENAI_IMAGE_MODEL,
        "OPENAI_TIMEOUT_SECONDS": settings.OPENAI_TIMEOUT_SECONDS,
    }


def _user_secret(user_id: Any, workflow_name: str) -> str | None:
    row = UserApiSecret.objects.filter(user_id=user_id, workflow_name=workflow_name).first()
    if row is None:
        return None
    from workflows_app.secrets import decrypt

    return decrypt(row.encrypted_value)


def _generation_runs(job: Job, gid: int) -> list[dict[str, Any]]:
    """Every node run of one generation, as the runner needs them (one query)."""
    rows: Any = NodeRun.objects.filter(job_id=job.pk, gid=gid).values(
        "id", "step_id", "node_name", "alias", "status", "queue", "inline", "depends_on",
        "workflow_digest", "output", "output_files", "cost", "charged", "charge_reason",
        "cached_from_id")
    return list(rows)


def _content_hashes(rows: list[dict[str, Any]], job: Job) -> dict[int, str]:
    """step id -> content hash of each completed output whose files were hashed."""
    return {r["step_id"]: runcache.output_content_hash(output=r["output"],
                                                       files=r["output_files"],
                                                       job_id=str(job.id))
            for r in rows if r["status"] == NodeRun.Status.COMPLETED
            and r["output"] is not None and r["output_files"] is not None}


def _outputs_of(rows: list[dict[str, Any]], variables: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    outputs: dict[int, dict[str, Any]] = {VARIABLES_STEP_ID: {"data": dict(variables),
                                                              "mimeType": None}}
    for r in rows:
        if r["status"] == NodeRun.Status.COMPLETED and r["output"] is not None:
            outputs[r["step_id"]] = r["output"]
    return outputs


class _Prepared(NamedTuple):
    node: Any
    payload: dict[str, Any]
    workflow: dict[str, Any] | None
    step: dict[str, Any]


def _prepare(run: NodeRun, job: Job, gen: Generation,
             outputs: Mapping[int, Mapping[str, Any]]) -> _Prepared:
    """The node and its resolved payload; raises RefError, KeyError or DoesNotExist."""
    step = _step(job, run.step_id)
    workflow = workflow_snapshot_load(digest=run.workflow_digest)
    payload = resolve_step_payload(step=step, workflow=workflow, outputs=outputs,
                                   variables=gen.variables, seed=gen.seed)
    node = node_class(run.node_name, workflow["type"] if workflow else None)()
    return _Prepared(node, payload, workflow, step)


def _probe(*, prepared: _Prepared, run: NodeRun, job: Job, gen: Generation,
           hashes: Mapping[int, str]) -> Probe:
    """The run's cache key and environment, and the earlier run of the same owner it may reuse.

    Never fails the run: a key that cannot be computed (an upstream output without hashes, an
    environment that cannot be asked) only means the node runs."""
    try:
        node = prepared.node
        env = node.env_fingerprint(prepared.payload, prepared.workflow)
        flagged = truthy(((prepared.workflow or {}).get("data") or {}).get("cacheable"))
        upstream = {d: hashes.get(d) for d in run.depends_on or () if d != VARIABLES_STEP_ID}
        if not (node.cacheable(prepared.payload) or flagged) or "unknown" in env.values() \
                or None in upstream.values():
            return Probe(None, env)
        key = runcache.run_cache_key(
            node_type=node.name, node_name=run.node_name, version=node.version, env=env,
            workflow_digest=run.workflow_digest, payload=prepared.step.get("nodePayload") or {},
            upstream={d: h for d, h in upstream.items() if h}, seed=gen.seed, hash=gen.hash,
            variables=gen.variables)
        if not runcache.cache_allowed(job_type=job.job_type, job_data=job.data):
            return Probe(key, env)
        return Probe(key, env, runcache.cache_lookup(user_id=job.user_id, key=key))
    except Exception:  # a bug here must not cost the run: it runs uncached
        logger.exception("cache probe of node %s of job %s failed", run.node_name, job.id)
        return NOT_CACHED


def _from_cache(probe: Probe, *, job: Job, gid: int) -> tuple[Probe, NodeOutput | None]:
    """The reused output when the probe found a source whose files are intact."""
    if probe.source is None:
        return probe, None
    result = runcache.cached_output(source=probe.source, user_id=job.user_id, job_id=job.id,
                                    gid=gid)
    return (probe, result) if result is not None else (probe._replace(source=None), None)


def _context(*, run: NodeRun, job: Job, gen: Generation, workflow: Mapping[str, Any] | None,
             outputs: Mapping[int, Mapping[str, Any]],
             heartbeat: _Heartbeat | None) -> RunContext:
    components = {sid: out for sid, out in outputs.items() if sid != VARIABLES_STEP_ID}
    return RunContext(
        user_id=str(job.user_id), job_id=str(job.id), gid=run.gid, step_id=run.step_id,
        node_name=run.node_name, alias=run.alias, hash=gen.hash, seed=gen.seed,
        variables=dict(gen.variables), components=components, aliases=_aliases(job),
        read_output=_own_output_reader(job),
        report_progress=heartbeat.progress if heartbeat else (lambda _fraction: None),
        is_cancelled=heartbeat.cancelled.is_set if heartbeat else (lambda: False),
        workflow=workflow,
        user_secret=_user_secret(job.user_id, run.node_name) if workflow else None,
        attempt=run.attempt, run_key=run_key_for(job=job, run=run), config=_config(),
    )


def node_run_execute(*, run_id: int, worker: str) -> list[int]:
    """Claim and run one node run; return ready runs the caller may run inline next.

    An inline run (a cheap built-in) also runs, in memory, the inline steps of its generation
    that it makes ready, and records all of them in one transaction."""
    run = node_run_claim(run_id=run_id, worker=worker)
    if run is None:
        return []
    job = run.job
    if job.status in Job.FINISHED:
        NodeRun.objects.filter(pk=run.pk, status=NodeRun.Status.RUNNING).update(
            status=NodeRun.Status.CANCELLED, lease_until=None)
        return []
    if run.attempt - run.retries > settings.NODE_MAX_ATTEMPTS:  # claims lost with their worker
        return node_run_fail(run=run, error=NodeError(
            f"Gave up after {run.attempt - 1} attempts (the worker was lost each time).",
            failure_type="INTERNAL"))
    gen = Generation.objects.get(job=job, gid=run.gid)
    rows = _generation_runs(job, run.gid)
    if not run.inline:  # a long node says it started now; an inline one says so when it records
        _mark_started(run=run, job=job, gen=gen)
    outputs = _outputs_of(rows, gen.variables)
    hashes = _content_hashes(rows, job)
    try:
        prepared = _prepare(run, job, gen, outputs)
    except RefError as exc:
        return node_run_fail(run=run, error=NodeError(str(exc), failure_type="VALIDATION_ERROR"))
    except (KeyError, WorkflowSnapshot.DoesNotExist):
        return node_run_fail(run=run, error=NodeError(
            f"Unknown node '{run.node_name}' (no workflow was planned for it)",
            failure_type="VALIDATION_ERROR"))
    except Exception as exc:  # preparing the step must fail the step, not look like a lost worker
        logger.exception("preparing node %s of job %s failed", run.node_name, job.id)
        return node_run_fail(run=run, error=NodeError(
            f"Could not prepare the step: {type(exc).__name__}", failure_type="INTERNAL"))
    probe, cached = _from_cache(_probe(prepared=prepared, run=run, job=job, gen=gen,
                                       hashes=hashes), job=job, gid=run.gid)
    try:
        if cached is not None:
            result = cached
        elif run.inline:
            result = prepared.node.run(prepared.payload, _context(
                run=run, job=job, gen=gen, workflow=prepared.workflow, outputs=outputs,
                heartbeat=None))
        else:
            with _Heartbeat(run) as heartbeat:
                result = prepared.node.run(prepared.payload, _context(
                    run=run, job=job, gen=gen, workflow=prepared.workflow, outputs=outputs,
                    heartbeat=heartbeat))
    except NodeError as exc:
        return node_run_fail(run=run, error=exc)
    except Exception as exc:  # a bug or an unexpected library error: retried, then failed
        logger.exception("node %s of job %s failed unexpectedly", run.node_name, job.id)
        return node_run_fail(run=run, error=NodeError(
            f"Internal error: {type(exc).__name__}", retryable=True, failure_type="INTERNAL"))
    chain = _run_inline_dependents(run=run, job=job, gen=gen, rows=rows, result=result,
                                   hashes=hashes) if run.inline else []
    try:
        return node_run_complete(run=run, result=result, payload=prepared.payload, chain=chain,
                                 probe=probe)
    except Exception as exc:  # a bug in recording: say so instead of looking like a lost worker
        logger.exception("recording node %s of job %s failed", run.node_name, job.id)
        return node_run_fail(run=run, error=NodeError(
            f"Internal error while recording the output: {type(exc).__name__}", retryable=True,
            failure_type="INTERNAL"))


Ran = tuple[NodeRun, NodeOutput, Probe]


def _run_inline_dependents(*, run: NodeRun, job: Job, gen: Generation,
                           rows: list[dict[str, Any]], result: NodeOutput,
                           hashes: Mapping[int, str]) -> list[Ran]:
    """Run, in memory and in plan order, the blocked inline steps of the generation that become
    ready once `run` is done (and those they make ready in turn). The first one that cannot be
    prepared or fails ends the chain: it stays for the ordinary path, which retries or fails it
    with the usual rules."""
    done = {r["step_id"] for r in rows if r["status"] in DONE} | {run.step_id}
    outputs = _outputs_of(rows, gen.variables)
    hashes = dict(hashes)

    def finished(r: NodeRun, out: NodeOutput) -> None:
        keys = _file_keys(r, job, out)
        outputs[r.step_id] = _step_output(out, keys)
        hashes[r.step_id] = runcache.output_content_hash(
            output=outputs[r.step_id], files=runcache.files_meta(out, keys), job_id=str(job.id))

    finished(run, result)
    chain: list[Ran] = []
    pending = [r for r in rows if r["status"] == NodeRun.Status.BLOCKED and r["inline"]]
    progressed = True
    while progressed:
        progressed = False
        for r in list(pending):
            if not all(d in done or d == VARIABLES_STEP_ID for d in r["depends_on"] or ()):
                continue
            dependent = NodeRun(id=r["id"], job=job, gid=run.gid, step_id=r["step_id"],
                                node_name=r["node_name"], alias=r["alias"], queue=r["queue"],
                                inline=True, depends_on=r["depends_on"],
                                workflow_digest=r["workflow_digest"],
                                status=NodeRun.Status.BLOCKED, attempt=1)
            try:
                prepared = _prepare(dependent, job, gen, outputs)
                probe, out = _from_cache(_probe(prepared=prepared, run=dependent, job=job,
                                                gen=gen, hashes=hashes), job=job, gid=run.gid)
                if out is None:
                    out = prepared.node.run(prepared.payload, _context(
                        run=dependent, job=job, gen=gen, workflow=prepared.workflow,
                        outputs=outputs, heartbeat=None))
            except Exception:  # noqa: BLE001 - the ordinary path reports it
                return chain
            chain.append((dependent, out, probe))
            done.add(r["step_id"])
            finished(dependent, out)
            pending.remove(r)
            progressed = True
    return chain


def run_key_for(*, job: Job, run: NodeRun) -> str:
    """What names this node run upstream (ComfyUI's prompt id, fetch_api's Idempotency-Key).

    The same across redeliveries of one attempt, so a worker that takes over re-attaches to the
    work already submitted; new for each user retry of the job (`retry_count`), so a retry
    submits afresh instead of re-attaching to the failed result.
    """
    key = f"{job.id}:{run.gid}:{run.step_id}"
    return f"{key}:retry{job.retry_count}" if job.retry_count else key


def _aliases(job: Job) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in (job.input or {}).get("steps") or []:
        if s.get("id") == VARIABLES_STEP_ID:
            continue
        out.setdefault(str(s.get("nodeName")), s["id"])
        if s.get("alias"):
            out[str(s["alias"])] = s["id"]
    return out


def _own_output_reader(job: Job) -> Callable[[str], bytes]:
    prefix = f"generations/{job.user_id}/{job.id}/"

    def read(key: str) -> bytes:
        if not key.startswith(prefix) or ".." in key:
            raise PermissionError("not an output of this job")
        return storage.read(key)

    return read


def _job_started(job: Job) -> None:
    """A pending job becomes processing (the caller holds its row lock)."""
    if job.status == Job.Status.PENDING:
        job.status = Job.Status.PROCESSING
        job.started_at = timezone.now()
        job.save(update_fields=["status", "started_at", "updated_at"])
        jobs.job_changed(job=job)


def _history_started(*, job: Job, run: NodeRun) -> None:
    jobs.history_add(job=job, status="processing", message="Node started",
                     data={"gid": run.gid, "node": run.node_name, "nodeId": run.step_id},
                     retry_attempt=run.attempt - 1,
                     # one row per node (per job retry), however often it is redelivered
                     dedupe_key=f"start:{run.gid}:{run.step_id}:{job.retry_count}")


def _mark_started(*, run: NodeRun, job: Job, gen: Generation) -> None:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        _job_started(locked)
        Generation.objects.filter(pk=gen.pk, status=Generation.Status.PENDING).update(
            status=Generation.Status.PROCESSING, started_at=timezone.now())
        _history_started(job=locked, run=run)


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
            _job_started(locked)
        _record_files(job=locked, gen=gen, recorded=recorded)
        for r, _keys, output in recorded:
            if r.inline:
                _history_started(job=locked, run=r)
            source = sources.get(r.step_id)
            jobs.history_add(job=locked, status="processing",
                             message=f"Node {r.node_name} completed"
                             + (f" from cache (job {source['jobId']})" if source else ""),
                             data={"gid": r.gid, "node": r.node_name, "nodeId": r.step_id,
                                   "output": output,
                                   **({"cached": True, "cachedFrom": source} if source else {})},
                             retry_attempt=r.attempt - 1,
                             dedupe_key=f"done:{r.gid}:{r.step_id}:{locked.retry_count}")
        unfinished: list[int] = []
        rows = _generation_runs(locked, run.gid)
        ready = _queue_ready(locked, run.gid, unfinished=unfinished, rows=rows)
        if not unfinished:
            _generation_completed(job=locked, gen=gen, rows=rows)
        elif gen.status == Generation.Status.PENDING:
            Generation.objects.filter(pk=gen.pk).update(status=Generation.Status.PROCESSING,
                                                        started_at=run.started_at or now)
        _update_progress(locked)
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


def _generation_completed(*, job: Job, gen: Generation,
                          rows: list[dict[str, Any]] | None = None) -> None:
    if gen.status in Generation.FINISHED:
        return
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
    job.save(update_fields=["data", "updated_at"])
    accounts.credits_charge_generation(job_id=job.id, gid=gen.gid, amount=amount,
                                       comment=f"{job.name} (generation {gen.gid})")
    jobs.history_add(job=job, status="completed", message="Generation completed successfully",
                     data={"gid": gen.gid, "outputs": output},
                     dedupe_key=f"gen-done:{gen.gid}:{job.retry_count}")
    webhooks.generation_completed(job=job, output=output)
    _after_generation_finished(job)


def _after_generation_finished(job: Job) -> None:
    transaction.on_commit(lambda: admit_waiting(user_id=job.user_id))
    statuses = list(Generation.objects.filter(job=job).values_list("status", flat=True))
    if any(s not in Generation.FINISHED for s in statuses):
        return
    now = timezone.now()
    if Generation.Status.FAILED in statuses:
        failed = Generation.objects.filter(job=job, status=Generation.Status.FAILED).order_by(
            "gid").first()
        job.status = Job.Status.FAILED
        job.error_message = failed.error if failed else "Generation failed"
    elif Generation.Status.CANCELLED in statuses:
        job.status = Job.Status.CANCELLED
    else:
        job.status = Job.Status.COMPLETED
        job.error_message = None
    job.completed_at = now
    job.save(update_fields=["status", "error_message", "completed_at", "updated_at"])
    accounts.credits_release_job(job_id=job.id)
    webhooks.job_finished(job=job)
    if job.job_type == "replay" and job.status == Job.Status.COMPLETED:
        from generation_app.services.replay import replay_verdict_record

        # files are read and compared after the commit, outside any transaction
        job_id = job.id
        transaction.on_commit(lambda: replay_verdict_record(job_id=job_id))


def _update_progress(job: Job) -> None:
    # one row back whatever the job's size
    agg = NodeRun.objects.filter(job=job).aggregate(
        n=Count("id"), done=Count("id", filter=Q(status__in=DONE)),
        partial=Sum("progress", filter=~Q(status__in=DONE)))
    if not agg["n"]:
        return
    progress = int(100 * (agg["done"] + (agg["partial"] or 0.0)) / agg["n"])
    if job.status == Job.Status.COMPLETED:
        progress = 100
    job.progress = progress
    job.save(update_fields=["progress", "updated_at"])
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
        _update_progress(job)


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
        generation_fail(job=locked, gen=gen, component=run.alias or run.node_name, error=error)
        _update_progress(locked)
    return []


def generation_fail(*, job: Job, gen: Generation, component: str, error: NodeError) -> None:
    """Fail one generation: its other work stops, its hold share is released."""
    if gen.status in Generation.FINISHED:
        return
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
    job.save(update_fields=["data", "updated_at"])
    jobs.history_add(job=job, status="failed", message=f"Generation failed: {message}",
                     data={"gid": gen.gid, "error": message, "failure_type": error.failure_type,
                           "retryable": error.retryable},
                     dedupe_key=f"gen-failed:{gen.gid}:{job.retry_count}")
    _after_generation_finished(job)


def announce_now(run_id: int, queue: str, priority: int) -> None:
    """Announce one run when the transaction commits (at once outside one: the reaper)."""
    transaction.on_commit(lambda: announce_run(run_id, queue, priority))
