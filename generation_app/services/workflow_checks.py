"""A workflow checked before it goes live (staff, admin's "Validate"): its form, where its inputs
land in the ComfyUI graph, its credits script and its test payload. Reads only; runs the credits
script in the sandbox with the limits quotes use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from emprops.errors import ValidationFailed
from emprops.sandbox import SandboxError, credits_check
from generation_app.services.workflow_quotes import workflow_inputs_validate
from workflows_app import selectors as workflows
from workflows_app.forms import (
    form_defaults,
    is_number_field,
    is_seed_field,
    option_values,
    validate_payload,
)
from workflows_app.models import Workflow

# SPEC section 5's field types, plus `number` (forms.py: the aspect-ratio option files use it)
FIELD_TYPES = frozenset({"slider", "select", "prompt_editor", "optional_input", "image_loader",
                         "checkbox", "color_picker", "input", "aspect_ratio", "number"})
_OPTION_TYPES = frozenset({"select", "aspect_ratio"})
_FORM_TYPES = (Workflow.Type.COMFY_WORKFLOW, Workflow.Type.FETCH_API, Workflow.Type.DIRECT_JOB)
CHECKS = (("form", "Form"), ("graph", "Inputs (data.inputs targets)"), ("credits", "Credits script"),
          ("test", "Test payload"))

Problems = list[dict[str, str]]


def _problem(problems: Problems, where: str, message: str) -> None:
    problems.append({"where": where, "message": message})


def _fields(form: Any) -> list[dict[str, Any]]:
    fields = form.get("fields") if isinstance(form, dict) else None
    return [f for f in fields if isinstance(f, dict)] if isinstance(fields, list) else []


def _is_number(literal: Any) -> TypeGuard[int | float]:
    # as generation_app/nodes/comfy/graph.py reads an API-format graph: an INT or FLOAT
    # widget's value is a JSON number there
    return isinstance(literal, int | float) and not isinstance(literal, bool)


def _check_form(workflow: Workflow, confs: Mapping[str, Any]) -> Problems:
    problems: Problems = []
    form = (workflow.data or {}).get("form")
    if form is None:
        if workflow.type in _FORM_TYPES:
            _problem(problems, "data.form", f"A {workflow.type} workflow needs a form.")
        return problems
    if not isinstance(form, dict):
        _problem(problems, "data.form", "Must be an object {config, fields}.")
        return problems
    if not isinstance(form.get("fields"), list):
        _problem(problems, "data.form.fields", "Must be a list of fields.")
        return problems
    if "config" in form and not isinstance(form["config"], dict):
        _problem(problems, "data.form.config", "Must be an object.")
    seen: set[str] = set()
    for i, field in enumerate(form["fields"]):
        where = f"data.form.fields[{i}]"
        if not isinstance(field, dict):
            _problem(problems, where, "Must be an object.")
            continue
        field_id = field.get("id")
        if not isinstance(field_id, str) or not field_id:
            _problem(problems, where, "Has no id.")
            continue
        where = f"field '{field_id}'"
        if field_id in seen:
            _problem(problems, where, "The id is used by another field too.")
        seen.add(field_id)
        field_type = field.get("type")
        if field_type not in FIELD_TYPES:
            _problem(problems, where, f"Unknown type {field_type!r} (one of "
                                      f"{', '.join(sorted(FIELD_TYPES))}).")
        if not isinstance(field.get("name"), str) or not field["name"]:
            _problem(problems, where, "Has no name (the label users see).")
        constraints = field.get("constraints")
        if constraints is not None:
            if not isinstance(constraints, dict):
                _problem(problems, where, "constraints must be an object {min, max, step}.")
            else:
                bounds = {k: constraints.get(k) for k in ("min", "max", "step")
                          if constraints.get(k) is not None}
                for key, value in bounds.items():
                    if not _is_number(value):
                        _problem(problems, where, f"constraints.{key} must be a number.")
                lo, hi = bounds.get("min"), bounds.get("max")
                if _is_number(lo) and _is_number(hi) and lo > hi:
                    _problem(problems, where, "constraints.min is greater than constraints.max.")
                step = bounds.get("step")
                if _is_number(step) and step <= 0:
                    _problem(problems, where, "constraints.step must be positive.")
        conf_file = field.get("conf_file")
        if isinstance(conf_file, str) and conf_file and conf_file not in confs:
            _problem(problems, where, f"conf_file '{conf_file}' names no form config.")
        elif field_type in _OPTION_TYPES and not isinstance(field.get("options"), list) \
                and not conf_file:
            _problem(problems, where, "A select needs options (inline or a conf_file).")
    defaults = form_defaults(form)
    _, default_errors = validate_payload(form, defaults, conf_options=confs)
    for field_id, messages in default_errors.items():
        if field_id in defaults:  # a required field need not have a default
            _problem(problems, f"field '{field_id}'", f"default: {messages[0]}")
    return problems


def _literal_fits(field: Mapping[str, Any], literal: Any,
                  confs: Mapping[str, Any]) -> str | None:
    """Why a form field's value cannot replace `literal` in the graph (None when it can)."""
    field_type = field.get("type")
    if _is_number(literal):
        if is_number_field(field) or is_seed_field(field) or field_type in ("color_picker",
                                                                            "checkbox"):
            return None  # a color_picker's "#rrggbb" is converted to its INT; a seed is one
        if field_type in _OPTION_TYPES:
            options = field.get("options")
            if not isinstance(options, list) and isinstance(field.get("conf_file"), str):
                conf = confs.get(field["conf_file"])
                options = conf.get("options") if isinstance(conf, Mapping) else conf
            values = option_values(options) if options is not None else []
            if all(_is_number(v) or _numeric_text(v) for v in values):
                return None
            return "sets a number, but some of the field's options are not numbers"
        return f"sets a number, but field '{field.get('id')}' is a {field_type} text field"
    if isinstance(literal, bool) and field_type not in ("checkbox", *_OPTION_TYPES):
        return f"sets true/false, but field '{field.get('id')}' is a {field_type} field"
    return None


def _numeric_text(value: Any) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _check_comfy_graph(data: Mapping[str, Any], confs: Mapping[str, Any]) -> Problems:
    problems: Problems = []
    graph = data.get("workflow")
    if not isinstance(graph, dict) or not graph:
        _problem(problems, "data.workflow", "No ComfyUI API-format graph.")
        return problems
    mapping = data.get("inputs")
    if mapping is None:
        return problems
    if not isinstance(mapping, dict):
        _problem(problems, "data.inputs", "Must be an object {node id: {input: spec}}.")
        return problems
    fields = {str(f["id"]): f for f in _fields(data.get("form")) if "id" in f}
    for node_id, node_inputs in mapping.items():
        node = graph.get(str(node_id))
        if not isinstance(node, dict):
            _problem(problems, f"data.inputs.{node_id}", f"Node {node_id} is not in the graph.")
            continue
        if not isinstance(node_inputs, dict):
            _problem(problems, f"data.inputs.{node_id}", "Must be an object {input: spec}.")
            continue
        raw_inputs = node.get("inputs")
        literals: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
        node_label = f"node {node_id} ({node.get('class_type') or 'no class_type'})"
        for input_name, spec in node_inputs.items():
            where = f"data.inputs.{node_id}.{input_name}"
            if isinstance(spec, str):
                spec = {"value": spec}
            if not isinstance(spec, dict):
                _problem(problems, where, "Must be a field id or {value, is_required, default}.")
                continue
            if spec.get("type") == "api_key":
                continue  # filled from the user's secret: the graph need not hold it
            if input_name not in literals:
                _problem(problems, where, f"Input '{input_name}' is not an input of {node_label}.")
                continue
            field_id = str(spec["value"]) if spec.get("value") is not None else str(input_name)
            field = fields.get(field_id)
            if field is None:
                if field_id != "seed":  # seed falls back to the generation seed
                    _problem(problems, where, f"Field '{field_id}' is not in the form.")
                continue
            literal = literals[input_name]
            if isinstance(literal, list):
                _problem(problems, where, f"Input '{input_name}' of {node_label} is linked to "
                                          "another node's output; a form value would cut the link.")
                continue
            reason = _literal_fits(field, literal, confs)
            if reason is not None:
                _problem(problems, where, f"Input '{input_name}' of {node_label} {reason}.")
    return problems


def _check_jq_inputs(data: Mapping[str, Any]) -> Problems:
    """fetch_api / direct_job: `data.inputs` = [{id, pathJq}], each id a form field."""
    problems: Problems = []
    mapping = data.get("inputs")
    if mapping is None:
        return problems
    if not isinstance(mapping, list):
        _problem(problems, "data.inputs", "Must be a list of {id, pathJq}.")
        return problems
    fields = {f.get("id") for f in _fields(data.get("form"))}
    for i, item in enumerate(mapping):
        where = f"data.inputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pathJq"), str):
            _problem(problems, where, "Must be {id, pathJq}.")
        elif item.get("id") not in fields and item.get("id") != "seed":
            _problem(problems, where, f"Field '{item.get('id')}' is not in the form.")
    return problems


def _check_test(workflow: Workflow) -> tuple[Problems, dict[str, Any] | None]:
    """The test payload's problems and, when it passes, the payload as the form coerces it."""
    problems: Problems = []
    test = (workflow.data or {}).get("test")
    if test is None:
        if workflow.type in _FORM_TYPES:
            _problem(problems, "data.test", "No test payload: Test-run and Quote need one.")
        return problems, None
    if not isinstance(test, dict):
        _problem(problems, "data.test", "Must be an object {field id: value}.")
        return problems, None
    try:
        return problems, workflow_inputs_validate(workflow=workflow, inputs=test)
    except ValidationFailed as exc:
        for key, messages in (exc.details or {}).items():
            field = key.removeprefix("inputs.")
            for message in messages if isinstance(messages, list) else [messages]:
                _problem(problems, f"data.test.{field}", str(message))
        return problems, None


def _check_credits(workflow: Workflow, payload: Mapping[str, Any]) -> tuple[Problems, float | None]:
    problems: Problems = []
    script = (workflow.data or {}).get("credits_script")
    if script is None or (isinstance(script, str) and not script.strip()):
        if workflow.type == Workflow.Type.BASIC:
            _problem(problems, "data.credits_script", "A basic workflow exists to carry a "
                                                      "credits script; this one has none.")
        return problems, None
    if not isinstance(script, str):
        _problem(problems, "data.credits_script", "Must be JavaScript source text.")
        return problems, None
    try:
        cost = credits_check(script, payload)
    except SandboxError as exc:
        _problem(problems, "data.credits_script",
                 f"computeCost of the test payload failed ({exc.kind}): {str(exc)[:300]}; "
                 "it would cost 1 credit.")
        return problems, None
    return problems, float(cost)


def workflow_check(*, workflow: Workflow) -> dict[str, Any]:
    """`{ok, cost, checks: [{name, label, ok, problems: [{where, message}]}]}`: the form is
    well-formed (types, ids, constraints, option lists, defaults); every `data.inputs` target
    is in the ComfyUI graph and takes the field's kind of value; the credits script returns a
    cost for the test payload (`cost`); the test payload passes the form."""
    data = workflow.data
    if not isinstance(data, dict):
        checks = [{"name": name, "label": label, "ok": False,
                   "problems": [{"where": "data", "message": "Must be an object."}]}
                  for name, label in CHECKS[:1]]
        return {"ok": False, "cost": None, "checks": checks}
    form = data.get("form")
    confs = workflows.form_conf_map(forms=[form] if isinstance(form, dict) else [])
    found: dict[str, Problems] = {"form": _check_form(workflow, confs)}
    if workflow.type == Workflow.Type.COMFY_WORKFLOW:
        found["graph"] = _check_comfy_graph(data, confs)
        if workflow.server_id is None:
            _problem(found["graph"], "server", "No ComfyUI server: jobs cannot run.")
    elif workflow.type in (Workflow.Type.FETCH_API, Workflow.Type.DIRECT_JOB):
        found["graph"] = _check_jq_inputs(data)
    else:
        found["graph"] = []
    found["test"], payload = _check_test(workflow)
    if payload is None:
        payload = form_defaults(form if isinstance(form, dict) else None)
    found["credits"], cost = _check_credits(workflow, payload)
    checks = [{"name": name, "label": label, "ok": not found[name], "problems": found[name]}
              for name, label in CHECKS]
    return {"ok": all(c["ok"] for c in checks), "cost": cost, "checks": checks}
