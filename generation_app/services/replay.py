"""Replay a generation and say whether it came out the same.

A replay is a new job (`job_type` `replay`, its own storage keys) that runs one completed
generation again from its hash, seed and variable picks, on the generation's frozen plan (the
same workflow snapshots), never from the cache, and is charged like a generation. When it
completes, each step is compared with the original: `identical` (same data, same bytes),
`equivalent` (images whose pixels differ by at most EQUIVALENT_MAX_DIFF per channel, with the
measured maximum and mean difference) or `drifted` (anything else, naming what differs in the
environment fingerprint when anything does). The verdict is the worst step's, stored in the
replay job's `data.verdict`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emprops import storage
from emprops.accounts import services as accounts
from emprops.errors import Conflict, NotFound
from generation_app.models import Generation, NodeRun
from generation_app.services.requests import PlannedGeneration, PlannedRun, work_create
from jobs_app import selectors as job_selectors
from jobs_app import services as jobs
from jobs_app.models import Job

logger = logging.getLogger(__name__)

JOB_TYPE = "replay"
# the largest per-channel difference (0-255) between two images still called equivalent
EQUIVALENT_MAX_DIFF = 2
VERDICTS = ("identical", "equivalent", "drifted")


def _completed_generation(*, user: Any, job_id: UUID | str, gid: int) -> tuple[Job, Generation]:
    source = job_selectors.job_get(user=user, job_id=job_id)  # another user's job: 404
    gen = Generation.objects.filter(job=source, gid=gid).first()
    if gen is None:
        raise NotFound("Generation not found.", details={"gid": [f"The job has no generation "
                                                                  f"{gid}."]})
    return source, gen


def generation_replay(*, user: Any, job_id: UUID | str, gid: int) -> Job:
    """A replay job of one of the user's completed generations, its credits held (402 when
    short); 404 for another user's job or a missing generation, 409 unless it completed."""
    with transaction.atomic():
        source, gen = _completed_generation(user=user, job_id=job_id, gid=gid)
        if gen.status != Generation.Status.COMPLETED:
            raise Conflict("Only a completed generation can be replayed.",
                           details={"status": gen.status})
        runs = [PlannedRun(step_id=r.step_id, node_name=r.node_name, alias=r.alias,
                           queue=r.queue, inline=r.inline, depends_on=list(r.depends_on or []),
                           workflow_digest=r.workflow_digest, cost=r.cost,
                           skipped=r.status == NodeRun.Status.SKIPPED)
                for r in NodeRun.objects.filter(job=source, gid=gid).order_by("id")]
        steps = [r for r in runs if not r.skipped]
        if all(r.cost is not None for r in steps):
            per_generation = sum((r.cost or Decimal(0) for r in steps), Decimal(0))
        else:  # planned before steps carried their cost: the original per-generation quote
            per_generation = Decimal(str(((source.data or {}).get("quote") or {})
                                         .get("per_generation") or 0))
        quote = {"per_generation": float(per_generation), "total_cost": float(per_generation),
                 "generations": 1,
                 "breakdown": [{"nodeName": r.node_name, "stepId": r.step_id,
                                "cost": float(r.cost or 0)} for r in steps]}
        replay_of = {"jobId": str(source.id), "gid": gid, "hash": gen.hash}
        job = Job.objects.create(
            user=user, name=f"Replay: {source.name} (generation {gid})"[:500], job_type=JOB_TYPE,
            priority=source.priority, input=source.input, max_retries=settings.NODE_MAX_ATTEMPTS,
            data={"collectionId": None, "variables": (source.data or {}).get("variables") or {},
                  "outputs": [], "quote": quote, "noCache": True, "replay": replay_of,
                  "verdict": None})
        accounts.credits_hold(user=user, job_id=job.id, per_generation=per_generation,
                              generations=1, quote=quote)
        jobs.history_add(job=job, status="pending",
                         message=f"Replay of generation {gid} of job {source.id}",
                         data={"replay": replay_of})
        work_create(job=job, generations=[PlannedGeneration(
            hash=gen.hash, seed=gen.seed, variables=dict(gen.variables or {}))], runs=runs)
        jobs.job_changed(job=job)
    return job


def replay_latest(*, user: Any, job_id: UUID | str, gid: int) -> Job:
    """The newest replay of one of the user's generations (404 when there is none, or for
    another user's job)."""
    source, _gen = _completed_generation(user=user, job_id=job_id, gid=gid)
    job = (Job.objects.filter(user=user, job_type=JOB_TYPE, data__replay__jobId=str(source.id),
                              data__replay__gid=gid).order_by("-created_at").first())
    if job is None:
        raise NotFound("This generation has not been replayed.",
                       details={"gid": ["No replay yet: POST to this path starts one."]})
    return job


# ---- the verdict ----------------------------------------------------------------------------------

def _neutral(value: Any, job_id: str) -> str:
    return json.dumps(value, sort_keys=True, default=str).replace(job_id, "~")


def _pixels(a: bytes, b: bytes) -> dict[str, float] | None:
    """The largest and mean per-channel difference of two images (None: not comparable)."""
    from PIL import Image, ImageChops, ImageStat

    try:
        first = Image.open(io.BytesIO(a)).convert("RGBA")
        second = Image.open(io.BytesIO(b)).convert("RGBA")
    except Exception:  # noqa: BLE001 - not an image Pillow reads
        return None
    if first.size != second.size:
        return None
    diff = ImageChops.difference(first, second)
    extrema: Any = diff.getextrema()  # one (low, high) per band
    biggest = max(high for _low, high in extrema)
    mean = sum(ImageStat.Stat(diff).mean) / 4
    return {"maxDiff": float(biggest), "meanDiff": round(mean, 4)}


def _read(meta: Mapping[str, Any]) -> bytes | None:
    try:
        return storage.read(meta["key"])
    except Exception:  # noqa: BLE001 - deleted by retention: nothing to measure
        return None


def _compare(source: NodeRun | None, replay: NodeRun, *, source_job: str,
             replay_job: str) -> dict[str, Any]:
    item: dict[str, Any] = {"stepId": replay.step_id, "nodeName": replay.node_name}
    if source is None or source.output_files is None or replay.output_files is None:
        return {**item, "verdict": "drifted",
                "differs": ["the original step recorded no output hashes"]}
    old_out, new_out = source.output or {}, replay.output or {}
    same_data = (_neutral([old_out.get("data"), old_out.get("mimeType")], source_job)
                 == _neutral([new_out.get("data"), new_out.get("mimeType")], replay_job))
    old_files, new_files = source.output_files, replay.output_files
    differs = sorted(n for n in {*old_files, *new_files}
                     if (old_files.get(n) or {}).get("sha256")
                     != (new_files.get(n) or {}).get("sha256"))
    if same_data and not differs:
        return {**item, "verdict": "identical"}
    verdict = "drifted"
    pixels: dict[str, Any] = {}
    if same_data and set(old_files) == set(new_files):
        for name in differs:
            old_meta, new_meta = old_files[name], new_files[name]
            measured = None
            if str(new_meta.get("mimeType", "")).startswith("image/") \
                    and "svg" not in str(new_meta.get("mimeType")):
                old_bytes, new_bytes = _read(old_meta), _read(new_meta)
                if old_bytes is not None and new_bytes is not None:
                    measured = _pixels(old_bytes, new_bytes)
            pixels[name] = measured
        if pixels and all(m is not None and m["maxDiff"] <= EQUIVALENT_MAX_DIFF
                          for m in pixels.values()):
            verdict = "equivalent"
    item.update(verdict=verdict, differs=(["data"] if not same_data else []) + differs)
    if pixels:
        item["pixels"] = pixels
    if verdict == "drifted":
        old_env, new_env = source.env or {}, replay.env or {}
        env = {k: {"original": old_env.get(k), "replay": new_env.get(k)}
               for k in sorted({*old_env, *new_env}) if old_env.get(k) != new_env.get(k)}
        item["env"] = env
        if not env:
            item["note"] = ("The environment fingerprint is the same: the step does not "
                            "reproduce its own output (it reads the clock or another source "
                            "of randomness).")
    return item


def replay_verdict_record(*, job_id: UUID | str) -> dict[str, Any] | None:
    """Compare a completed replay with its original, step by step, and store the verdict in
    `data.verdict` (with a history row and its event); None for anything else. Reads files:
    call it outside a transaction (the runner queues it on commit)."""
    job = Job.objects.filter(pk=job_id, job_type=JOB_TYPE, status=Job.Status.COMPLETED).first()
    ref = (job.data or {}).get("replay") if job is not None else None
    if job is None or not isinstance(ref, Mapping):
        return None
    originals = {r.step_id: r for r in NodeRun.objects.filter(job_id=ref["jobId"],
                                                              gid=ref["gid"])}
    steps = [_compare(originals.get(r.step_id), r, source_job=str(ref["jobId"]),
                      replay_job=str(job.id))
             for r in NodeRun.objects.filter(job=job, gid=0).order_by("id")
             if r.status != NodeRun.Status.SKIPPED]
    overall = max((s["verdict"] for s in steps), key=VERDICTS.index, default="identical")
    verdict = {"verdict": overall, "source": {"jobId": ref["jobId"], "gid": ref["gid"]},
               "tolerance": {"maxDiff": EQUIVALENT_MAX_DIFF, "unit": "per channel, of 255"},
               "steps": steps, "comparedAt": timezone.now().isoformat()}
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        data = dict(locked.data or {})
        data["verdict"] = verdict
        locked.data = data
        locked.save(update_fields=["data", "updated_at"])
        jobs.history_add(job=locked, status="completed", message=f"Replay verdict: {overall}",
                         data={"verdict": verdict},
                         dedupe_key=f"verdict:{locked.retry_count}")
        jobs.job_changed(job=locked)
    logger.info("replay %s of job %s generation %s: %s", job.id, ref["jobId"], ref["gid"],
                overall)
    return verdict
