"""The `js` node: an HTML page with the generation's globals, screenshotted in Chromium.

Payload: `body` (HTML with `%style%` and `%script%` placeholders), `style`, `script`,
`outputMimetype` (optional). A placeholder written inside its element (`<style>%style%</style>`)
is filled with the text as it is; a bare one becomes a `<style>` / `<script>` element. Without a
`%script%` placeholder the script is appended to the page.

The screenshot (`js.png`, the 1024x1024 viewport) is taken once the page has loaded, its fonts
are ready and two animation frames have run. A script that needs longer (images, async work)
calls `deferCapture()` while loading and `capture()` when ready, within the time limit.

With `outputMimetype: "text/html"` the page itself (`js.html`) is the output and the screenshot
its `altSrc`. The stored page carries the generation's globals inline (hash, variables,
components, the pseudorandom helpers) on a real clock, so it runs the same way when opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile
from generation_app.nodes.browser import settings
from generation_app.nodes.browser.renderer import (
    DEFAULT_VIEWPORT,
    PageEnv,
    browser_env,
    job_output_resolver,
    screenshot_html,
)

DEFAULT_BODY = "<!doctype html>\n<html><head>%style%</head><body>%script%</body></html>"
HTML_MIMETYPE = "text/html"


class JsNode(Node):
    name: ClassVar[str] = "js"
    version: ClassVar[str] = "1"
    deterministic: ClassVar[bool] = True

    def env_fingerprint(self, payload: Mapping[str, Any],
                        workflow: Mapping[str, Any] | None) -> dict[str, str]:
        return browser_env()

    def __init__(
        self, *, timeout_s: float | None = None, viewport: tuple[int, int] = DEFAULT_VIEWPORT
    ) -> None:
        self.timeout_s = timeout_s
        self.viewport = viewport

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        """Screenshot the page to `js.png`; with outputMimetype text/html, also store `js.html`."""
        html = build_page(
            body=_text(payload, "body") or DEFAULT_BODY,
            style=_text(payload, "style"),
            script=_text(payload, "script"),
        )
        env = PageEnv.from_context(ctx)
        png = screenshot_html(
            html,
            env=env,
            resolve_url=job_output_resolver(ctx),
            timeout_s=self.timeout_s or settings.timeout_s(),
            viewport=self.viewport,
        )
        screenshot = StoredFile("js.png", png, "image/png")
        if str(payload.get("outputMimetype") or "").strip().lower() != HTML_MIMETYPE:
            return NodeOutput(mime_type="image/png", files=[screenshot], src_file="js.png")
        page = StoredFile("js.html", with_inline_globals(html, env).encode(), HTML_MIMETYPE)
        return NodeOutput(
            mime_type=HTML_MIMETYPE,
            files=[page, screenshot],
            src_file="js.html",
            alt_file="js.png",
        )


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NodeError(f"`{key}` must be a string", retryable=False)
    return value


def _fill(page: str, placeholder: str, tag: str, content: str) -> tuple[str, bool]:
    """Fill `%placeholder%` with content, wrapping it in <tag> unless it already sits in one."""
    token = f"%{placeholder}%"
    if token not in page:
        return page, False
    # Inside a raw-text element the only way out is its end tag; `<\/` reads the same in JS and CSS.
    safe = re.sub(rf"</(?={tag})", r"<\\/", content, flags=re.IGNORECASE)
    wrapped = re.compile(rf"(<{tag}\b[^>]*>\s*){re.escape(token)}(\s*</{tag}>)", re.IGNORECASE)
    page = wrapped.sub(lambda m: m.group(1) + safe + m.group(2), page)
    return page.replace(token, f"<{tag}>{safe}</{tag}>"), True


def build_page(*, body: str, style: str, script: str) -> str:
    """The page a js payload describes."""
    page, _ = _fill(body, "style", "style", style)
    page, placed = _fill(page, "script", "script", script)
    if not placed and script.strip():
        safe = re.sub(r"</(?=script)", r"<\\/", script, flags=re.IGNORECASE)
        page += f"\n<script>{safe}</script>\n"
    return page


def with_inline_globals(html: str, env: PageEnv) -> str:
    """The page with the page contract inlined first, for a stored page that runs on its own."""
    script = env.init_script(live=True)
    tag = f"<script>{script}</script>"
    head = re.search(r"<head\b[^>]*>", html, re.IGNORECASE)
    if head:
        return html[: head.end()] + tag + html[head.end() :]
    doctype = re.match(r"\s*<!doctype[^>]*>", html, re.IGNORECASE)
    at = doctype.end() if doctype else 0
    return html[:at] + tag + html[at:]


__all__ = ["JsNode", "build_page", "with_inline_globals"]
