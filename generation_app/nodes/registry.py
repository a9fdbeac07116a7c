"""Which Node class runs a step, and on which queue. Classes are imported on first use, so
Chromium, ComfyUI and HTTP clients load only in processes whose graphs need them."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import import_module
from typing import Any

from generation_app.nodes.base import Node

BUILTIN_NODES: dict[str, str] = {
    "prompt": "generation_app.nodes.prompt:PromptNode",
    "js": "generation_app.nodes.browser.js_node:JsNode",
    "p5": "generation_app.nodes.browser.p5_node:P5Node",
    "p52vid": "generation_app.nodes.browser.p52vid_node:P52VidNode",
}
WORKFLOW_NODES: dict[str, str] = {
    "comfy_workflow": "generation_app.nodes.comfy.node:ComfyWorkflowNode",
    "fetch_api": "generation_app.nodes.fetch_api:FetchApiNode",
    "direct_job": "generation_app.nodes.direct_job:DirectJobNode",
}
BROWSER_NODES = frozenset({"js", "p5", "p52vid"})
VARIABLES_NODE = "variables"
VARIABLES_STEP_ID = 953


@cache
def _load(dotted: str) -> type[Node]:
    module_path, _, attr = dotted.partition(":")
    cls = getattr(import_module(module_path), attr)
    assert isinstance(cls, type) and issubclass(cls, Node)
    return cls


def node_class(node_name: str, workflow_type: str | None) -> type[Node]:
    """The class for a built-in name, or for a workflow of `workflow_type`."""
    if node_name in BUILTIN_NODES:
        return _load(BUILTIN_NODES[node_name])
    if workflow_type is None or workflow_type not in WORKFLOW_NODES:
        raise KeyError(node_name)
    return _load(WORKFLOW_NODES[workflow_type])


def queue_for(node_name: str, payload: Mapping[str, Any], workflow: Mapping[str, Any] | None) -> str:
    """The Celery queue a step runs on (decided when the job is created)."""
    if node_name in BROWSER_NODES:
        return "browser"
    if node_name == "prompt":
        return "io" if _truthy(payload.get("llmEnable")) else "engine"
    if workflow is not None and workflow.get("type") == "direct_job":
        job = (workflow.get("data") or {}).get("job") or {}
        return f"service.{job.get('service_required', 'default')}"
    return "io"


def runs_inline(node_name: str, payload: Mapping[str, Any]) -> bool:
    """Cheap built-ins run inside the engine task that found them ready."""
    return node_name == "prompt" and not _truthy(payload.get("llmEnable"))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
