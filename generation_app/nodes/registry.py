"""Which Node class runs a step. What a node type is (queue, inline, inputs, cost) is declared
once in `workflows_app/node_types.py`; this module turns a descriptor's `class_path` into the
class. Classes are imported on first use, so Chromium, ComfyUI and HTTP clients load only in
processes whose graphs need them."""

from __future__ import annotations

from functools import cache
from importlib import import_module

from generation_app.nodes.base import Node
from workflows_app.node_types import (
    BUILTIN,
    VARIABLES_NODE,
    VARIABLES_STEP_ID,
    node_type,
    queue_for,
    runs_inline,
)

__all__ = ["BUILTIN", "VARIABLES_NODE", "VARIABLES_STEP_ID", "node_class", "queue_for",
           "runs_inline"]


@cache
def _load(dotted: str) -> type[Node]:
    module_path, _, attr = dotted.partition(":")
    cls = getattr(import_module(module_path), attr)
    assert isinstance(cls, type) and issubclass(cls, Node)
    return cls


def node_class(node_name: str, workflow_type: str | None) -> type[Node]:
    """The class for a built-in name, or for a workflow of `workflow_type` (KeyError otherwise)."""
    return _load(node_type(node_name, workflow_type).class_path)
