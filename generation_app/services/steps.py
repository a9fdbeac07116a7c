"""What the engine needs to know about a GenerationInput's steps and the workflows they name."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emprops.errors import GraphError, Unprocessable, ValidationFailed
from generation_app.engine.dag import build_dag, find_cycle
from generation_app.models import WorkflowSnapshot
from generation_app.nodes.comfy.graph import form_value_errors as comfy_value_errors
from workflows_app.forms import prompt_fields
from workflows_app.models import Workflow
from workflows_app.node_types import (
    BUILTIN,
    COMPONENT_READERS,
    VARIABLES_NODE,
    VARIABLES_STEP_ID,
    queue_for,
    runs_inline,
)
from workflows_app.selectors import server_url_by_name, workflows_by_name


@dataclass(frozen=True)
class StepPlan:
    steps: list[dict[str, Any]]  # runnable steps in list order (no variables step, no skipped)
    skipped: list[dict[str, Any]]
    deps: dict[int, set[int]]
    workflows: dict[str, Workflow]
    # every workflow a runnable step names, built-in names too (a `basic` workflow prices a
    # built-in): what the quote reads, so quoting a plan asks the database nothing more
    named: dict[str, Workflow] = field(default_factory=dict)


def workflow_snapshot(workflow: Workflow | None) -> dict[str, Any] | None:
    """The workflow fields a node needs, as plain data (nodes never see ORM rows).

    The ComfyUI server is named, not addressed: its URL is looked up when the node runs, so
    staff can move a server while jobs wait.
    """
    if workflow is None:
        return None
    return {
        "id": str(workflow.id), "name": workflow.name, "type": workflow.type,
        "data": workflow.data or {}, "output_mime_type": workflow.output_mime_type,
        "server": workflow.server.name if workflow.server_id else None,
    }


def snapshot_digest(snapshot: Mapping[str, Any]) -> str:
    """The content address of a workflow snapshot: sha256 of its canonical JSON."""
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def workflow_snapshots_store(workflows: Mapping[str, Workflow]) -> dict[str, str]:
    """Store a snapshot of each workflow once per content; `{name: digest}`."""
    rows = {}
    for name, wf in workflows.items():
        snapshot = workflow_snapshot(wf)
        assert snapshot is not None
        rows[name] = WorkflowSnapshot(digest=snapshot_digest(snapshot), name=name, data=snapshot)
    if rows:
        WorkflowSnapshot.objects.bulk_create(rows.values(), ignore_conflicts=True)
    return {name: row.digest for name, row in rows.items()}


def workflow_snapshot_load(*, digest: str | None) -> dict[str, Any] | None:
    """A stored snapshot with its server's current URL (`server_url`), or None for built-ins."""
    if not digest:
        return None
    snapshot = dict(WorkflowSnapshot.objects.get(pk=digest).data)
    server = snapshot.get("server")
    snapshot["server_url"] = server_url_by_name(name=server) if server else None
    return snapshot


def prompt_keys_for(workflows: Mapping[str, Workflow]) -> Any:
    def keys(name: str) -> frozenset[str]:
        wf = workflows.get(name)
        return prompt_fields((wf.data or {}).get("form")) if wf is not None else frozenset()

    return keys


def step_deps(steps: list[dict[str, Any]],
              workflows: Mapping[str, Workflow]) -> dict[int, set[int]]:
    """`{step id: ids of the steps it reads}` ($refs, `#id` mentions in prompts and the workflows'
    prompt fields, every earlier step for a component reader), in the steps' order; ids that are
    not among `steps` are kept, for the caller to judge."""
    return build_dag(steps, reads_all_components=COMPONENT_READERS.__contains__,
                     prompt_keys=prompt_keys_for(workflows))


def plan_steps(data: Mapping[str, Any]) -> StepPlan:
    """Runnable steps, their dependency graph and workflows; Unprocessable (422) when a step
    names a workflow that no longer exists or cannot run."""
    all_steps = [s for s in data.get("steps") or [] if isinstance(s, dict)]
    steps = [s for s in all_steps
             if s.get("id") != VARIABLES_STEP_ID and s.get("nodeName") != VARIABLES_NODE]
    skipped = [s for s in steps if s.get("skip")]
    runnable = [s for s in steps if not s.get("skip")]
    named = workflows_by_name(names={str(s["nodeName"]) for s in runnable})
    workflows = {n: wf for n, wf in named.items() if n not in BUILTIN}
    problems: dict[str, list[str]] = {}
    for index, step in enumerate(runnable):
        name = step["nodeName"]
        if name in BUILTIN:
            continue
        wf = workflows.get(name)
        at = f"steps[{index}].nodeName"
        if wf is None:
            problems[at] = [f"Workflow '{name}' no longer exists."]
        elif wf.type not in Workflow.EXECUTABLE_TYPES:
            problems[at] = [f"Workflow '{name}' is of type '{wf.type}', which cannot run."]
        elif not wf.output_mime_type:
            problems[at] = [f"Workflow '{name}' has no output_mime_type: a configuration error."]
        elif wf.type == Workflow.Type.COMFY_WORKFLOW and not wf.server_id:
            problems[at] = [f"Workflow '{name}' has no ComfyUI server."]
    if problems:
        raise Unprocessable("This collection can no longer run: " + "; ".join(
            m for msgs in problems.values() for m in msgs), details=problems)
    _check_comfy_values(all_steps, workflows)
    deps = step_deps(runnable, workflows)
    skipped_ids = {s["id"] for s in skipped}
    known = {s["id"] for s in runnable} | {VARIABLES_STEP_ID}
    for step_id, needs in deps.items():
        needs -= skipped_ids  # a skipped step's output is simply absent
        dangling = needs - known
        if dangling:
            raise GraphError(f"Step {step_id} depends on missing steps {sorted(dangling)}.",
                             details={"steps": [f"Step {step_id} references {sorted(dangling)}."]})
        needs.discard(VARIABLES_STEP_ID)
    cycle = find_cycle(deps)
    if cycle:
        raise GraphError(f"The steps form a cycle: {cycle}.", details={"steps": [f"Cycle {cycle}."]})
    return StepPlan(steps=runnable, skipped=skipped, deps=deps, workflows=workflows, named=named)


def _check_comfy_values(steps: list[dict[str, Any]], workflows: Mapping[str, Workflow]) -> None:
    """ValidationFailed (400) naming each form value a ComfyUI step could not write into its
    graph (a color that is no color, for a number input): refused before credits are held, not
    when the step runs."""
    errors: dict[str, list[str]] = {}
    for index, step in enumerate(steps):
        name, payload = step.get("nodeName"), step.get("nodePayload")
        wf = workflows.get(name) if isinstance(name, str) and not step.get("skip") else None
        if wf is None or wf.type != Workflow.Type.COMFY_WORKFLOW or not isinstance(payload, dict):
            continue
        for field_id, messages in comfy_value_errors(data=wf.data or {}, values=payload).items():
            errors[f"steps[{index}].nodePayload.{field_id}"] = messages
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"Invalid input: {first}: {errors[first][0]}", details=errors)


def node_run_plan(step: Mapping[str, Any], plan: StepPlan) -> tuple[str, bool, list[int]]:
    """A step's frozen plan: its queue, whether it runs inline, the step ids it waits on."""
    payload = step.get("nodePayload") or {}
    name = str(step["nodeName"])
    queue = queue_for(name, payload, workflow_snapshot(plan.workflows.get(name)))
    inline = queue == "engine" and runs_inline(name, payload)
    return queue, inline, sorted(plan.deps.get(step["id"], ()))


def names_of(steps: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(s.get("nodeName")) for s in steps}
