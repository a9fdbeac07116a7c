"""Accepting a generation request: validate, quote, hold credits, create the job and its work."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collections_app import selectors as collection_selectors
from collections_app.generation_input import new_hash
from collections_app.services import generation_input_validate
from emprops.accounts import services as accounts
from emprops.errors import ValidationFailed
from generation_app.engine.prng import generation_seed
from generation_app.engine.variables import pick_variables
from generation_app.nodes.registry import queue_for
from generation_app.services import execution
from generation_app.services.quote import quote_steps
from generation_app.services.steps import plan_steps, workflow_snapshot
from jobs_app import services as jobs
from jobs_app.models import Generation, Job, NodeRun

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


def _hashes(data: Mapping[str, Any], *, count: int | None, hashes: list[Any] | None) -> list[str]:
    if hashes is not None:
        bad = [i for i, h in enumerate(hashes)
               if not isinstance(h, str) or not h or len(h) > MAX_HASH_LENGTH]
        if bad:
            raise ValidationFailed("Every hash must be a non-empty string of at most 200 characters.",
                                   details={f"hashes[{i}]": ["Must be a non-empty string."]
                                            for i in bad})
        if not hashes:
            raise ValidationFailed("hashes must not be empty.", details={"hashes": ["Empty."]})
        return list(hashes)
    if count is not None:
        return [new_hash() for _ in range(count)]
    gens = data.get("generations") or {}
    stored = [h for h in gens.get("hashes") or [] if isinstance(h, str) and h]
    if stored:
        return stored
    raw = gens.get("generations")
    n = raw if isinstance(raw, int) else 1
    return [new_hash() for _ in range(max(1, n))]


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


def generation_request(*, user: Any, collection_id: UUID | str, variables: Mapping[str, Any] | None,
                       workflow_priority: int | None = None, count: int | None = None,
                       hashes: list[Any] | None = None) -> Job:
    """Start generations of one of the user's collections (one job holding all of them)."""
    with transaction.atomic():
        collection = collection_selectors.collection_get(user=user, collection_id=collection_id)
        return job_create_from_input(
            user=user, data=collection.data, collection_id=str(collection.id),
            name=f"Collection Generation: {collection.title}", variables=variables,
            workflow_priority=workflow_priority, count=count, hashes=hashes)


def job_create_from_input(*, user: Any, data: Any, collection_id: str | None, name: str,
                          variables: Mapping[str, Any] | None = None,
                          workflow_priority: int | None = None, count: int | None = None,
                          hashes: list[Any] | None = None,
                          job_type: str = "collection_generation",
                          not_before: datetime | None = None) -> Job:
    """Validate, quote and hold credits, then create one job with a generation per hash and a node
    run per step; the first steps are announced to their queues when the transaction commits.
    Raises before creating anything (400/402/404/422)."""
    with transaction.atomic():
        if collection_id is not None:
            # a stored collection whose workflow was deleted or misconfigured since it was saved
            # can no longer run: 422, before the generic validation would call it a bad input
            plan_steps(data if isinstance(data, dict) else {})
        data = generation_input_validate(data)
        plan = plan_steps(data)
        overrides = _apply_variable_overrides(data.get("variables") or [], variables or {})
        limit = max_generations(user=user, workflows=plan.workflows)
        if count is not None and count > limit:
            raise ValidationFailed(f"count must be at most {limit}.",
                                   details={"count": [f"At most {limit} generations per request."]})
        hash_list = _hashes(data, count=count, hashes=hashes)
        if len(hash_list) > limit:
            raise ValidationFailed(f"At most {limit} generations per request.",
                                   details={"hashes": [f"At most {limit} generations."]})
        if not plan.steps:
            raise ValidationFailed("The collection has no steps to run.",
                                   details={"data.steps": ["No runnable steps."]})
        quote = quote_steps(plan.steps, generations=len(hash_list))
        per_generation = quote.pop("_per_generation")
        job = Job.objects.create(
            user=user, name=name[:500], job_type=job_type,
            priority=priority_from_workflow_priority(workflow_priority),
            data={"collectionId": collection_id, "variables": dict(variables or {}),
                  "outputs": [], "quote": quote},
            input=data, max_retries=settings.NODE_MAX_ATTEMPTS, not_before=not_before,
        )
        accounts.credits_hold(user=user, job_id=job.id, per_generation=per_generation,
                              generations=len(hash_list), quote=quote)
        jobs.history_add(job=job, status="pending", message="Job created and pending execution",
                         data={"collectionId": collection_id, "generations": len(hash_list)})
        _create_work(job=job, data=data, plan=plan, hashes=hash_list, overrides=overrides)
        jobs.job_changed(job=job)
    return job


def _create_work(*, job: Job, data: Mapping[str, Any], plan: Any, hashes: list[str],
                 overrides: Mapping[str, str]) -> None:
    generations = []
    for gid, h in enumerate(hashes):
        picked = pick_variables(copy.deepcopy(data.get("variables") or []), h, overrides)
        generations.append(Generation(job=job, gid=gid, hash=h, seed=generation_seed(h),
                                      variables=picked, status=Generation.Status.WAITING,
                                      position=0))
    Generation.objects.bulk_create(generations)
    runs = []
    for gid in range(len(hashes)):
        for step in plan.steps:
            wf = plan.workflows.get(step["nodeName"])
            runs.append(NodeRun(
                job=job, gid=gid, step_id=step["id"], node_name=step["nodeName"],
                alias=step.get("alias") or None,
                queue=queue_for(step["nodeName"], step.get("nodePayload") or {},
                                workflow_snapshot(wf)),
                status=NodeRun.Status.BLOCKED,
            ))
        for step in plan.skipped:
            runs.append(NodeRun(job=job, gid=gid, step_id=step["id"], node_name=step["nodeName"],
                                alias=step.get("alias") or None, status=NodeRun.Status.SKIPPED,
                                progress=1.0, completed_at=timezone.now()))
    NodeRun.objects.bulk_create(runs)
    execution.admit_waiting(user_id=job.user_id)
