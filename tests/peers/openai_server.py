"""An OpenAI-compatible server on loopback: chat completions and image generations.

    with OpenAIPeer() as openai:               # 127.0.0.1, random free port
        openai.url                             # "http://127.0.0.1:<port>/v1" (OPENAI_BASE_URL)

Serves `POST {/v1,}/chat/completions` (also what the prompt node's `llmEnable` calls at
`{LLM_BASE_URL}/chat/completions`) and `POST {/v1,}/images/generations` (`b64_json` by default,
or `response_format: "url"` -> a URL of `/files/img.png` on this server), in OpenAI's formats.

Options:
    reply(body) -> str        the chat answer (default: "echo: " + the last user message)
    api_key                   when set, other bearer tokens get OpenAI's 401
    hold_until_inflight=N     hold every generation request until N of them are in flight at
                              once: a client that sends one at a time never gets there, and
                              receives 503 after `hold_timeout` seconds (the proof that work runs
                              in parallel; a sequential caller cannot pass)
    fail_next(status, n)      the next n generation requests get `status` with an OpenAI error body

`requests` records (path, headers, json body) of every request; `max_inflight` the most requests
that were being answered at once.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any


def echo_reply(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return "echo: " + str(users[-1].get("content") if users else "")


class OpenAIPeer:
    def __init__(
        self,
        *,
        reply: Callable[[dict[str, Any]], str] = echo_reply,
        api_key: str | None = None,
        hold_until_inflight: int = 0,
        hold_timeout: float = 10.0,
        image_color: tuple[int, int, int] = (200, 40, 90),
    ) -> None:
        self.reply = reply
        self.api_key = api_key
        self.hold_until_inflight = hold_until_inflight
        self.hold_timeout = hold_timeout
        self.requests: list[Recorded] = []
        self.inflight = 0
        self.max_inflight = 0
        self.png = _png(image_color)
        self._failures: list[tuple[int, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name="openai-peer"
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def start(self) -> OpenAIPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self.hold_until_inflight = 0
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAIPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        code: str = "server_error",
        message: str = "injected failure",
    ) -> None:
        error = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
        with self._cond:
            self._failures.extend([(status, error)] * count)

    def count(self, suffix: str = "") -> int:
        with self._cond:
            return sum(1 for r in self.requests if r.path.endswith(suffix))

    # ---- routes ---------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, str, bytes]:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _error(400, "invalid JSON body", "invalid_json")
        with self._cond:
            self.requests.append(Recorded(path=path, headers=headers, body=body))
        if method == "GET" and path == "/files/img.png":
            return 200, "image/png", self.png
        route = path.removeprefix("/v1")
        if method != "POST" or route not in ("/chat/completions", "/images/generations"):
            return _error(404, f"Unknown request URL: {method} {path}", "unknown_url")
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        with self._cond:
            if self._failures:
                status, error = self._failures.pop(0)
                return status, "application/json", json.dumps(error).encode()
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self._cond.notify_all()
        try:
            if not self._hold():
                return _error(503, "held: the other requests never arrived", "barrier_timeout")
            if route == "/chat/completions":
                return _json(self._chat(body))
            return _json(self._image(body))
        finally:
            with self._cond:
                self.inflight -= 1

    def _hold(self) -> bool:
        deadline = time.monotonic() + self.hold_timeout
        with self._cond:
            while self.hold_until_inflight and self.max_inflight < self.hold_until_inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self.reply(body)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "test-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _image(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("response_format") == "url":
            item = {"url": f"{self.root}/files/img.png"}
        else:
            item = {"b64_json": base64.b64encode(self.png).decode()}
        item["revised_prompt"] = str(body.get("prompt", ""))
        return {"created": int(time.time()), "data": [item]}


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _json(body: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def _error(status: int, message: str, code: str) -> tuple[int, str, bytes]:
    return _json(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        },
        status,
    )


def _handler_for(peer: OpenAIPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, content_type, content = peer.handle(
                self.command, self.path.split("?", 1)[0], headers, raw
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
