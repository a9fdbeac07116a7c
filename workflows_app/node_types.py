"""What a node type is, declared once: one descriptor per type (pure data, no Django, no imports
of the node classes themselves).

Every module that needs to know something about a node type asks here: the engine's registry
(`generation_app/nodes/registry.py`, which imports a class from `class_path` on first use), the
planner (queue, inline), GenerationInput validation (`#id` mentions, component readers), the
unified API (the payload keys a built-in reads) and quotes (a built-in's cost). It lives in
workflows_app because a workflow *is* a staff-defined node type, and both collections_app and
generation_app may import it.

A new node type is one module under `generation_app/nodes/`, one descriptor here and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

# The pseudo-step that holds a generation's variable picks: `#953` / `{"$ref": 953}` read them.
VARIABLES_NODE: Final = "variables"
VARIABLES_STEP_ID: Final = 953

Payload = Mapping[str, Any]
Workflow = Mapping[str, Any]  # a workflow snapshot (generation_app.services.steps)


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _fixed(queue: str) -> Callable[[Payload, Workflow | None], str]:
    return lambda payload, workflow: queue


def _never(payload: Payload) -> bool:
    return False


@dataclass(frozen=True)
class NodeType:
    """One node type.

    `queue(payload, workflow)` is the Celery queue a step runs on and `inline(payload)` whether
    it runs inside the engine task that released it (both decided when the job is planned);
    `reads_all_components` means its page sees every earlier output, so it waits for all
    earlier steps. For built-ins, `inputs` are the payload keys the unified API accepts,
    `required_input` the one that must be a non-empty string, and `cost` what a step costs when
    no `basic` workflow of its name gives a credits script.
    """

    name: str
    class_path: str
    queue: Callable[[Payload, Workflow | None], str]
    inline: Callable[[Payload], bool] = _never
    reads_all_components: bool = False
    builtin: bool = True
    inputs: frozenset[str] = field(default_factory=frozenset)
    required_input: str | None = None
    cost: Decimal = Decimal(1)


def _prompt_queue(payload: Payload, workflow: Workflow | None) -> str:
    return "io" if truthy(payload.get("llmEnable")) else "engine"


def _service_queue(payload: Payload, workflow: Workflow | None) -> str:
    job = ((workflow or {}).get("data") or {}).get("job") or {}
    return f"service.{job.get('service_required', 'default')}"


BUILTIN: Final[dict[str, NodeType]] = {t.name: t for t in (
    NodeType("prompt", "generation_app.nodes.prompt:PromptNode", queue=_prompt_queue,
             inline=lambda payload: not truthy(payload.get("llmEnable")),
             inputs=frozenset({"prompt", "llmEnable", "llmPrompt", "llmTemperature"}),
             required_input="prompt"),
    NodeType("js", "generation_app.nodes.browser.js_node:JsNode", queue=_fixed("browser"),
             reads_all_components=True,
             inputs=frozenset({"body", "style", "script", "outputMimetype"})),
    NodeType("p5", "generation_app.nodes.browser.p5_node:P5Node", queue=_fixed("browser"),
             reads_all_components=True, inputs=frozenset({"code"}), required_input="code"),
    NodeType("p52vid", "generation_app.nodes.browser.p52vid_node:P52VidNode",
             queue=_fixed("browser"), reads_all_components=True,
             inputs=frozenset({"code", "duration"}), required_input="code"),
)}

# Staff-defined workflows run as the node type of their `type`.
WORKFLOW_TYPES: Final[dict[str, NodeType]] = {t.name: t for t in (
    NodeType("comfy_workflow", "generation_app.nodes.comfy.node:ComfyWorkflowNode",
             queue=_fixed("io"), builtin=False),
    NodeType("fetch_api", "generation_app.nodes.fetch_api:FetchApiNode", queue=_fixed("io"),
             builtin=False),
    NodeType("direct_job", "generation_app.nodes.direct_job:DirectJobNode",
             queue=_service_queue, builtin=False),
)}

# Names a step may use without a workflow of its own.
BUILTIN_NAMES: Final = frozenset(BUILTIN) | {VARIABLES_NODE}
COMPONENT_READERS: Final = frozenset(n for n, t in BUILTIN.items() if t.reads_all_components)


def node_type(node_name: str, workflow_type: str | None) -> NodeType:
    """The type of a built-in name, or of a workflow of `workflow_type`; KeyError otherwise."""
    if node_name in BUILTIN:
        return BUILTIN[node_name]
    if workflow_type is None or workflow_type not in WORKFLOW_TYPES:
        raise KeyError(node_name)
    return WORKFLOW_TYPES[workflow_type]


def queue_for(node_name: str, payload: Payload, workflow: Workflow | None) -> str:
    """The Celery queue a step runs on (decided when the job is planned)."""
    try:
        kind = node_type(node_name, (workflow or {}).get("type"))
    except KeyError:
        return "io"
    return kind.queue(payload, workflow)


def runs_inline(node_name: str, payload: Payload) -> bool:
    """Cheap built-ins run inside the engine task that found them ready."""
    kind = BUILTIN.get(node_name)
    return kind is not None and kind.inline(payload)
