"""The `prompt` node: rendered rich text, optionally rewritten by an OpenAI-compatible chat model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile

DEFAULT_SYSTEM_PROMPT = (
    "Rewrite the user's text as a vivid, detailed prompt for an image generator. "
    "Answer with the prompt only."
)


class PromptNode(Node):
    name = "prompt"
    version = "1"
    deterministic = True

    def cacheable(self, payload: Mapping[str, Any]) -> bool:
        # an LLM rewrite is not a function of its inputs: cached only when the workflow says so
        return not _truthy(payload.get("llmEnable"))

    def env_fingerprint(self, payload: Mapping[str, Any],
                        workflow: Mapping[str, Any] | None) -> dict[str, str]:
        return {"llm": "on"} if _truthy(payload.get("llmEnable")) else {}

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        # the runner has already rendered `$name` and `#<id>` mentions into plain text
        text = payload.get("prompt")
        text = "" if text is None else str(text)
        if _truthy(payload.get("llmEnable")):
            text = self._rewrite(text, payload, ctx)
        return NodeOutput(
            mime_type="text/plain",
            data=text,
            files=[StoredFile("prompt.txt", text.encode(), "text/plain")],
            src_file="prompt.txt",
        )

    def _rewrite(self, text: str, payload: Mapping[str, Any], ctx: RunContext) -> str:
        base_url = str(ctx.config.get("LLM_BASE_URL") or "")
        if not base_url:
            raise NodeError("The LLM rewrite is on but no LLM endpoint is configured "
                            "(set LLM_BASE_URL).", failure_type="VALIDATION_ERROR")
        try:
            temperature = float(payload.get("llmTemperature") or 0.7)
        except (TypeError, ValueError):
            raise NodeError("llmTemperature must be a number.") from None
        system = str(payload.get("llmPrompt") or DEFAULT_SYSTEM_PROMPT)
        headers = {"Content-Type": "application/json"}
        if ctx.config.get("LLM_API_KEY"):
            headers["Authorization"] = f"Bearer {ctx.config['LLM_API_KEY']}"
        body = {
            "model": ctx.config.get("LLM_MODEL") or "gpt-4o-mini",
            "temperature": temperature,
            "seed": ctx.seed,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
        timeout = float(ctx.config.get("LLM_TIMEOUT_SECONDS") or 60)
        try:
            # the endpoint is configured by staff, so it is trusted (no SSRF guard)
            response = httpx.post(base_url.rstrip("/") + "/chat/completions", json=body,
                                  headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise NodeError("The LLM endpoint timed out.", retryable=True,
                            failure_type="TIMEOUT") from None
        except httpx.HTTPError as exc:
            raise NodeError(f"The LLM endpoint is unreachable: {type(exc).__name__}.",
                            retryable=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise NodeError(f"The LLM endpoint answered {response.status_code}.", retryable=True)
        if response.status_code >= 400:
            raise NodeError(f"The LLM endpoint refused the request ({response.status_code}).",
                            failure_type="UPSTREAM_ERROR")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise NodeError("The LLM endpoint answered without a message.",
                            failure_type="UPSTREAM_ERROR") from None
        return str(content).strip()


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
