"""A third-party HTTP API on loopback, for fetch_api tests: a `wait` API, a polling API, files.

    with HttpApiPeer() as api:      # 127.0.0.1, a random free port, its own threads
        api.url + "/wait"           # POST -> {"output": {"url": "<api.url>/files/x.png"}}
        api.png                     # the bytes /files/x.png serves (a real PNG, made with Pillow)

Routes:
    POST /wait[?status=N]           {"output": {"url": ".../files/x.png", "text": "hello"}}
    POST /jobs?polls=N&outcome=succeeded|failed|never
                                    201 {"id", "urls": {"get": ".../jobs/<id>"}}
    GET  /jobs/<id>                 {"status": "running"} for the first N polls, then
                                    {"status": "succeeded", "result": {"url": ...}} or
                                    {"status": "failed", "error": "..."}; "never" runs forever
    ANY  /status/<code>             that status, echoing the request's headers in the body (as some
                                    APIs do: a test that secrets are redacted from errors)
    POST /flaky?fail=N              503 for the first N calls, then as /wait
    GET  /files/x.png               the PNG; other /files/ names are 404

`requests` records every request (method, path, query, headers, body); `count()` filters them.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class _Job:
    polls_needed: int
    outcome: str
    polls: int = 0


@dataclass
class HttpApiPeer:
    png: bytes = field(default_factory=lambda: _png((24, 16), (51, 102, 153)))
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        self._flaky: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name="http-api-peer"
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> HttpApiPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpApiPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, method: str | None = None, prefix: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(prefix)
            )

    def recorded(self, prefix: str = "") -> Iterator[Recorded]:
        with self._lock:
            items = list(self.requests)
        return (r for r in items if r.path.startswith(prefix))

    # ---- routes ---------------------------------------------------------------------------------

    def handle(self, req: Recorded) -> tuple[int, str, bytes]:
        with self._lock:
            self.requests.append(req)
        parts = [p for p in req.path.split("/") if p]
        if req.method == "POST" and req.path == "/wait":
            return _json(int(req.query.get("status", "200")), self._wait_answer())
        if req.method == "POST" and req.path == "/flaky":
            key = req.query.get("key", "")
            with self._lock:
                seen = self._flaky.get(key, 0)
                self._flaky[key] = seen + 1
            if seen < int(req.query.get("fail", "1")):
                return _json(503, {"error": "try again"})
            return _json(200, self._wait_answer())
        if req.method == "POST" and req.path == "/jobs":
            job_id = f"job-{next(self._ids)}"
            with self._lock:
                self._jobs[job_id] = _Job(
                    polls_needed=int(req.query.get("polls", "3")),
                    outcome=req.query.get("outcome", "succeeded"),
                )
            return _json(201, {"id": job_id, "urls": {"get": f"{self.url}/jobs/{job_id}"}})
        if req.method == "GET" and len(parts) == 2 and parts[0] == "jobs":
            return self._poll(parts[1])
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            return _json(
                int(parts[1]),
                {
                    "error": "as requested",
                    "authorization": req.headers.get("authorization"),
                    "echo": req.headers,
                },
            )
        if req.method == "GET" and req.path == "/files/x.png":
            return 200, "image/png", self.png
        return _json(404, {"error": "not found"})

    def _wait_answer(self) -> dict[str, Any]:
        return {"output": {"url": f"{self.url}/files/x.png", "text": "hello"}}

    def _poll(self, job_id: str) -> tuple[int, str, bytes]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return _json(404, {"error": "no such job"})
            job.polls += 1
            done = job.outcome != "never" and job.polls > job.polls_needed
        if not done:
            return _json(200, {"id": job_id, "status": "running"})
        if job.outcome == "failed":
            return _json(200, {"id": job_id, "status": "failed", "error": "the model gave up"})
        return _json(
            200, {"id": job_id, "status": "succeeded", "result": {"url": f"{self.url}/files/x.png"}}
        )


def _png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.putpixel((0, 0), (255, 255, 255))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def _handler_for(peer: HttpApiPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                method=self.command,
                path=split.path,
                query={k: v[-1] for k, v in parse_qs(split.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            status, content_type, content = peer.handle(recorded)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    return Handler
