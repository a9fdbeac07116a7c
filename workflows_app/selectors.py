"""Reads for workflows. Workflows are shared definitions: consumers read them, staff write them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Q, QuerySet

from workflows_app.models import FormConfig, Workflow

# built-in nodes and the form their payload follows (None: no form validation)
BUILTIN_NODES = ("variables", "prompt", "js", "p5", "p52vid")


def workflow_list(*, include_hidden: bool = False) -> QuerySet[Workflow]:
    qs = Workflow.objects.select_related("server")
    return qs if include_hidden else qs.filter(display=True)


def workflows_by_name(*, names: Iterable[str]) -> dict[str, Workflow]:
    names = set(names)
    if not names:
        return {}
    return {w.name: w for w in Workflow.objects.select_related("server").filter(name__in=names)}


def node_form_lookup(*, names: Iterable[str]) -> Any:
    """A `node_form(name)` callable for GenerationInput validation: form dict, None, or False."""
    workflows = workflows_by_name(names=[n for n in names if n not in BUILTIN_NODES])

    def node_form(name: str) -> dict[str, Any] | None | bool:
        if name in BUILTIN_NODES:
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
