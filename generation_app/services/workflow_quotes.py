"""Quoting without running (SPEC section 7) and a workflow's test run (staff, SPEC section 9)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import transaction

from collections_app.generation_input import count_generations
from collections_app.services import generation_input_validate
from emprops.errors import Unprocessable, ValidationFailed
from generation_app.nodes.comfy.graph import form_value_errors as comfy_value_errors
from generation_app.services.quote import quote_steps
from generation_app.services.requests import job_create_from_input, job_input_prepare
from jobs_app.models import Job
from workflows_app import selectors as workflows
from workflows_app.forms import form_defaults, validate_payload
from workflows_app.models import Workflow

# a one-step input's step id: any positive integer will do for a quote or a test job
_STEP_ID = 1


def _one_step_input(workflow: Workflow, payload: Mapping[str, Any], *,
                    generations: int) -> dict[str, Any]:
    return {
        "version": "v2",
        "steps": [{"id": _STEP_ID, "nodeName": workflow.name, "nodePayload": dict(payload)}],
        "generations": {"hashes": [], "generations": generations, "use_custom_hashes": False},
        "variables": [],
    }


def workflow_inputs_validate(*, workflow: Workflow, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The form defaults overlaid with `inputs`, coerced by the form; ValidationFailed (400) with
    `inputs.<field>` details for a field the form does not declare or a value it refuses. The one
    check of form inputs: quotes, the unified API, batches and templates use it."""
    form = (workflow.data or {}).get("form")
    form = form if isinstance(form, dict) else None
    payload = {**form_defaults(form), **inputs}
    declared = {f.get("id") for f in (form or {}).get("fields") or [] if isinstance(f, dict)}
    errors: dict[str, list[str]] = {}
    if declared:
        errors = {f"inputs.{k}": [f"Workflow '{workflow.name}' has no field '{k}'."]
                  for k in inputs if k not in declared}
    confs = workflows.form_conf_map(forms=[form] if form else [])
    coerced, field_errors = validate_payload(form, payload, conf_options=confs)
    errors.update({f"inputs.{k}": v for k, v in field_errors.items()})
    if workflow.type == Workflow.Type.COMFY_WORKFLOW:
        refused = comfy_value_errors(data=workflow.data or {}, values=coerced)
        errors.update({f"inputs.{k}": v for k, v in refused.items() if k not in field_errors})
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"Invalid input: {first}: {errors[first][0]}", details=errors)
    return coerced


def workflow_quote(*, user: Any, workflow_id: UUID | str, inputs: Mapping[str, Any],
                   count: int = 1) -> dict[str, Any]:
    """`{per_generation, total_cost, generations, breakdown}` of `count` generations of one
    workflow with these inputs; NotFound for a workflow the user cannot see."""
    workflow = workflows.workflow_get(user=user, workflow_id=workflow_id)
    payload = workflow_inputs_validate(workflow=workflow, inputs=inputs)
    data = _one_step_input(workflow, payload, generations=count)
    return quote_steps(data["steps"], generations=count).public()


def instruction_set_quote(*, data: Any) -> dict[str, Any]:
    """The quote of a whole GenerationInput: every step, times its number of generations; a
    GenerationInput that fails validation is GraphError (400)."""
    clean = generation_input_validate(data)
    return quote_steps(clean.get("steps") or [], generations=count_generations(clean)).public()


def workflow_test_run(*, user: Any, workflow_id: UUID | str) -> Job:
    """Run a workflow's `test` payload as a one-step job (job_type `workflow_test`), charged to
    the staff user like any job; Unprocessable (422) when the workflow has no test payload."""
    workflow = workflows.workflow_get(user=user, workflow_id=workflow_id)
    test = (workflow.data or {}).get("test")
    if not isinstance(test, dict):
        raise Unprocessable("This workflow has no test payload.",
                            details={"data.test": ["Missing: set a sample payload first."]})
    with transaction.atomic():
        job_input = job_input_prepare(user=user, data=_one_step_input(workflow, test, generations=1),
                                      count=1)
        return job_create_from_input(
            user=user, job_input=job_input, collection_id=None,
            name=f"Workflow test: {workflow.label or workflow.name}", job_type="workflow_test")
