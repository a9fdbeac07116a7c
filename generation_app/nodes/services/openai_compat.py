"""direct_job handlers for an OpenAI-compatible server: chat text and image generation.

The endpoint is trusted (staff configure it): the workflow's own `data.job.payload.base_url` if
staff put one there, else `OPENAI_BASE_URL` from the platform config (or the environment). The key
is `OPENAI_API_KEY`, or the environment variable a workflow names in `data.job.payload.api_key_env`.
Both are read from the staff-defined workflow, never from the filled payload, so a form value
mapped onto `base_url` cannot redirect the request.

Payload keys (staff defaults, filled from the form):
  text:  `prompt` (or `messages`), `system_prompt`?, `model`?, and OpenAI's sampling options
  image: `prompt`, `model`?, `size`?, `quality`?, `style`?, `response_format`?, ...
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.direct_job import HandlerResult
from generation_app.nodes.fetch_api import Upstream, redact

__all__ = ["HandlerResult", "image_handler", "text_handler"]

DEFAULT_TEXT_MODEL = "gpt-4o-mini"
DEFAULT_IMAGE_MODEL = "gpt-image-1"
DEFAULT_TIMEOUT_S = 120.0
SNIPPET_CHARS = 200
TEXT_OPTIONS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "user",
)
IMAGE_OPTIONS = (
    "size",
    "quality",
    "style",
    "response_format",
    "background",
    "output_format",
    "n",
    "moderation",
    "user",
)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    timeout: float


def text_handler(payload: dict[str, Any], ctx: RunContext) -> HandlerResult:
    """`POST {base}/chat/completions`; the answer's first message is the text."""
    endpoint = _endpoint(ctx)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        prompt = payload.get("prompt")
        if prompt in (None, ""):
            raise NodeError("The text job has no prompt")
        messages = []
        if payload.get("system_prompt"):
            messages.append({"role": "system", "content": str(payload["system_prompt"])})
        messages.append({"role": "user", "content": str(prompt)})
    body: dict[str, Any] = {
        "model": payload.get("model") or _setting(ctx, "OPENAI_MODEL") or DEFAULT_TEXT_MODEL,
        "messages": messages,
    }
    body.update({key: payload[key] for key in TEXT_OPTIONS if payload.get(key) is not None})
    answer = _post(endpoint, "/chat/completions", body)
    try:
        choice = answer["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise NodeError(
            "The text service answered without a message", failure_type="UPSTREAM_ERROR"
        ) from None
    if choice.get("finish_reason") == "content_filter" or (
        not content and choice.get("message", {}).get("refusal")
    ):
        raise NodeError("The text service refused the prompt", failure_type="GENERATION_REFUSAL")
    text = "" if content is None else str(content)
    return HandlerResult(text=text, mime_type="text/plain", data={**answer, "text": text})


def image_handler(payload: dict[str, Any], ctx: RunContext) -> HandlerResult:
    """`POST {base}/images/generations`; the first image (b64_json, or a URL fetched) is the file."""
    endpoint = _endpoint(ctx)
    prompt = payload.get("prompt")
    if prompt in (None, ""):
        raise NodeError("The image job has no prompt")
    body: dict[str, Any] = {
        "model": payload.get("model") or _setting(ctx, "OPENAI_IMAGE_MODEL") or DEFAULT_IMAGE_MODEL,
        "prompt": str(prompt),
    }
    body.update({key: payload[key] for key in IMAGE_OPTIONS if payload.get(key) is not None})
    answer = _post(endpoint, "/images/generations", body)
    try:
        image = answer["data"][0]
    except (KeyError, IndexError, TypeError):
        raise NodeError(
            "The image service answered without an image", failure_type="UPSTREAM_ERROR"
        ) from None
    if not isinstance(image, Mapping):
        raise NodeError(
            "The image service answered without an image", failure_type="UPSTREAM_ERROR"
        )
    if image.get("b64_json"):
        try:
            content = base64.b64decode(str(image["b64_json"]), validate=True)
        except (binascii.Error, ValueError):
            raise NodeError(
                "The image service sent an image that is not base64", failure_type="UPSTREAM_ERROR"
            ) from None
        mime = _sniff(content)
    elif image.get("url"):
        content, mime = _download(str(image["url"]), endpoint, ctx)
        mime = _sniff(content) if mime in ("", "application/octet-stream") else mime
    else:
        raise NodeError(
            "The image service answered without an image", failure_type="UPSTREAM_ERROR"
        )
    data = {key: value for key, value in answer.items() if key != "data"}
    data["revised_prompt"] = image.get("revised_prompt")
    return HandlerResult(content=content, mime_type=mime, data=data)


# ---- the endpoint ------------------------------------------------------------------------------


def _setting(ctx: RunContext, key: str) -> str:
    value = ctx.config.get(key)
    if value in (None, ""):
        value = os.environ.get(key, "")
    return str(value)


def _staff_payload(ctx: RunContext) -> Mapping[str, Any]:
    job = ((ctx.workflow or {}).get("data") or {}).get("job") or {}
    payload = job.get("payload") if isinstance(job, Mapping) else None
    return payload if isinstance(payload, Mapping) else {}


def _endpoint(ctx: RunContext) -> Endpoint:
    staff = _staff_payload(ctx)
    base_url = str(staff.get("base_url") or _setting(ctx, "OPENAI_BASE_URL")).rstrip("/")
    if not base_url:
        raise NodeError(
            "No OpenAI-compatible endpoint is configured (set OPENAI_BASE_URL)",
            failure_type="INTERNAL",
        )
    key_env = staff.get("api_key_env")
    api_key = os.environ.get(str(key_env), "") if key_env else _setting(ctx, "OPENAI_API_KEY")
    try:
        timeout = float(_setting(ctx, "OPENAI_TIMEOUT_SECONDS") or DEFAULT_TIMEOUT_S)
    except ValueError:
        timeout = DEFAULT_TIMEOUT_S
    return Endpoint(base_url=base_url, api_key=api_key, timeout=timeout)


def _post(endpoint: Endpoint, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    what = f"{path.strip('/')} request"
    try:
        # The endpoint is staff-configured, hence trusted: no SSRF guard (as for ComfyUI servers).
        response = httpx.post(
            endpoint.base_url + path, json=dict(body), headers=headers, timeout=endpoint.timeout
        )
    except httpx.TimeoutException:
        raise NodeError(f"The {what} timed out", retryable=True, failure_type="TIMEOUT") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise NodeError("OPENAI_BASE_URL is not a valid URL", failure_type="INTERNAL") from None
    except httpx.HTTPError as exc:
        raise NodeError(f"The {what} failed: {type(exc).__name__}", retryable=True) from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise NodeError(
            f"The {what} got HTTP {status}: {_snippet(response, endpoint)}", retryable=True
        )
    if status >= 400:
        failure = "GENERATION_REFUSAL" if _is_refusal(response) else "UPSTREAM_ERROR"
        raise NodeError(
            f"The {what} got HTTP {status}: {_snippet(response, endpoint)}", failure_type=failure
        )
    try:
        answer = response.json()
    except ValueError:
        raise NodeError(
            f"The {what} got an answer that is not JSON", failure_type="UPSTREAM_ERROR"
        ) from None
    if not isinstance(answer, dict):
        raise NodeError(
            f"The {what} got an answer that is not an object", failure_type="UPSTREAM_ERROR"
        )
    return answer


def _download(url: str, endpoint: Endpoint, ctx: RunContext) -> tuple[bytes, str]:
    """An image URL from the service, fetched through the SSRF guard.

    The URL comes from the service's answer, so it is vetted; the service's own host is trusted
    as the service itself is. The key is not sent: the image may live on another host.
    """
    parts = urlsplit(endpoint.base_url)
    trusted = [parts.netloc.lower()] if parts.netloc else []
    allow = [*(ctx.config.get("OUTBOUND_ALLOW_HOSTS") or ()), *trusted]
    with Upstream(
        allow_hosts=allow,
        secrets=[endpoint.api_key] if endpoint.api_key else [],
        timeout=endpoint.timeout,
    ) as http:
        response = http.download(url, what="image download")
    return response.content, response.mime_type


def _snippet(response: httpx.Response, endpoint: Endpoint) -> str:
    text = " ".join(response.text.split())
    return redact(text, [endpoint.api_key] if endpoint.api_key else [])[:SNIPPET_CHARS]


def _is_refusal(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") in (
        "content_policy_violation",
        "moderation_blocked",
        "content_filter",
    )


def _sniff(content: bytes) -> str:
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    if content[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"
