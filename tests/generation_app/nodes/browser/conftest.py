"""Fixtures of the browser node tests: real Chromium, real loopback HTTP, no Django."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from generation_app.nodes.base import RunContext

GOLDEN_HASH = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """These tests use neither Redis nor Django: the suite-wide cleanup does not apply here."""


@pytest.fixture
def make_ctx() -> Callable[..., RunContext]:
    def make(
        hash: str = GOLDEN_HASH,
        *,
        seed: int = 2160853444,
        variables: Mapping[str, Any] | None = None,
        components: Mapping[int, Mapping[str, Any]] | None = None,
        aliases: Mapping[str, int] | None = None,
        stored: Mapping[str, bytes] | None = None,
        read_log: list[str] | None = None,
        node_name: str = "p5",
    ) -> RunContext:
        files = dict(stored or {})

        def read_output(key: str) -> bytes:
            if read_log is not None:
                read_log.append(key)
            return files[key]

        return RunContext(
            user_id="u1",
            job_id="j1",
            gid=0,
            step_id=7,
            node_name=node_name,
            alias=None,
            hash=hash,
            seed=seed,
            variables=dict(variables or {}),
            components=dict(components or {}),
            aliases=dict(aliases or {}),
            read_output=read_output,
        )

    return make


def png_of(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


def solid_png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


class RecordingServer:
    """A loopback HTTP server that answers 200 and records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorded.append(self.path)
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture(autouse=True, scope="module")
def _close_browser_after_module() -> Iterator[None]:
    """Playwright's sync API keeps an asyncio loop on this thread while a browser is open, which
    Django's async-safety check would trip over in the database tests that run after these."""
    yield
    from generation_app.nodes.browser import renderer

    renderer.shutdown()
