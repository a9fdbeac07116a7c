"""Templates: a saved GenerationInput with declared parameters, each a name, a JSON Schema for
its value and a JSON pointer (RFC 6901) to where the value goes in the data. Staff publish public
templates; users keep their own."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Q, QuerySet

from collections_app.services import collection_create, generation_input_validate
from emprops.api import get_or_not_found
from emprops.errors import Forbidden, NotFound, ValidationFailed
from generation_app.models import Template
from generation_app.services.requests import generation_request
from jobs_app.models import Job

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_MISSING = object()


# ---- JSON pointers -----------------------------------------------------------------------------

def _tokens(pointer: str) -> list[str]:
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer starts with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, appending: bool) -> int:
    if appending and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token) or int(token) >= len(container) + appending:
        raise ValueError(f"no item {token!r}")
    return int(token)


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, appending=False)]
        else:
            raise ValueError(f"no member {token!r}")
    if not isinstance(node, (dict, list)):
        raise ValueError("the parent is not an object or a list")
    return node


def pointer_check(doc: Any, pointer: str) -> None:
    """Raise ValueError unless a value can be written at `pointer` (its parent must exist)."""
    tokens = _tokens(pointer)
    parent = _parent(doc, tokens)
    if isinstance(parent, list):
        _index(parent, tokens[-1], appending=True)


def pointer_set(doc: Any, pointer: str, value: Any) -> None:
    """Write `value` at `pointer` in `doc` (in place): replace a member or item, add a member,
    or append with `-`."""
    tokens = _tokens(pointer)
    parent = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
        return
    i = _index(parent, tokens[-1], appending=True)
    if i == len(parent):
        parent.append(value)
    else:
        parent[i] = value


# ---- parameters --------------------------------------------------------------------------------

def _contains_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return any(k in ("$ref", "$dynamicRef") or _contains_ref(v) for k, v in schema.items())
    if isinstance(schema, list):
        return any(_contains_ref(v) for v in schema)
    return False


def _validate_parameters(parameters: Any, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    from jsonschema import SchemaError, validators

    if not isinstance(parameters, list):
        raise ValidationFailed("parameters must be a list.", details={"parameters": ["A list."]})
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    clean = []
    for i, p in enumerate(parameters):
        where = f"parameters[{i}]"
        if not isinstance(p, dict):
            errors[where] = ["Must be an object {name, schema, target}."]
            continue
        name, schema, target = p.get("name"), p.get("schema", {}), p.get("target")
        if not isinstance(name, str) or not _NAME.match(name):
            errors[f"{where}.name"] = ["A name of letters, digits, '_' or '-' (at most 64)."]
        elif name in seen:
            errors[f"{where}.name"] = [f"Duplicate parameter {name!r}."]
        else:
            seen.add(name)
        if not isinstance(schema, dict):
            errors[f"{where}.schema"] = ["Must be a JSON Schema object."]
        elif _contains_ref(schema):
            # values are checked against the schema alone: no references to resolve
            errors[f"{where}.schema"] = ["$ref is not supported."]
        else:
            try:
                validators.validator_for(schema).check_schema(schema)
            except SchemaError as exc:
                errors[f"{where}.schema"] = [f"Not a valid JSON Schema: {exc.message}"]
        if not isinstance(target, str):
            errors[f"{where}.target"] = ["A JSON pointer into data, e.g. /steps/0/nodePayload/x."]
        else:
            try:
                pointer_check(copy.deepcopy(dict(data)), target)
            except ValueError as exc:
                errors[f"{where}.target"] = [f"Does not point into data: {exc}."]
        clean.append({"name": name, "schema": schema, "target": target,
                      **({"description": p["description"]}
                         if isinstance(p.get("description"), str) else {})})
    if errors:
        raise ValidationFailed("Invalid template parameters.", details=errors)
    return clean


def _parameter_values(template: Template, values: Mapping[str, Any]) -> dict[str, Any]:
    """Each declared parameter's value (given, else the schema's default), checked against its
    schema; 400 naming every bad, missing or unknown one."""
    from jsonschema import validators

    errors: dict[str, list[str]] = {}
    declared = {p["name"]: p for p in template.parameters}
    for name in values:
        if name not in declared:
            errors[f"parameters.{name}"] = ["The template has no such parameter."]
    out: dict[str, Any] = {}
    for name, p in declared.items():
        schema = p.get("schema") or {}
        value = values.get(name, schema.get("default", _MISSING))
        if value is _MISSING:
            errors[f"parameters.{name}"] = ["This parameter is required."]
            continue
        validator = validators.validator_for(schema)(schema)
        problems = sorted(e.message for e in validator.iter_errors(value))
        if problems:
            errors[f"parameters.{name}"] = problems
        out[name] = value
    if errors:
        raise ValidationFailed("Invalid template parameters.", details=errors)
    return out


# ---- reads -------------------------------------------------------------------------------------

def template_list(*, user: Any) -> QuerySet[Template]:
    """Public templates and the user's own."""
    return Template.objects.filter(Q(is_public=True) | Q(owner=user)).order_by("-created_at")


def template_get(*, user: Any, template_id: UUID | str) -> Template:
    return get_or_not_found(template_list(user=user), label="Template", pk=template_id)


# ---- writes ------------------------------------------------------------------------------------

def template_create(*, user: Any, name: str, data: Any, parameters: Any = (),
                    description: str = "", is_public: bool = False) -> Template:
    """The user's template (400 for a bad GenerationInput or parameter); only staff publish, and
    a published template belongs to no one (staff manage it)."""
    if is_public and not user.is_staff:
        raise Forbidden("Only staff publish templates.", details={"is_public": ["Staff only."]})
    clean = generation_input_validate(data)
    params = _validate_parameters(list(parameters), clean)
    return Template.objects.create(owner=None if is_public else user, name=name,
                                   description=description, data=clean, parameters=params,
                                   is_public=is_public)


def template_delete(*, user: Any, template_id: UUID | str) -> None:
    """Delete one of the user's templates (staff: also published ones); 404 otherwise."""
    template = template_get(user=user, template_id=template_id)
    if template.owner_id != user.pk and not (template.owner_id is None and user.is_staff):
        raise NotFound("Template not found.")
    template.delete()


@transaction.atomic
def template_collection_create(*, user: Any, template_id: UUID | str,
                               parameters: Mapping[str, Any], fields: Mapping[str, Any],
                               project_id: UUID | None = None,
                               generate: Mapping[str, Any] | None = None) -> tuple[Any, Job | None]:
    """A collection from a template with parameter values written at their targets (re-numbered
    like any new collection) and, with `generate`, its job, all in one transaction: a refused
    generation (402, 400) leaves no collection behind."""
    template = template_get(user=user, template_id=template_id)
    values = _parameter_values(template, parameters)
    data = copy.deepcopy(template.data)
    by_name = {p["name"]: p for p in template.parameters}
    for name, value in values.items():
        try:
            pointer_set(data, by_name[name]["target"], copy.deepcopy(value))
        except ValueError as exc:  # the template's own data no longer fits its pointer
            raise ValidationFailed(f"Parameter {name!r} cannot be written: {exc}.",
                                   details={f"parameters.{name}": [str(exc)]}) from None
    fields = {"title": template.name, "description": template.description, **fields}
    collection = collection_create(user=user, project_id=project_id, data=data,
                                   fields=dict(fields), action="created_from_template")
    job = None
    if generate is not None:
        job = generation_request(user=user, collection_id=collection.id,
                                 variables=generate.get("variables"), count=generate.get("count"),
                                 hashes=generate.get("hashes"),
                                 workflow_priority=generate.get("workflow_priority"))
    return collection, job
