"""Writes for workflows and what they need: staff curation and users' own third-party secrets.
Each public function is one transaction. The component-library importer is `components.py`,
ComfyUI servers (register, check) `servers.py`; both are re-exported here."""

from __future__ import annotations

from collections.abc import Mapping
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


# re-exported last: the submodules import nothing from this module
from workflows_app.services.components import (  # noqa: E402
    components_import,
    components_import_zip,
)
from workflows_app.services.servers import server_check, server_create  # noqa: E402

__all__ = [
    "WORKFLOW_FIELDS", "components_import", "components_import_zip", "custom_node_create",
    "form_config_create", "form_config_delete", "form_config_update", "model_create",
    "secret_delete", "secret_set", "server_check", "server_create", "workflow_create",
    "workflow_delete", "workflow_update",
]
