"""`comfy_workflow`: fill the workflow's ComfyUI graph from the form and run it on its server."""

from __future__ import annotations

import mimetypes
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any, ClassVar

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile
from generation_app.nodes.comfy.client import ComfyClient
from generation_app.nodes.comfy.graph import build_prompt_graph

# prompt_id = uuid5(namespace, run_key): the same node run always posts the same prompt id.
PROMPT_ID_NAMESPACE = uuid.UUID("6f1c3c9e-3b9a-4d55-9a55-2d1f0c6c0f11")

RenderFactory = Callable[[RunContext], Callable[[str], str]]


def prompt_id_for(ctx: RunContext) -> str:
    """The deterministic ComfyUI prompt id of this node run (stable across redeliveries)."""
    key = ctx.run_key or f"{ctx.job_id}:{ctx.gid}:{ctx.step_id}"
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, key))


class ComfyWorkflowNode(Node):
    """Runs `ctx.workflow`'s graph; the first output file (saved outputs before previews) is `src`."""

    name: ClassVar[str] = "comfy_workflow"
    default_timeout: ClassVar[float] = 1800.0

    def __init__(
        self,
        *,
        render_prompt_factory: RenderFactory | None = None,
        timeout: float | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.render_prompt_factory = render_prompt_factory or _engine_renderer
        self.timeout = timeout
        self.client_options = dict(client_options or {})

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        workflow = ctx.workflow
        if not workflow:
            raise NodeError("comfy_workflow ran without its workflow", failure_type="INTERNAL")
        name = str(workflow.get("name") or "comfy_workflow")
        server_url = workflow.get("server_url")
        if not server_url:
            raise NodeError(f"Workflow {name} has no ComfyUI server")
        data = workflow.get("data") or {}
        graph = build_prompt_graph(
            data=data,
            values=payload,
            seed=ctx.seed,
            render_prompt=self.render_prompt_factory(ctx),
            user_secret=ctx.user_secret,
        )
        output_node_id = data.get("output_node_id")
        prompt_id = prompt_id_for(ctx)
        timeout = self.timeout or float(workflow.get("timeout") or self.default_timeout)
        with ComfyClient(str(server_url), timeout=timeout, **self.client_options) as client:
            refs = client.run(
                graph,
                prompt_id=prompt_id,
                output_node_id=str(output_node_id) if output_node_id not in (None, "") else None,
                on_progress=ctx.report_progress,
                is_cancelled=ctx.is_cancelled,
            )
            output = client.fetch(refs[0])
        suffix = PurePosixPath(output.ref.filename).suffix or (
            mimetypes.guess_extension(output.mime_type) or ".bin"
        )
        filename = f"{_safe_name(name)}{suffix.lower()}"
        content = output.content
        if _uses_api_key(data) and content.startswith(PNG_SIGNATURE):
            # ComfyUI writes the whole graph (with the filled-in API key) into the PNG's text
            # chunks; a stored output must not carry a user's secret
            content = strip_png_text(content)
        stored = StoredFile(filename=filename, content=content, mime_type=output.mime_type)
        return NodeOutput(
            mime_type=output.mime_type,
            files=[stored],
            src_file=filename,
            extra={
                "comfy": {
                    "prompt_id": prompt_id,
                    "node_id": output.ref.node_id,
                    "filename": output.ref.filename,
                    "type": output.ref.type,
                }
            },
        )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}


def _uses_api_key(data: Mapping[str, Any]) -> bool:
    inputs = data.get("inputs")
    if not isinstance(inputs, Mapping):
        return False
    return any(isinstance(spec, Mapping) and spec.get("type") == "api_key"
               for node in inputs.values() if isinstance(node, Mapping)
               for spec in node.values())


def strip_png_text(content: bytes) -> bytes:
    """The same PNG without its text chunks (pixel data untouched); malformed input unchanged."""
    out = bytearray(PNG_SIGNATURE)
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(content):
        length = int.from_bytes(content[pos:pos + 4], "big")
        kind = content[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(content):
            return content
        if kind not in _TEXT_CHUNKS:
            out += content[pos:end]
        pos = end
        if kind == b"IEND":
            return bytes(out)
    return content


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "comfy_workflow"


def _engine_renderer(ctx: RunContext) -> Callable[[str], str]:
    """The engine's rich-text rendering over this generation's variables and step outputs."""
    # Imported on use: the rules live in one place (the engine), and nodes stay importable alone.
    from generation_app.engine.richtext import render

    variables = {str(k): str(v) for k, v in ctx.variables.items() if v is not None}
    components = {
        int(step_id): str(output.get("data"))
        for step_id, output in ctx.components.items()
        if isinstance(output, Mapping) and output.get("data") is not None
    }

    def render_prompt(text: str) -> str:
        return render(text, variables=variables, components=components)

    return render_prompt
