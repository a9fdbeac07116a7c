"""Form values -> a ComfyUI API-format graph (pure; no I/O besides reading `environ`).

`workflow.data["inputs"]` maps ComfyUI inputs to form fields::

    {"6": {"text": {"value": "prompt", "is_required": true},
           "seed": {"value": "seed", "default": 0}},
     "9": {"api_key": {"value": "OPENAI_API_KEY", "type": "api_key"}}}

Rules (SPEC section 4, comfy_workflow): a missing required value fails with the list of all
missing fields; a falsy value takes `default`; `seed` falls back to the generation seed;
prompt_editor fields are rendered first; `api_key` inputs come from the user's secret, else from the
environment variable the input names; values are coerced to the graph's own literal type (numbers
often arrive as strings; a color_picker's "#rrggbb" becomes the integer 0xrrggbb where the graph
holds a number, as ComfyUI's color inputs, e.g. EmptyImage's `color`, are INTs).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from generation_app.nodes.base import NodeError

NUMERIC_FIELD_TYPES = frozenset({"slider"})
_HEX_COLOR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


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
    if form_field.get("type") == "color_picker" and isinstance(value, str):
        # "#ff8800" into a number input (see _is_number for why the literal's type is the rule)
        try:
            number = color_to_int(value)
        except ValueError as exc:
            raise NodeError(f"Field {label}: {exc}") from None
    elif isinstance(value, str):
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


def color_to_int(value: str) -> int:
    """`"#ff8800"` (or `"#f80"`) -> 0xff8800; a plain decimal integer string is taken as is
    (payloads that already carry ComfyUI's number); anything else is ValueError."""
    text = value.strip()
    match = _HEX_COLOR.fullmatch(text)
    if match:
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits, 16)
    if re.fullmatch(r"\d+", text):
        return int(text)
    raise ValueError(f"expected a color like #ff8800, got {value!r}")


def form_value_errors(*, data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, list[str]]:
    """`{field id: [message]}` for form values that `build_prompt_graph` would refuse to convert,
    checked before a job is created (so a bad value costs nothing). Only literal values are
    judged: `$ref`s and unset fields are resolved at run time."""
    errors: dict[str, list[str]] = {}
    for field_id, spec, form_field, current in _mapped_inputs(data):
        value = values.get(field_id)
        if _is_falsy(value):  # as build_prompt_graph: a falsy value takes the default
            default = spec.get("default")
            value = default if default is not None else form_field.get("default", value)
        if (form_field.get("type") != "color_picker" or not isinstance(value, str)
                or not value.strip() or not _is_number(current)):
            continue
        try:
            color_to_int(value)
        except ValueError:
            errors.setdefault(field_id, []).append(
                f"Expected a color like #ff8800 (this field sets a number), got {value!r}.")
    return errors


def _is_number(literal: Any) -> bool:
    # Which inputs take a number is read off the graph itself: an API-format graph (ComfyUI's
    # "Export (API)", and what POST /prompt takes) carries every widget's current value, and an INT
    # or FLOAT widget's value is always a JSON number there. That is exact for real workflows and
    # needs no /object_info round trip to the server; an input missing from the graph keeps the
    # form's value as it is.
    return isinstance(literal, int | float) and not isinstance(literal, bool)


def _mapped_inputs(
    data: Mapping[str, Any],
) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any], Any]]:
    """(field id, input spec, its form field, the graph literal it replaces) for each mapped
    ComfyUI input but API keys."""
    workflow = data.get("workflow")
    mapping = data.get("inputs")
    if not isinstance(workflow, Mapping) or not isinstance(mapping, Mapping):
        return
    form = data.get("form")
    form_fields = form.get("fields") if isinstance(form, Mapping) else None
    fields = {str(f["id"]): f for f in form_fields or [] if isinstance(f, Mapping) and "id" in f}
    for node_id, node_inputs in mapping.items():
        node = workflow.get(str(node_id))
        if not isinstance(node, Mapping) or not isinstance(node_inputs, Mapping):
            continue
        inputs = node.get("inputs")
        inputs = inputs if isinstance(inputs, Mapping) else {}
        for input_name, spec in node_inputs.items():
            if isinstance(spec, str):
                spec = {"value": spec}
            if not isinstance(spec, Mapping) or spec.get("type") == "api_key":
                continue
            field_id = str(spec["value"]) if spec.get("value") is not None else str(input_name)
            yield field_id, spec, fields.get(field_id, {}), inputs.get(input_name)
