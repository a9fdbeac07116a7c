"""Reads for workflows. Workflows are shared definitions: consumers read them, staff write them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache
from django.db.models import Q, QuerySet

from emprops.api import get_or_not_found
from emprops.errors import NotFound
from emprops.sandbox import credits_cost
from workflows_app.forms import form_defaults, form_json_schema, resolve_form
from workflows_app.models import (
    AIModel,
    CustomNode,
    FormConfig,
    Server,
    UserApiSecret,
    Workflow,
)
from workflows_app.node_types import BUILTIN, BUILTIN_NAMES


def workflow_list(*, include_hidden: bool = False) -> QuerySet[Workflow]:
    qs = Workflow.objects.select_related("server")
    return qs if include_hidden else qs.filter(display=True)


def server_url_by_name(*, name: str) -> str | None:
    """The current URL of the named ComfyUI server (None when staff removed it)."""
    return Server.objects.filter(name=name).values_list("url", flat=True).first()


def workflows_by_name(*, names: Iterable[str]) -> dict[str, Workflow]:
    names = set(names)
    if not names:
        return {}
    return {w.name: w for w in Workflow.objects.select_related("server").filter(name__in=names)}


def node_form_lookup(*, names: Iterable[str]) -> Any:
    """A `node_form(name)` callable for GenerationInput validation: form dict, None, or False."""
    workflows = workflows_by_name(names=[n for n in names if n not in BUILTIN_NAMES])

    def node_form(name: str) -> dict[str, Any] | None | bool:
        if name in BUILTIN_NAMES:
            return None
        wf = workflows.get(name)
        if wf is None:
            return False
        form = (wf.data or {}).get("form")
        return form if isinstance(form, dict) else None

    return node_form


def conf_options(*, names: Iterable[str]) -> dict[str, list[Any]]:
    """Option lists of the named form configs (a conf's data is a list, or `{"options": [...]}`)."""
    out: dict[str, list[Any]] = {}
    for fc in FormConfig.objects.filter(name__in=set(names)):
        data = fc.data
        if isinstance(data, dict):
            data = data.get("options", data.get("values", []))
        out[fc.name] = list(data) if isinstance(data, list) else []
    return out


def workflow_search(qs: QuerySet[Workflow], term: str) -> QuerySet[Workflow]:
    return qs.filter(Q(name__icontains=term) | Q(label__icontains=term)
                     | Q(description__icontains=term))


# ---- discovery (the API's reads) ---------------------------------------------------------------

def _is_staff(user: Any) -> bool:
    return bool(getattr(user, "is_staff", False))


def workflow_visible_list(*, user: Any) -> QuerySet[Workflow]:
    """Workflows the viewer may see: staff see all, everyone else the displayed ones."""
    return workflow_list(include_hidden=_is_staff(user)).prefetch_related("workflow_models__model")


def workflow_get(*, user: Any, workflow_id: Any) -> Workflow:
    """A workflow the viewer may see, or NotFound (a hidden one looks missing to non-staff)."""
    return get_or_not_found(workflow_visible_list(user=user), label="Workflow", pk=workflow_id)


def workflow_get_by_name(*, user: Any, name: str) -> Workflow:
    """A workflow the viewer may see, by name, or the 404 of workflow_not_found."""
    try:
        return get_or_not_found(workflow_visible_list(user=user), label="Workflow", name=name)
    except NotFound:
        raise workflow_not_found(field="name") from None


def workflow_not_found(*, field: str) -> NotFound:
    """The 404 of a workflow looked up by `field`: names the built-in nodes in `details`, since
    a step may use one of those by name without any workflow."""
    return NotFound("Workflow not found.",
                    details={field: ["No such workflow."], "builtin_nodes": sorted(BUILTIN)})


def workflow_filter_component_group(qs: QuerySet[Workflow], group: str) -> QuerySet[Workflow]:
    return qs.filter(data__form__config__componentGroup=group)


def workflow_filter_model(qs: QuerySet[Workflow], model: str) -> QuerySet[Workflow]:
    """Workflows linked to the named model, or listing it in `data.models`."""
    return qs.filter(
        Q(workflow_models__model__name=model)
        | Q(data__models__contains=[model])
        | Q(data__models__contains=[{"name": model}])
    ).distinct()


def workflow_models(*, workflow: Workflow) -> list[dict[str, Any]]:
    """The models a workflow uses: linked `model` rows, then names only `data.models` lists."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for link in workflow.workflow_models.all():
        m = link.model
        seen.add(m.name)
        out.append({"id": str(m.id), "name": m.name, "is_required": link.is_required,
                    "download_url": m.download_url, "save_to": m.save_to,
                    "file_size": m.file_size, "is_auth_req": m.is_auth_req})
    for name in _model_names((workflow.data or {}).get("models")):
        if name not in seen:
            seen.add(name)
            out.append({"id": None, "name": name, "is_required": True, "download_url": None,
                        "save_to": None, "file_size": None, "is_auth_req": None})
    return out


def _model_names(raw: Any) -> list[str]:
    """Names in `data.models`: a list of names or `{name}` objects, or a required_models.json
    style mapping of folders to name lists."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, dict):
        if isinstance(raw.get("name"), str):
            return [raw["name"]]
        return [n for key, value in raw.items() if key != "invalid" for n in _model_names(value)]
    if isinstance(raw, list):
        return [n for item in raw for n in _model_names(item)]
    return []


def _conf_variants(conf_file: str) -> set[str]:
    base = conf_file.rsplit("/", 1)[-1]
    names = {conf_file, base}
    for n in list(names):
        names.add(n[:-5] if n.endswith(".json") else f"{n}.json")
    return names


def form_conf_map(*, forms: Iterable[Any]) -> dict[str, Any]:
    """`{conf_file as the forms spell it: option list}` for every `conf_file` the forms name."""
    wanted: dict[str, set[str]] = {}
    for form in forms:
        fields = form.get("fields") if isinstance(form, dict) else None
        for field in fields if isinstance(fields, list) else []:
            conf = field.get("conf_file") if isinstance(field, dict) else None
            if isinstance(conf, str) and conf:
                wanted[conf] = _conf_variants(conf)
    if not wanted:
        return {}
    rows = {fc.name: fc.data for fc in
            FormConfig.objects.filter(name__in=set().union(*wanted.values()))}
    out: dict[str, Any] = {}
    for conf, variants in wanted.items():
        for name in sorted(variants, key=lambda n: (n != conf, n)):
            if name in rows:
                out[conf] = rows[name]
                break
    return out


def workflow_sample_payload(*, workflow: Workflow) -> dict[str, Any]:
    """The payload a workflow's cost is quoted for: its `test` payload, else its form defaults."""
    data = workflow.data or {}
    test = data.get("test")
    if isinstance(test, dict) and test:
        return dict(test)
    form = data.get("form")
    return form_defaults(form if isinstance(form, dict) else None)


def workflow_unit_cost(*, workflow: Workflow) -> float:
    """Credits of one generation of this workflow's sample payload (cached per version)."""
    payload = workflow_sample_payload(workflow=workflow)
    script = (workflow.data or {}).get("credits_script")
    if workflow.name in BUILTIN_NAMES and workflow.type != Workflow.Type.BASIC:
        return 1.0  # a built-in's cost comes only from a `basic` workflow of its name
    if not isinstance(script, str) or not script.strip():
        return float(credits_cost(None, payload))
    digest = hashlib.sha256(
        json.dumps([script, payload], sort_keys=True, default=str).encode()).hexdigest()
    key = f"workflow-cost:{digest}"
    cached = cache.get(key)
    if cached is None:
        cached = float(credits_cost(script, payload))
        cache.set(key, cached, timeout=3600)
    return float(cached)


def workflow_form_description(*, workflow: Workflow) -> dict[str, Any]:
    """The form as JSON Schema, the UI field list with option lists resolved, and an example
    request body for the unified API."""
    form = (workflow.data or {}).get("form")
    form = form if isinstance(form, dict) else {}
    confs = form_conf_map(forms=[form])
    resolved = resolve_form(form, confs)
    return {
        "workflow_id": str(workflow.id),
        "name": workflow.name,
        "schema": form_json_schema(form, conf_options=confs),
        "config": resolved.get("config") or {},
        "fields": resolved.get("fields") or [],
        "example": {"workflow_id": str(workflow.id), "inputs": form_defaults(form), "count": 1},
    }


def workflow_resolved_form(*, workflow: Workflow, confs: dict[str, Any] | None = None) -> Any:
    form = (workflow.data or {}).get("form")
    if not isinstance(form, dict):
        return None
    if confs is None:
        confs = form_conf_map(forms=[form])
    return resolve_form(form, confs)


# ---- staff reads ------------------------------------------------------------------------------

def server_list() -> QuerySet[Server]:
    return Server.objects.all()


def server_get(**lookup: Any) -> Server:
    return get_or_not_found(Server.objects.all(), label="Server", **lookup)


def form_config_list() -> QuerySet[FormConfig]:
    return FormConfig.objects.all()


def form_config_get(**lookup: Any) -> FormConfig:
    return get_or_not_found(FormConfig.objects.all(), label="Form config", **lookup)


def model_list() -> QuerySet[AIModel]:
    return AIModel.objects.all()


def model_get(**lookup: Any) -> AIModel:
    return get_or_not_found(AIModel.objects.all(), label="Model", **lookup)


def custom_node_list() -> QuerySet[CustomNode]:
    return CustomNode.objects.all()


# ---- users' secrets ---------------------------------------------------------------------------

def secret_list(*, user: Any) -> QuerySet[UserApiSecret]:
    """The viewer's secrets (rows carry only the encrypted value; never serialise it)."""
    return UserApiSecret.objects.filter(user=user).order_by("workflow_name")
