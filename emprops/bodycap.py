"""A hard cap on request bodies, enforced as they arrive, before Django spools them.

Django's ASGI handler reads a whole body (to memory, then a temporary file) before any
middleware runs, so `BodySizeLimitMiddleware`'s finer per-route limits only answer once an
oversized upload has been received in full. This wraps the ASGI app: a declared Content-Length
over the cap is refused without reading the body, and a body sent without one (chunked) is
counted as it streams in and refused the moment it passes the cap.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[..., Awaitable[None]]


class BodyCap:
    """ASGI middleware: enveloped 413 for any body over `cap` bytes."""

    def __init__(self, app: App, cap: Callable[[], int]) -> None:
        self.app = app
        self.cap = cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap()
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await _too_large(send, cap)
            return
        received = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    await _too_large(send, cap)
                    # Django stops reading and answers nothing on a disconnect
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


async def _too_large(send: Send, cap: int) -> None:
    body = json.dumps({"data": None, "error": f"Request body too large: the limit is {cap} bytes.",
                       "details": {"limit": cap}, "request_id": uuid.uuid4().hex}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
