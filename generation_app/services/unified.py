"""The unified Collection Generation API (SPEC section 9): one call makes a collection from a
workflow and starts its generations; a batch accepts many such requests all together or not at all.

A request is first *prepared* (workflow resolved, inputs checked against its form, GenerationInput
built and validated, generations counted, cost quoted) without writing anything, then *started*
(collection, components, job, generations, node runs and credit hold) inside one transaction, so a
refused request leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from collections_app import selectors as collection_selectors
from collections_app.services import collection_create
from emprops.accounts import services as accounts
from emprops.errors import DomainError, NotFound, ValidationFailed
from generation_app.services import webhooks
from generation_app.services.requests import (
    JobInput,
    hashes_check,
    job_create_from_input,
    job_input_prepare,
)
from generation_app.services.workflow_quotes import workflow_inputs_validate
from jobs_app.models import Job
from workflows_app import selectors as workflow_selectors
from workflows_app.models import Workflow
from workflows_app.node_types import BUILTIN

MAX_BATCH_ITEMS = 100
WEBHOOK_EVENTS = webhooks.EVENTS
_STEP_ID = 1


@dataclass(frozen=True)
class GenerateRequest:
    """One unified request, as the API parsed it (shapes checked, meaning not yet)."""

    workflow_id: UUID | None = None
    workflow_name: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    variables: Sequence[Any] = ()
    count: int | None = None
    hashes: Sequence[Any] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)  # collection fields (title, ...)
    project_id: UUID | None = None
    priority: int | None = None
    webhook: Mapping[str, Any] | None = None
    run_at: datetime | None = None
    no_cache: bool = False  # run every step, even where an identical earlier run is reusable


@dataclass(frozen=True)
class Prepared:
    request: GenerateRequest
    title: str
    job_input: JobInput  # validated, planned and quoted; step ids not yet re-numbered

    @property
    def generations(self) -> int:
        return len(self.job_input.hashes)

    @property
    def quote(self) -> dict[str, Any]:
        return self.job_input.quote

    @property
    def per_generation(self) -> Decimal:
        return self.job_input.per_generation


@dataclass(frozen=True)
class Started:
    collection: Any
    job: Job
    quote: dict[str, Any]


# ---- one request --------------------------------------------------------------------------------

def collection_generate(*, user: Any, request: GenerateRequest) -> Started:
    """Create a collection from a workflow and start its generations, in one transaction;
    400/402/404/422 leave no project, collection, component, job or hold behind."""
    with transaction.atomic():
        prepared = generate_prepare(user=user, request=request)
        return _start(user=user, prepared=prepared)


def generate_prepare(*, user: Any, request: GenerateRequest) -> Prepared:
    """Resolve, check and quote one request without writing anything (raises DomainError)."""
    _check_run_at(request.run_at)
    _check_webhook(request.webhook)
    if request.project_id is not None:
        try:
            collection_selectors.project_get(user=user, project_id=request.project_id)
        except NotFound:
            raise NotFound("Project not found.",
                           details={"project_id": ["No such project."]}) from None
    node_name, workflow = _resolve_workflow(user=user, request=request)
    payload = _payload(node_name, workflow, request.inputs)
    hashes = hashes_check(request.hashes)
    data = {
        "version": "v2",
        "steps": [{"id": _STEP_ID, "nodeName": node_name, "nodePayload": payload}],
        "variables": list(request.variables),
        "generations": {"hashes": hashes or [], "generations": request.count or 1,
                        "use_custom_hashes": bool(hashes)},
    }
    # the one preparation every request takes (collection generate, batch, templates, schedules)
    try:
        job_input = job_input_prepare(user=user, data=data, hashes=hashes,
                                      count=None if hashes else (request.count or 1))
    except ValidationFailed as exc:
        fields = _as_request_fields(exc.details)
        if fields == exc.details:
            raise
        raise ValidationFailed(_field_message(exc), details=fields) from None
    title = request.fields.get("title") or (workflow.label or workflow.name if workflow
                                            else node_name)
    return Prepared(request=request, title=str(title)[:300], job_input=job_input)


def _start(*, user: Any, prepared: Prepared) -> Started:
    request = prepared.request
    fields = {**request.fields, "title": prepared.title}
    collection = collection_create(user=user, project_id=request.project_id,
                                   data=prepared.job_input.data, fields=fields, validated=True)
    job = job_create_from_input(
        user=user, job_input=prepared.job_input.renumbered(collection.data),
        collection_id=str(collection.id), name=f"Collection Generation: {collection.title}",
        workflow_priority=request.priority, not_before=request.run_at, webhook=request.webhook,
        no_cache=request.no_cache)
    return Started(collection=collection, job=job, quote=job.data["quote"])


# ---- a batch ------------------------------------------------------------------------------------

def collection_generate_batch(*, user: Any,
                              items: Sequence[GenerateRequest | DomainError]) -> list[Started]:
    """Prepare and quote every item, check the summed cost once, then start them all, in one
    transaction: either every item is accepted or none is (400 with each item's result or error;
    402 with the total quote when only credits are short). An item may arrive as the DomainError
    its parsing raised, so that every item's problem is reported at once."""
    if not items:
        raise ValidationFailed("items must not be empty.", details={"items": ["Empty."]})
    if len(items) > MAX_BATCH_ITEMS:
        raise ValidationFailed(f"At most {MAX_BATCH_ITEMS} items per batch.",
                               details={"items": [f"At most {MAX_BATCH_ITEMS} items."]})
    with transaction.atomic():
        prepared: list[Prepared | DomainError] = []
        for item in items:
            if isinstance(item, DomainError):
                prepared.append(item)
                continue
            try:
                prepared.append(generate_prepare(user=user, request=item))
            except DomainError as exc:
                prepared.append(exc)
        failed = [p for p in prepared if isinstance(p, DomainError)]
        if failed:
            raise ValidationFailed(
                f"{len(failed)} of {len(items)} items were refused; nothing was created.",
                details={"items": [_item_result(i, p) for i, p in enumerate(prepared)]})
        ready = [p for p in prepared if isinstance(p, Prepared)]
        total = sum(((p.per_generation * p.generations) for p in ready), Decimal(0))
        quote = {"total_cost": float(total),
                 "items": [{"index": i, "per_generation": p.quote["per_generation"],
                            "generations": p.generations, "total_cost": p.quote["total_cost"]}
                           for i, p in enumerate(ready)]}
        accounts.credits_require(user=user, amount=total, quote=quote)
        started = []
        for index, p in enumerate(ready):
            try:
                started.append(_start(user=user, prepared=p))
            except DomainError as exc:  # only a concurrent change can get here (a deleted project)
                raise type(exc)(f"Item {index}: {exc.message}",
                                details={"items": [{"index": index, **_error(exc)}]}) from None
        return started


def _item_result(index: int, item: Prepared | DomainError) -> dict[str, Any]:
    if isinstance(item, DomainError):
        return {"index": index, **_error(item)}
    return {"index": index, "ok": True, "cost": {"per_generation": item.quote["per_generation"],
                                                 "total": item.quote["total_cost"]}}


def _error(exc: DomainError) -> dict[str, Any]:
    return {"status": exc.status_code, "error": exc.message, "details": exc.details}


# ---- checks -------------------------------------------------------------------------------------

def _resolve_workflow(*, user: Any, request: GenerateRequest) -> tuple[str, Workflow | None]:
    """The step's nodeName and its workflow (None for a built-in). Hidden workflows are missing
    to non-staff; the 404 names the field that was given."""
    if request.workflow_name is not None and request.workflow_name in BUILTIN:
        return request.workflow_name, None
    at = "workflow_id" if request.workflow_id is not None else "workflow_name"
    try:
        if request.workflow_id is not None:
            wf = workflow_selectors.workflow_get(user=user, workflow_id=request.workflow_id)
        else:
            wf = workflow_selectors.workflow_get_by_name(user=user,
                                                         name=str(request.workflow_name))
    except NotFound:
        raise workflow_selectors.workflow_not_found(field=at) from None
    if wf.type not in Workflow.EXECUTABLE_TYPES:
        raise ValidationFailed(f"Workflow '{wf.name}' is of type '{wf.type}', which cannot run.",
                               details={at: [f"A {wf.type} workflow cannot run."]})
    return wf.name, wf


def _payload(node_name: str, workflow: Workflow | None,
             inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Form defaults overlaid with the inputs, coerced by the form; 400 naming each bad field."""
    if workflow is None:
        required, known = BUILTIN[node_name].required_input, BUILTIN[node_name].inputs
        errors = {f"inputs.{k}": [f"The {node_name} node has no input '{k}'."]
                  for k in inputs if k not in known}
        payload = dict(inputs)
        if node_name == "prompt" and isinstance(payload.get("prompt"), list):
            payload["prompt"] = json.dumps(payload["prompt"])  # a rich-text document
        if required is not None and (not isinstance(payload.get(required), str)
                                     or not payload[required].strip()):
            errors[f"inputs.{required}"] = ["This field is required (a non-empty string)."]
        if errors:
            raise ValidationFailed(_first(errors), details=errors)
        return payload
    return workflow_inputs_validate(workflow=workflow, inputs=inputs)


def _check_webhook(webhook: Mapping[str, Any] | None) -> None:
    # the serializer checked the shape (repeated here for callers other than the API); the
    # SSRF guard's refusal is checked here for everyone
    if webhook is None:
        return
    url = webhook.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise ValidationFailed("webhook.url must be an http(s) URL.",
                               details={"webhook.url": ["Must be an http(s) URL."]})
    webhooks.webhook_url_check(url=url, field="webhook.url")
    events = webhook.get("events")
    if not isinstance(events, (list, tuple)) or not events or \
            not set(events) <= set(WEBHOOK_EVENTS):
        raise ValidationFailed(f"webhook.events must be a non-empty subset of "
                               f"{', '.join(WEBHOOK_EVENTS)}.",
                               details={"webhook.events": [f"Choose from {', '.join(WEBHOOK_EVENTS)}."]})


def _check_run_at(run_at: datetime | None) -> None:
    """A one-off run time must be in the future, and at most MAX_RUN_AT_DAYS ahead: the job
    waits with its credits held until then."""
    if run_at is None:
        return
    now = timezone.now()
    if run_at <= now:
        raise ValidationFailed("run_at is in the past.",
                               details={"run_at": ["Must be a time in the future."]})
    days = settings.MAX_RUN_AT_DAYS
    if run_at > now + timedelta(days=days):
        raise ValidationFailed(f"run_at is more than {days} days ahead.",
                               details={"run_at": [f"Must be at most {days} days ahead."]})


def _as_request_fields(details: Any) -> Any:
    """GenerationInput paths (`steps[0].nodePayload.x`) as the request's (`inputs.x`)."""
    if not isinstance(details, dict):
        return details
    prefix = "steps[0].nodePayload."
    return {("inputs." + k[len(prefix):] if k.startswith(prefix) else k): v
            for k, v in details.items()}


def _field_message(exc: ValidationFailed) -> str:
    details = _as_request_fields(exc.details)
    return _first(details) if isinstance(details, dict) and details else exc.message


def _first(errors: Mapping[str, Any]) -> str:
    key, messages = next(iter(errors.items()))
    message = messages[0] if isinstance(messages, list) and messages else messages
    return f"Invalid input: {key}: {message}"
