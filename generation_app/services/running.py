"""Running a claimed node run: resolve its payload, reuse a cached output or run the node, and
hand the result to `recording`.

While a long node runs, a heartbeat renews its lease and hears its job's cancel. An inline run
(a cheap built-in) also runs, in memory, the inline steps of its generation that it makes ready,
so `recording` stores them all in one transaction. A failure, whether the node's or a bug's, is
handed to `recording.node_run_fail`, which retries or fails it; this module writes no results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.utils import timezone

from emprops import storage
from generation_app.engine import richtext
from generation_app.engine.refs import RefError, resolve_payload
from generation_app.models import Generation, NodeRun, WorkflowSnapshot
from generation_app.nodes.base import NodeError, NodeOutput, RunContext
from generation_app.nodes.registry import VARIABLES_STEP_ID, node_class
from generation_app.services import runcache
from generation_app.services.admission import DONE, _generation_runs, node_run_claim
from generation_app.services.recording import (
    Ran,
    _file_keys,
    _mark_started,
    _step_output,
    node_run_complete,
    node_run_fail,
    node_run_progress,
)
from generation_app.services.runcache import NOT_CACHED, Probe
from generation_app.services.steps import workflow_snapshot_load
from jobs_app import services as jobs
from jobs_app.models import Job
from workflows_app.models import UserApiSecret
from workflows_app.node_types import truthy

logger = logging.getLogger(__name__)

def _step(job: Job, step_id: int) -> dict[str, Any]:
    for s in (job.input or {}).get("steps") or []:
        if s.get("id") == step_id:
            return dict(s)
    raise KeyError(step_id)


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
