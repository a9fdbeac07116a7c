"""`direct_job`: a job for a service plugin, run on that service's own queue (SPEC section 4).

`workflow.data["job"]` = `{"service_required", "priority"?, "payload": {...defaults},
"output_field"?}` and `data["inputs"]` = `[{"id", "pathJq", "is_required"?}]`: the step's form
values are written into a copy of the payload, and the service's handler (looked up in
`generation_app.nodes.services`) is called in-process: the registry already put this step on the
queue `service.<service_required>`, so the worker running it is the service's worker.

A handler is `handler(payload, ctx) -> HandlerResult` and raises NodeError like any node. The
step's output is the text at `output_field` of the handler's data, else its file, else its text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile
from generation_app.nodes.fetch_api import (
    extension_for,
    fill_template,
    form_values,
    jq_first,
    safe_filename,
)


@dataclass(frozen=True)
class HandlerResult:
    """What a service handler produced: text, or a file's bytes, plus structured data.

    `data` is the service's answer as JSON-like data; a workflow's `output_field` picks the step
    output from it (a dotted path such as `choices.0.message.content`, or a jq expression).
    """

    text: str | None = None
    content: bytes | None = None
    mime_type: str = "text/plain"
    data: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[dict[str, Any], RunContext], HandlerResult]


class DirectJobNode(Node):
    """Fills the job payload from the form and runs the service's handler."""

    name: ClassVar[str] = "direct_job"
    version: ClassVar[str] = "1"
    # an outside service: served from the cache only when its workflow says `"cacheable": true`
    deterministic: ClassVar[bool] = False

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        workflow = ctx.workflow
        if not workflow:
            raise NodeError("direct_job ran without its workflow", failure_type="INTERNAL")
        wf_name = str(workflow.get("name") or "direct_job")
        data = workflow.get("data") or {}
        job = data.get("job")
        if not isinstance(job, Mapping):
            raise NodeError(f"Workflow {wf_name} has no job template (data.job)")
        service = str(job.get("service_required") or "")
        handler = _handler(service, wf_name)
        defaults = job.get("payload") or {}
        if not isinstance(defaults, Mapping):
            raise NodeError(f"Workflow {wf_name}: data.job.payload must be an object")
        values = form_values(payload, data.get("form"))
        filled = fill_template(dict(defaults), data.get("inputs"), values, seed=ctx.seed)
        ctx.report_progress(0.1)
        result = handler(filled, ctx)
        ctx.report_progress(0.95)
        return _output(result, job.get("output_field"), workflow)


def _handler(service: str, wf_name: str) -> Handler:
    from generation_app.nodes.services import SERVICE_HANDLERS, load_handler

    if service not in SERVICE_HANDLERS:
        known = ", ".join(sorted(SERVICE_HANDLERS)) or "none"
        raise NodeError(
            f"Workflow {wf_name} needs the unknown service {service!r} (known: {known})"
        )
    handler: Handler = load_handler(service)
    return handler


def _output(result: HandlerResult, output_field: Any, workflow: Mapping[str, Any]) -> NodeOutput:
    name = safe_filename(str(workflow.get("name") or "direct_job"))
    if output_field not in (None, ""):
        value = _pick(result.data, str(output_field))
        if value in (None, ""):
            raise NodeError(
                f"The service's answer has no {output_field!r}", failure_type="UPSTREAM_ERROR"
            )
        return _text_output(value if isinstance(value, str) else str(value), name)
    if result.content is not None:
        mime = result.mime_type or str(workflow.get("output_mime_type") or "")
        filename = name + extension_for(mime, "")
        stored = StoredFile(filename=filename, content=result.content, mime_type=mime)
        return NodeOutput(mime_type=mime, files=[stored], src_file=filename)
    if result.text is None:
        raise NodeError(
            "The service answered with neither text nor a file", failure_type="UPSTREAM_ERROR"
        )
    return _text_output(result.text, name)


def _text_output(text: str, name: str) -> NodeOutput:
    filename = f"{name}.txt"
    stored = StoredFile(filename=filename, content=text.encode(), mime_type="text/plain")
    return NodeOutput(mime_type="text/plain", data=text, files=[stored], src_file=filename)


def _pick(data: Any, path: str) -> Any:
    """`data` at a dotted path (`choices.0.message.content`), or a jq expression's first result."""
    if path.startswith("."):
        return jq_first(path, data, what="output_field")
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
    return current
