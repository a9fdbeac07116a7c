"""Accepting a generation request: validate, quote, hold credits, create the job and its work."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collections_app import selectors as collection_selectors
from collections_app.generation_input import DuplicateHashes, generation_hashes
from collections_app.services import generation_input_validate
from emprops.accounts import services as accounts
from emprops.errors import ValidationFailed
from generation_app.engine.prng import generation_seed
from generation_app.engine.variables import pick_variables
from generation_app.models import Generation, NodeRun
from generation_app.nodes.registry import VARIABLES_STEP_ID
from generation_app.services import admission
from generation_app.services.quote import quote_steps
from generation_app.services.steps import (
    StepPlan,
    node_run_plan,
    plan_steps,
    workflow_snapshots_store,
)
from jobs_app import services as jobs
from jobs_app.models import Job

MAX_HASH_LENGTH = 200


def priority_from_workflow_priority(value: int | None) -> int:
    """`workflow_priority` 0-100 onto Celery's Redis priorities 0-9 (9 highest)."""
    if value is None:
        return 5
    return max(0, min(9, round(int(value) * 9 / 100)))


def max_generations(*, user: Any, workflows: Mapping[str, Any]) -> int:
    """The smallest `form.config.maxNumberOfGenerations` among the workflows used (default 10);
    staff may raise it per user."""
    limit = settings.DEFAULT_MAX_GENERATIONS
    for wf in workflows.values():
        config = ((wf.data or {}).get("form") or {}).get("config") or {}
        value = config.get("maxNumberOfGenerations")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            limit = min(limit, value)
    override = getattr(user, "max_generations_override", None)
    return max(limit, override) if override else limit


def hashes_check(hashes: Sequence[Any] | None) -> list[str] | None:
    """Explicit hashes as given (None when none were), or ValidationFailed (400) naming each bad
    one: a list of non-empty strings of at most MAX_HASH_LENGTH characters."""
    if hashes is None:
        return None
    if not hashes:
        raise ValidationFailed("hashes must not be empty.", details={"hashes": ["Empty."]})
    bad = {f"hashes[{i}]": [f"Must be a non-empty string of at most {MAX_HASH_LENGTH} characters."]
           for i, h in enumerate(hashes)
           if not isinstance(h, str) or not h or len(h) > MAX_HASH_LENGTH}
    if bad:
        key, messages = next(iter(bad.items()))
        raise ValidationFailed(f"Invalid input: {key}: {messages[0]}", details=bad)
    return list(hashes)


def _apply_variable_overrides(variables: list[dict[str, Any]],
                              overrides: Mapping[str, Any]) -> dict[str, str]:
    known = {v.get("name") for v in variables}
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValidationFailed(f"Unknown variables: {', '.join(unknown)}.",
                               details={"variables": [f"The collection has no variable '{n}'."
                                                      for n in unknown]})
    bad = [k for k, v in overrides.items() if not isinstance(v, (str, int, float))
           or isinstance(v, bool)]
    if bad:
        raise ValidationFailed("Variable values must be strings.",
                               details={f"variables.{k}": ["Must be a string."] for k in bad})
    return {k: str(v) for k, v in overrides.items()}


@dataclass(frozen=True)
class JobInput:
    """A GenerationInput ready to become a job: validated, planned, its hashes chosen, quoted."""

    data: dict[str, Any]
    plan: StepPlan
    hashes: list[str]
    quote: dict[str, Any]  # the public quote (Quote.public())
    per_generation: Decimal
    variables: dict[str, Any] = field(default_factory=dict)  # overrides as given, kept on the job
    overrides: dict[str, str] = field(default_factory=dict)  # the same, as pick_variables takes them

    def renumbered(self, data: dict[str, Any]) -> JobInput:
        """This input after `collection_create` gave its steps new ids (the old id in each step's
        `fromId`): the plan and the quote follow the new ids, nothing is validated, planned or
        quoted again. Renumbering rewrites only references, so costs and dependencies hold."""
        new_id = {s["fromId"]: s["id"] for s in data.get("steps") or []
                  if isinstance(s, dict) and "fromId" in s}
        by_id = {s["id"]: s for s in data.get("steps") or [] if isinstance(s, dict)}

        def moved(step_id: Any) -> Any:
            return new_id.get(step_id, step_id)

        plan = StepPlan(
            steps=[by_id[moved(s["id"])] for s in self.plan.steps],
            skipped=[by_id[moved(s["id"])] for s in self.plan.skipped],
            deps={moved(k): {moved(d) for d in v} for k, v in self.plan.deps.items()},
            workflows=self.plan.workflows, named=self.plan.named)
        quote = {**self.quote, "breakdown": [{**b, "stepId": moved(b.get("stepId"))}
                                             for b in self.quote.get("breakdown") or []]}
        return replace(self, data=data, plan=plan, quote=quote)


def job_input_quote(*, data: dict[str, Any], plan: StepPlan, hashes: list[str],
                    variables: Mapping[str, Any] | None = None,
                    overrides: Mapping[str, str] | None = None) -> JobInput:
    """Quote a validated and planned GenerationInput for these hashes (runs each step's credits
    script once); writes nothing."""
    quoted = quote_steps(plan.steps, generations=len(hashes), workflows=plan.named)
    quote, per_generation = quoted.public(), quoted.per_generation
    return JobInput(data=data, plan=plan, hashes=hashes, quote=quote,
                    per_generation=per_generation, variables=dict(variables or {}),
                    overrides=dict(overrides or {}))


def job_input_prepare(*, user: Any, data: Any, variables: Mapping[str, Any] | None = None,
                      count: int | None = None, hashes: list[Any] | None = None) -> JobInput:
    """Validate, plan, choose the hashes and quote a GenerationInput for `user`, writing nothing;
    raises 400/404/422 (GraphError, ValidationFailed, Unprocessable)."""
    data = generation_input_validate(data)
    plan = plan_steps(data)
    overrides = _apply_variable_overrides(data.get("variables") or [], variables or {})
    limit = max_generations(user=user, workflows=plan.workflows)
    if count is not None and count > limit:
        raise ValidationFailed(f"count must be at most {limit}.",
                               details={"count": [f"At most {limit} generations per request."]})
    try:
        hash_list = generation_hashes(data, count=count, hashes=hashes_check(hashes))
    except DuplicateHashes as exc:  # the same hash twice would run, and be charged, twice
        raise ValidationFailed(str(exc), details=exc.details) from None
    if len(hash_list) > limit:
        raise ValidationFailed(f"At most {limit} generations per request.",
                               details={"hashes": [f"At most {limit} generations."]})
    if not plan.steps:
        raise ValidationFailed("The collection has no steps to run.",
                               details={"data.steps": ["No runnable steps."]})
    return job_input_quote(data=data, plan=plan, hashes=hash_list, variables=variables,
                           overrides=overrides)


def generation_request(*, user: Any, collection_id: UUID | str, variables: Mapping[str, Any] | None,
                       workflow_priority: int | None = None, count: int | None = None,
                       hashes: list[Any] | None = None, no_cache: bool = False) -> Job:
    """Start generations of one of the user's collections (one job holding all of them);
    `no_cache` runs every step even where an identical earlier run could be reused."""
    with transaction.atomic():
        collection = collection_selectors.collection_get(user=user, collection_id=collection_id)
        data = collection.data
        # a stored collection whose workflow was deleted or misconfigured since it was saved
        # can no longer run: 422, before the generic validation would call it a bad input
        plan_steps(data if isinstance(data, dict) else {})
        job_input = job_input_prepare(user=user, data=data, variables=variables, count=count,
                                      hashes=hashes)
        return job_create_from_input(
            user=user, job_input=job_input, collection_id=str(collection.id),
            name=f"Collection Generation: {collection.title}",
            workflow_priority=workflow_priority, no_cache=no_cache)


def job_create_from_input(*, user: Any, job_input: JobInput, collection_id: str | None, name: str,
                          workflow_priority: int | None = None,
                          job_type: str = "collection_generation",
                          not_before: datetime | None = None,
                          webhook: Mapping[str, Any] | None = None,
                          no_cache: bool = False) -> Job:
    """Hold credits for a prepared input (402 before creating anything), then create one job with
    a generation per hash and a node run per step; the first steps are announced to their queues
    when the transaction commits. `webhook` ({url, events}) is this job's own webhook;
    `no_cache` keeps every step from reusing an earlier identical run's output."""
    data, hashes, quote = job_input.data, job_input.hashes, job_input.quote
    job_data: dict[str, Any] = {"collectionId": collection_id, "variables": job_input.variables,
                                "outputs": [], "quote": quote}
    if no_cache:
        job_data["noCache"] = True
    if webhook is not None:
        # delivery is the webhooks service's: it reads `data.webhook` when the job changes
        job_data["webhook"] = {"url": webhook["url"], "events": list(webhook["events"])}
    with transaction.atomic():
        job = Job.objects.create(
            user=user, name=name[:500], job_type=job_type,
            priority=priority_from_workflow_priority(workflow_priority),
            data=job_data, input=data, max_retries=settings.NODE_MAX_ATTEMPTS,
            not_before=not_before,
        )
        accounts.credits_hold(user=user, job_id=job.id, per_generation=job_input.per_generation,
                              generations=len(hashes), quote=quote)
        jobs.history_add(job=job, status="pending", message="Job created and pending execution",
                         data={"collectionId": collection_id, "generations": len(hashes)})
        _create_work(job=job, data=data, plan=job_input.plan, hashes=hashes,
                     overrides=job_input.overrides, quote=quote)
        jobs.job_changed(job=job)
    return job


@dataclass(frozen=True)
class PlannedRun:
    """One step's frozen plan, as every generation of a job runs it."""

    step_id: int
    node_name: str
    alias: str | None
    queue: str = "engine"
    inline: bool = False
    depends_on: list[int] = field(default_factory=list)
    workflow_digest: str | None = None
    cost: Decimal | None = None  # the step's quoted cost (what it is charged when it runs)
    skipped: bool = False


@dataclass(frozen=True)
class PlannedGeneration:
    hash: str
    seed: int
    variables: dict[str, Any]


def _create_work(*, job: Job, data: Mapping[str, Any], plan: StepPlan, hashes: list[str],
                 overrides: Mapping[str, str], quote: Mapping[str, Any]) -> None:
    costs = {b.get("stepId"): Decimal(str(b.get("cost") or 0))
             for b in quote.get("breakdown") or []}
    digests = workflow_snapshots_store(plan.workflows)
    runs = [PlannedRun(step_id=step["id"], node_name=step["nodeName"],
                       alias=step.get("alias") or None, queue=queue, inline=inline,
                       depends_on=depends_on, workflow_digest=digests.get(step["nodeName"]),
                       cost=costs.get(step["id"], Decimal(0)))
            for step in plan.steps
            for queue, inline, depends_on in [node_run_plan(step, plan)]]
    runs += [PlannedRun(step_id=step["id"], node_name=step["nodeName"],
                        alias=step.get("alias") or None, skipped=True) for step in plan.skipped]
    generations = [PlannedGeneration(hash=h, seed=generation_seed(h), variables=pick_variables(
        copy.deepcopy(data.get("variables") or []), h, overrides)) for h in hashes]
    work_create(job=job, generations=generations, runs=runs)


def work_create(*, job: Job, generations: Sequence[PlannedGeneration],
                runs: Sequence[PlannedRun]) -> None:
    """A generation per entry and a node run per planned step of each, in two inserts.

    Generations the user's running cap admits now start pending with their first runs queued,
    in these same inserts; the rest wait for `admit_waiting`."""
    admitted = admission.generations_admit_new(job=job, count=len(generations))
    starting = admitted or 0
    now = timezone.now()
    Generation.objects.bulk_create([Generation(
        job=job, gid=gid, hash=g.hash, seed=g.seed, variables=g.variables, position=0,
        status=Generation.Status.PENDING if gid < starting else Generation.Status.WAITING)
        for gid, g in enumerate(generations)])
    rows, first = [], []
    done_at_start = {VARIABLES_STEP_ID, *(r.step_id for r in runs if r.skipped)}
    for gid in range(len(generations)):
        for p in runs:
            if p.skipped:
                rows.append(NodeRun(job=job, gid=gid, step_id=p.step_id, node_name=p.node_name,
                                    alias=p.alias, status=NodeRun.Status.SKIPPED, progress=1.0,
                                    completed_at=now))
                continue
            ready = gid < starting and all(d in done_at_start for d in p.depends_on)
            run = NodeRun(
                job=job, gid=gid, step_id=p.step_id, node_name=p.node_name, alias=p.alias,
                queue=p.queue, inline=p.inline, depends_on=list(p.depends_on),
                workflow_digest=p.workflow_digest, cost=p.cost,
                status=NodeRun.Status.QUEUED if ready else NodeRun.Status.BLOCKED,
                queued_at=now if ready else None, announced_at=now if ready else None)
            rows.append(run)
            if ready:
                first.append(run)
    NodeRun.objects.bulk_create(rows)
    if admitted is None:  # older generations of this user wait: they go first
        admission.admit_waiting(user_id=job.user_id, known_waiting=True)
    else:
        admission.runs_announce(first, job.priority)
