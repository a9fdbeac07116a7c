"""The user-content origin: generated outputs, served apart from the API, admin and gallery.

User-made active content (a `js` step's HTML, an SVG) must never run on the origin that holds
admin or gallery sessions: a script there could read admin pages and act with their CSRF
tokens. `make run` serves `/media/` from this small ASGI app on a second port
(`USER_CONTENT_ORIGIN`); in production the bucket or CDN is that origin and must send the same
headers (see README). Every response carries:

- `Content-Security-Policy: sandbox allow-scripts`: an artwork's own scripts run, in an opaque
  origin (no cookies, no storage, no same-origin access to anything, this origin included);
- `X-Content-Type-Options: nosniff`, so a file is only ever what its type says;
- `Cross-Origin-Resource-Policy: cross-origin`, so the admin and gallery can embed outputs.

Files are served by Starlette's StaticFiles (ETag, Last-Modified, Range requests for video,
no path traversal, no symlinks out of the folder). Only GET and HEAD are answered.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parent.parent
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", b"sandbox allow-scripts"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"referrer-policy", b"no-referrer"),
    (b"access-control-allow-origin", b"*"),
]
_REPLACED = {name for name, _ in SECURITY_HEADERS}
PREFIX = "/media/"


def media_root() -> Path:
    """MEDIA_ROOT as emprops/settings.py computes it (this process does not load Django)."""
    var_dir = Path(os.environ.get("EMPROPS_VAR_DIR", ROOT / "var"))
    return Path(os.environ.get("MEDIA_ROOT", var_dir / "media"))


class UserContentApp:
    """ASGI app: `/media/<key>` from the media folder, with the headers above on every answer."""

    def __init__(self, directory: Path) -> None:
        self.files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return

        async def send_secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in _REPLACED]
                message = {**message, "headers": headers + SECURITY_HEADERS}
            await send(message)

        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse("Method not allowed.", 405, headers={"Allow": "GET, HEAD"})
            await response(scope, receive, send_secured)
            return
        if not path.startswith(PREFIX):
            await PlainTextResponse("Not found.", 404)(scope, receive, send_secured)
            return
        inner = {**scope, "path": path[len(PREFIX) - 1 :], "root_path": ""}
        try:
            await self.files(inner, receive, send_secured)
        except HTTPException as exc:  # StaticFiles signals 404/405 by raising
            await PlainTextResponse(str(exc.detail), exc.status_code)(scope, receive, send_secured)


application = UserContentApp(media_root())
