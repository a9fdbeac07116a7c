"""`comfy_workflow`: fill the workflow's ComfyUI graph from the form and run it on its server."""

from __future__ import annotations

import mimetypes
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any, ClassVar

import httpx

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile
from generation_app.nodes.comfy.client import ComfyClient, OutputFile
from generation_app.nodes.comfy.graph import build_prompt_graph

# prompt_id = uuid5(namespace, run_key): the same node run always posts the same prompt id.
PROMPT_ID_NAMESPACE = uuid.UUID("6f1c3c9e-3b9a-4d55-9a55-2d1f0c6c0f11")

RenderFactory = Callable[[RunContext], Callable[[str], str]]


def prompt_id_for(ctx: RunContext) -> str:
    """The deterministic ComfyUI prompt id of this node run (stable across redeliveries)."""
    key = ctx.run_key or f"{ctx.job_id}:{ctx.gid}:{ctx.step_id}"
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, key))


class ComfyWorkflowNode(Node):
    """Runs `ctx.workflow`'s graph and stores every image of the output node's batch; the first
    (saved outputs before previews) is `src`, all of them are `src_files` in order."""

    name: ClassVar[str] = "comfy_workflow"
    version: ClassVar[str] = "1"
    # the seed is the generation's (or the payload's), so the graph is a function of the key
    deterministic: ClassVar[bool] = True
    default_timeout: ClassVar[float] = 1800.0

    def env_fingerprint(self, payload: Mapping[str, Any],
                        workflow: Mapping[str, Any] | None) -> dict[str, str]:
        """The server's name and what `/system_stats` says it runs (asked once a minute per
        process); "unknown" when it cannot be asked, which keeps the run out of the cache."""
        workflow = workflow or {}
        server = str(workflow.get("server") or "")
        url = workflow.get("server_url")
        stats = _system_stats(str(url)) if url else None
        if stats is None:
            return {"server": server, "comfyui": "unknown"}
        return {"server": server, **stats}

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
            # Every image of the batch the chosen output node saved (previews of other nodes are
            # not outputs); the first keeps the name it always had, the others get `_1`, `_2`...
            batch = [r for r in refs if (r.node_id, r.type) == (refs[0].node_id, refs[0].type)]
            outputs = [client.fetch(ref) for ref in batch]
        files = [
            StoredFile(filename=_filename(name, output, i), content=_without_text(output.content),
                       mime_type=output.mime_type)
            for i, output in enumerate(outputs)
        ]
        first = outputs[0]
        return NodeOutput(
            mime_type=first.mime_type,
            files=files,
            src_file=files[0].filename,
            src_files=[f.filename for f in files],
            extra={
                "comfy": {
                    "prompt_id": prompt_id,
                    "node_id": first.ref.node_id,
                    "filename": first.ref.filename,
                    "type": first.ref.type,
                }
            },
        )


_STATS_TTL_SECONDS = 60.0
_stats: dict[str, tuple[float, dict[str, str] | None]] = {}


def _system_stats(url: str) -> dict[str, str] | None:
    cached = _stats.get(url)
    if cached is not None and time.monotonic() - cached[0] < _STATS_TTL_SECONDS:
        return cached[1]
    found: dict[str, str] | None = None
    try:
        # staff-registered servers, usually private addresses: never via env proxies
        response = httpx.get(url.rstrip("/") + "/system_stats", timeout=5.0, trust_env=False)
        body = response.json() if response.status_code == 200 else None
        system = body.get("system") if isinstance(body, dict) else None
        if isinstance(system, dict) and system.get("comfyui_version"):
            devices = body.get("devices") if isinstance(body, dict) else None
            device = devices[0].get("type") or devices[0].get("name") \
                if isinstance(devices, list) and devices and isinstance(devices[0], dict) else None
            found = {"comfyui": str(system["comfyui_version"]),
                     "pytorch": str(system.get("pytorch_version") or "unknown"),
                     "device": str(device or "unknown")}
    except (httpx.HTTPError, ValueError):
        found = None
    _stats[url] = (time.monotonic(), found)
    return found


def _filename(name: str, output: OutputFile, index: int) -> str:
    suffix = PurePosixPath(output.ref.filename).suffix or (
        mimetypes.guess_extension(output.mime_type) or ".bin"
    )
    stem = _safe_name(name) if index == 0 else f"{_safe_name(name)}_{index}"
    return f"{stem}{suffix.lower()}"


def _without_text(content: bytes) -> bytes:
    # ComfyUI's SaveImage writes the whole API graph (staff-only, and any filled-in API key) and
    # the UI workflow into PNG text chunks: a stored output carries none of them
    return strip_png_text(content) if content.startswith(PNG_SIGNATURE) else content


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}


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
