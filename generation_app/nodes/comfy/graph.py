"""Form values -> a ComfyUI API-format graph (pure; no I/O besides reading `environ`).

`workflow.data["inputs"]` maps ComfyUI inputs to form fields::

    {"6": {"text": {"value": "prompt", "is_required": true},
           "seed": {"value": "seed", "default": 0}},
     "9": {"api_key": {"value": "OPENAI_API_KEY", "type": "api_key"}}}

Rules (SPEC section 4, comfy_workflow): a missing required value fails with the list of all
missing fields; a falsy value takes `default`; `seed` falls back to the generation seed;
prompt_editor fields are rendered first; `api_key` inputs come from the user's secret, else from the
environment variable the input names; values are coerced to the graph's own literal type (numbers
often arrive as strings).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

from generation_app.nodes.base import NodeError

NUMERIC_FIELD_TYPES = frozenset({"slider"})


def build_prompt_graph(
    *,
    data: Mapping[str, Any],
    values: Mapping[str, Any],
    seed: int,
    render_prompt: Callable[[str], str],
    user_secret: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return a new API graph from `data["workflow"]` with `values` written in, or NodeError."""
    workflow = data.get("workflow")
    if not isinstance(workflow, dict) or not workflow:
        raise NodeError("The workflow has no ComfyUI graph")
    graph: dict[str, Any] = copy.deepcopy(workflow)
    env = os.environ if environ is None else environ
    form = data.get("form")
    form_fields = form.get("fields") if isinstance(form, dict) else None
    fields: dict[str, Mapping[str, Any]] = {
        str(f["id"]): f for f in form_fields or [] if isinstance(f, dict) and "id" in f
    }
    mapping = data.get("inputs") or {}
    if not isinstance(mapping, dict):
        raise NodeError("The workflow's input mapping is not an object")

    missing: list[str] = []
    for node_id, node_inputs in mapping.items():
        node = graph.get(str(node_id))
        if not isinstance(node, dict):
            raise NodeError(
                f"The workflow's inputs name ComfyUI node {node_id}, which its graph lacks"
            )
        if not isinstance(node_inputs, dict):
            continue
        target = node.setdefault("inputs", {})
        for input_name, spec in node_inputs.items():
            if isinstance(spec, str):
                spec = {"value": spec}
            if not isinstance(spec, dict):
                continue
            field_id = str(spec["value"]) if spec.get("value") is not None else str(input_name)
            form_field = fields.get(field_id, {})
            label = str(form_field.get("name") or field_id)

            if spec.get("type") == "api_key":
                env_name = str(spec.get("env") or field_id)
                secret = user_secret or env.get(env_name)
                if not secret:
                    missing.append(label)
                    continue
                target[input_name] = secret
                continue

            value = values.get(field_id)
            if field_id == "seed" and _is_falsy(value):
                value = seed
            elif _is_falsy(value):
                default = spec.get("default")
                value = default if default is not None else form_field.get("default", value)
            if value is None or value == "":
                if spec.get("is_required") or form_field.get("is_required"):
                    missing.append(label)
                continue  # optional and unset: keep the graph's own value
            if form_field.get("type") == "prompt_editor" and isinstance(value, str):
                value = render_prompt(value)
            target[input_name] = _coerce(value, target.get(input_name), form_field, label)

    if missing:
        raise NodeError("Missing required fields: " + ", ".join(missing))
    return graph


def _is_falsy(value: Any) -> bool:
    # SPEC: "a falsy value takes default". An explicit False (an unticked checkbox) is kept:
    # otherwise a checkbox whose default is true could never be turned off.
    if isinstance(value, bool):
        return False
    return not value


def _coerce(value: Any, current: Any, form_field: Mapping[str, Any], label: str) -> Any:
    """Give `value` the type of the graph's literal it replaces (or a number for number fields)."""
    if isinstance(current, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)
    numeric = (
        form_field.get("type") in NUMERIC_FIELD_TYPES or form_field.get("input_type") == "number"
    )
    if not (isinstance(current, int | float) or numeric):
        return value
    number: int | float
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise NodeError(f"Field {label}: expected a number, got {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    else:
        return value
    if isinstance(current, float):
        return float(number)
    if isinstance(current, int) and isinstance(number, float) and number.is_integer():
        return int(number)
    return number
