"""Writes for workflows and what they need: staff curation, the component-library importer and
users' own third-party secrets. Each public function is one transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction

from emprops.api import get_or_not_found
from emprops.errors import Conflict, NotFound, ValidationFailed
from workflows_app import secrets
from workflows_app.models import (
    AIModel,
    CustomNode,
    FormConfig,
    Server,
    UserApiSecret,
    Workflow,
    WorkflowCustomNode,
    WorkflowModel,
)

# workflow columns staff may set through the API (besides name, data, server and links)
WORKFLOW_FIELDS = ("label", "description", "type", "output_mime_type", "display", "order",
                   "est_gen_time", "machine_type", "min_vram")


# ---- workflows (staff) ------------------------------------------------------------------------

def _server_for(ref: Any) -> Server | None:
    """A server named by id or by name; None clears it."""
    if ref is None or ref == "":
        return None
    try:
        return Server.objects.get(pk=UUID(str(ref)))
    except (ValueError, Server.DoesNotExist):
        pass
    server = Server.objects.filter(name=str(ref)).first()
    if server is None:
        raise ValidationFailed(f"Unknown server '{ref}'.", details={"server": ["No such server."]})
    return server


def _check_executable(workflow: Workflow) -> None:
    if workflow.type in Workflow.EXECUTABLE_TYPES and not workflow.output_mime_type:
        raise ValidationFailed(
            f"output_mime_type is required for {workflow.type} workflows.",
            details={"output_mime_type": [f"Required for type '{workflow.type}'."]})


def _link_by_names(workflow: Workflow, *, models: list[str] | None,
                   custom_nodes: list[str] | None) -> None:
    if models is not None:
        rows = {m.name: m for m in AIModel.objects.filter(name__in=models)}
        unknown = sorted(set(models) - set(rows))
        if unknown:
            raise ValidationFailed(f"Unknown models: {', '.join(unknown)}.",
                                   details={"models": [f"No model '{n}'." for n in unknown]})
        workflow.workflow_models.exclude(model__name__in=models).delete()
        for model in rows.values():
            WorkflowModel.objects.get_or_create(workflow=workflow, model=model)
    if custom_nodes is not None:
        nodes = {c.name: c for c in CustomNode.objects.filter(name__in=custom_nodes)}
        unknown = sorted(set(custom_nodes) - set(nodes))
        if unknown:
            raise ValidationFailed(f"Unknown custom nodes: {', '.join(unknown)}.",
                                   details={"custom_nodes": [f"No custom node '{n}'."
                                                             for n in unknown]})
        workflow.workflow_custom_nodes.exclude(custom_node__name__in=custom_nodes).delete()
        for node in nodes.values():
            WorkflowCustomNode.objects.get_or_create(workflow=workflow, custom_node=node)


@transaction.atomic
def workflow_create(*, name: str, data: Mapping[str, Any] | None = None,
                    fields: Mapping[str, Any] | None = None, server: Any = None,
                    models: list[str] | None = None,
                    custom_nodes: list[str] | None = None) -> Workflow:
    """A new workflow; Conflict (409) when the name is taken."""
    if Workflow.objects.filter(name=name).exists():
        raise Conflict(f"A workflow named '{name}' already exists.",
                       details={"name": ["Already exists."]})
    workflow = Workflow(name=name, data=dict(data or {}),
                        **{k: v for k, v in (fields or {}).items() if k in WORKFLOW_FIELDS})
    workflow.server = _server_for(server)
    _check_executable(workflow)
    try:
        with transaction.atomic():
            workflow.save()
    except IntegrityError:  # created concurrently under the same name
        raise Conflict(f"A workflow named '{name}' already exists.",
                       details={"name": ["Already exists."]}) from None
    _link_by_names(workflow, models=models, custom_nodes=custom_nodes)
    return workflow


@transaction.atomic
def workflow_update(*, workflow_id: UUID | str, data: Mapping[str, Any] | None = None,
                    fields: Mapping[str, Any] | None = None, server: Any = ...,
                    name: str | None = None, models: list[str] | None = None,
                    custom_nodes: list[str] | None = None) -> Workflow:
    """Update a workflow: `data` is merged key by key into the stored data (a key set to null is
    removed), the given columns are set, `server` (id or name) is set when passed."""
    workflow = get_or_not_found(Workflow.objects.select_for_update(), label="Workflow",
                                pk=workflow_id)
    if data is not None:
        merged = dict(workflow.data or {})
        for key, value in data.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        workflow.data = merged
    for key, value in (fields or {}).items():
        if key in WORKFLOW_FIELDS:
            setattr(workflow, key, value)
    if server is not ...:
        workflow.server = _server_for(server)
    if name is not None and name != workflow.name:
        if Workflow.objects.filter(name=name).exclude(pk=workflow.pk).exists():
            raise Conflict(f"A workflow named '{name}' already exists.",
                           details={"name": ["Already exists."]})
        workflow.name = name
    _check_executable(workflow)
    workflow.save()
    _link_by_names(workflow, models=models, custom_nodes=custom_nodes)
    return workflow


@transaction.atomic
def workflow_delete(*, workflow_id: UUID | str) -> None:
    get_or_not_found(Workflow.objects.all(), label="Workflow", pk=workflow_id).delete()


# ---- form configs, models, custom nodes (staff) ----------------------------------------------

def _create_unique(model: Any, *, label: str, name: str, **fields: Any) -> Any:
    try:
        with transaction.atomic():
            return model.objects.create(name=name, **fields)
    except IntegrityError:
        raise Conflict(f"A {label} named '{name}' already exists.",
                       details={"name": ["Already exists."]}) from None


def form_config_create(*, name: str, data: Any) -> FormConfig:
    return _create_unique(FormConfig, label="form config", name=name, data=data)


@transaction.atomic
def form_config_update(*, form_config_id: UUID | str, name: str | None = None,
                       data: Any = ...) -> FormConfig:
    """Set a form config's name and/or data (the data is replaced whole)."""
    fc = get_or_not_found(FormConfig.objects.select_for_update(), label="Form config",
                          pk=form_config_id)
    if name is not None and name != fc.name:
        if FormConfig.objects.filter(name=name).exclude(pk=fc.pk).exists():
            raise Conflict(f"A form config named '{name}' already exists.",
                           details={"name": ["Already exists."]})
        fc.name = name
    if data is not ...:
        fc.data = data
    fc.save()
    return fc


@transaction.atomic
def form_config_delete(*, form_config_id: UUID | str) -> None:
    get_or_not_found(FormConfig.objects.all(), label="Form config", pk=form_config_id).delete()


def model_create(*, name: str, **fields: Any) -> AIModel:
    return _create_unique(AIModel, label="model", name=name, **fields)


def custom_node_create(*, name: str, **fields: Any) -> CustomNode:
    return _create_unique(CustomNode, label="custom node", name=name, **fields)


# ---- users' secrets ---------------------------------------------------------------------------

@transaction.atomic
def secret_set(*, user: Any, workflow_name: str, value: str) -> UserApiSecret:
    """Store (or replace) the user's key for a workflow, encrypted; NotFound for a workflow the
    user cannot see."""
    visible = Workflow.objects.all() if user.is_staff else Workflow.objects.filter(display=True)
    if not visible.filter(name=workflow_name).exists():
        raise NotFound("Workflow not found.", details={"workflow_name": ["No such workflow."]})
    secret, _ = UserApiSecret.objects.update_or_create(
        user=user, workflow_name=workflow_name,
        defaults={"encrypted_value": secrets.encrypt(value)})
    return secret


@transaction.atomic
def secret_delete(*, user: Any, workflow_name: str) -> None:
    deleted, _ = UserApiSecret.objects.filter(user=user, workflow_name=workflow_name).delete()
    if not deleted:
        raise NotFound("Secret not found.", details={"workflow_name": ["No secret stored."]})


# ---- the component-library importer ----------------------------------------------------------

# output types by `form.config.componentGroup`, for new rows of executable types (staff can
# change them in admin); existing rows keep theirs
_GROUP_MIME = {"image": "image/png", "video": "video/mp4", "text": "text/plain",
               "audio": "audio/mpeg"}
# file -> data key
_DATA_FILES = {"form.json": "form", "inputs.json": "inputs", "test.json": "test",
               "workflow.json": "workflow", "api.json": "api", "body.json": "body",
               "job.json": "job", "required_models.json": "models"}


def _component_type(files: set[str]) -> str | None:
    """The type the files present imply (SPEC section 5), or None when they fit no type."""
    if "form.json" in files:
        if "job.json" in files:
            return Workflow.Type.DIRECT_JOB
        if "workflow.json" in files:
            return Workflow.Type.COMFY_WORKFLOW
        if "api.json" in files:
            return Workflow.Type.FETCH_API
        return None
    if "credits.js" in files and not files & {"workflow.json", "api.json", "job.json"}:
        return Workflow.Type.BASIC
    return None


def _read_component(folder: Path) -> tuple[str, dict[str, Any]]:
    """`(type, data)` of one component folder, or ValueError saying what is wrong."""
    files = {p.name for p in folder.iterdir() if p.is_file()}
    wf_type = _component_type(files)
    if wf_type is None:
        raise ValueError("fits no component type (needs form.json with workflow.json, api.json "
                         "or job.json, or credits.js alone)")
    data: dict[str, Any] = {}
    for filename, key in _DATA_FILES.items():
        if filename not in files:
            continue
        try:
            data[key] = json.loads((folder / filename).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{filename} is not valid JSON ({exc})") from None
    if "form" in data and not isinstance(data["form"], dict):
        raise ValueError("form.json must hold an object")
    if "credits.js" in files:
        try:
            data["credits_script"] = (folder / "credits.js").read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError("credits.js is not UTF-8 text") from None
    return wf_type, data


def _import_form_confs(folder: Path, report: dict[str, Any]) -> None:
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report["skipped"].append({"name": f"_form_confs/{path.name}",
                                      "reason": f"not valid JSON ({exc})"})
            continue
        with transaction.atomic():
            FormConfig.objects.update_or_create(name=path.stem, defaults={"data": data})
        report["form_configs"].append(path.stem)


def _upsert_component(name: str, wf_type: str, data: dict[str, Any]) -> str:
    """Create or update one workflow by name; returns created, updated or unchanged."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(name=name).first()
        if workflow is None:
            group = ((data.get("form") or {}).get("config") or {}).get("componentGroup")
            mime = (_GROUP_MIME.get(group) if isinstance(group, str)
                    and wf_type in Workflow.EXECUTABLE_TYPES else None)
            Workflow.objects.create(name=name, label=name, type=wf_type, data=data,
                                    output_mime_type=mime)
            return "created"
        # keys the folder does not hold (output_node_id, settings made in admin) are kept
        merged = {**(workflow.data or {}), **data}
        if merged == workflow.data and workflow.type == wf_type:
            return "unchanged"
        workflow.data = merged
        workflow.type = wf_type
        workflow.save(update_fields=["data", "type", "updated_at"])
        return "updated"


def components_import(path: str | Path) -> dict[str, Any]:
    """Import a component-library folder: one workflow per sub-folder (upserted by name) and
    `_form_confs/*.json` as form configs. A broken folder is reported by name and skipped; the
    others still import. Idempotent: a second run reports everything unchanged."""
    root = Path(path)
    if not root.is_dir():
        raise ValidationFailed(f"{root} is not a folder.", details={"path": ["Not a folder."]})
    report: dict[str, Any] = {"created": [], "updated": [], "unchanged": [], "skipped": [],
                              "form_configs": []}
    confs = root / "_form_confs"
    if confs.is_dir():
        _import_form_confs(confs, report)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")):
            continue
        try:
            wf_type, data = _read_component(folder)
        except (ValueError, OSError) as exc:
            report["skipped"].append({"name": folder.name, "reason": str(exc)})
            continue
        report[_upsert_component(folder.name, wf_type, data)].append(folder.name)
    return report
