"""The step graph of one generation (SPEC section 4).

A step depends on the steps its payload references with `$ref`, the steps its rich-text prompts
mention with `#<id>`, and, when its node reads `components` (js, p5, p52vid), every earlier step.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from collections_app.generation_input import (
    CycleError,
    find_cycle,
    step_dependencies,
    topological_order,
)

__all__ = ["CycleError", "build_dag", "find_cycle", "ready", "topological_order"]


def build_dag(
    steps: list[dict[str, Any]],
    *,
    reads_all_components: Callable[[str], bool],
    prompt_keys: Callable[[str], Collection[str]] | None = None,
) -> dict[int, set[int]]:
    """Return `{step id: ids it depends on}`, keyed in the steps' list order.

    Mentions are read from `prompt` values, from strings holding a rich-text document and from the
    `prompt_keys(nodeName)` fields (a form's prompt_editor fields); `#<id>` in text counts only
    when a step has that id. Dependencies on ids that are not steps are kept, so a caller can
    report them; `ready` never releases a step that waits on one.
    """
    ids = [step["id"] for step in steps]
    id_set = set(ids)
    deps: dict[int, set[int]] = {}
    for index, step in enumerate(steps):
        name = step.get("nodeName")
        payload = step.get("nodePayload")
        payload = payload if isinstance(payload, Mapping) else {}
        keys = prompt_keys(name) if prompt_keys is not None and isinstance(name, str) else ()
        needs: set[int] = set()
        for targets in step_dependencies(payload, id_set, keys).values():
            needs |= targets
        if isinstance(name, str) and reads_all_components(name):
            needs.update(ids[:index])
        deps[step["id"]] = needs
    return deps


def ready(deps: Mapping[int, Collection[int]], done: set[int], running: set[int]) -> list[int]:
    """The steps that may start now: not done, not running, every dependency done; in graph order."""
    return [
        step
        for step, needs in deps.items()
        if step not in done and step not in running and all(need in done for need in needs)
    ]
