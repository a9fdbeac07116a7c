"""Credit quotes (SPEC section 7): each step's cost from its workflow's credits script."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from emprops.sandbox import credits_cost
from workflows_app.models import Workflow
from workflows_app.node_types import BUILTIN, VARIABLES_NODE, VARIABLES_STEP_ID
from workflows_app.selectors import workflows_by_name


def step_cost(step: Mapping[str, Any], workflows: Mapping[str, Workflow]) -> Decimal:
    name = step.get("nodeName")
    if name == VARIABLES_NODE or step.get("id") == VARIABLES_STEP_ID or step.get("skip"):
        return Decimal(0)
    wf = workflows.get(str(name))
    payload = step.get("nodePayload") if isinstance(step.get("nodePayload"), dict) else {}
    builtin = BUILTIN.get(str(name))
    if builtin is not None and (wf is None or wf.type != Workflow.Type.BASIC):
        return builtin.cost  # a built-in priced only by a `basic` workflow of its name
    if wf is None:
        return Decimal(1)
    return credits_cost((wf.data or {}).get("credits_script"), payload or {})


@dataclass(frozen=True)
class Quote:
    """What generations of some steps cost: per generation (exact) and itemised per step."""

    per_generation: Decimal
    generations: int
    breakdown: tuple[dict[str, Any], ...]

    @property
    def total(self) -> Decimal:
        return self.per_generation * self.generations

    def public(self) -> dict[str, Any]:
        """The wire format (SPEC section 7): `{per_generation, total_cost, generations,
        breakdown: [{nodeName, stepId, cost}]}`."""
        return {"per_generation": float(self.per_generation), "total_cost": float(self.total),
                "generations": self.generations, "breakdown": [dict(b) for b in self.breakdown]}


def quote_steps(steps: Iterable[Mapping[str, Any]], *, generations: int,
                workflows: Mapping[str, Workflow] | None = None) -> Quote:
    """The quote of `steps` for `generations` generations (runs each credits script once);
    `workflows`, when given, holds every workflow the steps name (`StepPlan.named`)."""
    steps = [s for s in steps if isinstance(s, Mapping)]
    if workflows is None:
        workflows = workflows_by_name(names={str(s.get("nodeName")) for s in steps})
    breakdown = []
    per_generation = Decimal(0)
    for step in steps:
        if step.get("nodeName") == VARIABLES_NODE or step.get("id") == VARIABLES_STEP_ID:
            continue
        cost = step_cost(step, workflows)
        per_generation += cost
        breakdown.append({"nodeName": step.get("nodeName"), "stepId": step.get("id"),
                          "cost": float(cost)})
    return Quote(per_generation=per_generation, generations=generations,
                 breakdown=tuple(breakdown))
