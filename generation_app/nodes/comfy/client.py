"""A synchronous client for ComfyUI's own protocol (see comfyui-protocol.md beside SPEC.md).

One `run()` submits one API-format graph under a caller-chosen, deterministic `prompt_id` and waits
for it; a redelivered run with the same `prompt_id` re-attaches to the queued, running or finished
prompt instead of executing it twice. Failures are `NodeError`s: network trouble, 5xx and a dropped
websocket are retryable; ComfyUI's validation and execution errors are not.
"""

from __future__ import annotations

import json
import mimetypes
import struct
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from generation_app.nodes.base import NodeError

# Binary websocket events (protocol section 3).
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
_PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}

# Output kinds in history entries, and which file types are preferred (saved before previews).
_OUTPUT_KEYS = ("images", "gifs", "videos")
_TYPE_RANK = {"output": 0, "temp": 1}


@dataclass(frozen=True)
class BinaryFrame:
    """A decoded binary websocket frame (previews and progress text)."""

    event: int
    mime_type: str | None
    metadata: dict[str, Any] | None
    payload: bytes


def parse_binary_frame(frame: bytes) -> BinaryFrame | None:
    """Decode a binary frame; None for frames too short or malformed to make sense of."""
    if len(frame) < 8:
        return None
    event, word = struct.unpack_from(">II", frame)
    if event == PREVIEW_IMAGE:
        return BinaryFrame(event, _PREVIEW_FORMATS.get(word), None, frame[8:])
    if event in (PREVIEW_IMAGE_WITH_METADATA, TEXT):
        if word > len(frame) - 8:
            return None
        head, payload = frame[8 : 8 + word], frame[8 + word :]
        if event == TEXT:
            node_id = head.decode("utf-8", errors="replace")
            return BinaryFrame(event, "text/plain", {"node_id": node_id}, payload)
        try:
            metadata = json.loads(head)
        except ValueError:
            return None
        if not isinstance(metadata, dict):
            return None
        mime = metadata.get("image_type")
        return BinaryFrame(event, mime if isinstance(mime, str) else None, metadata, payload)
    return BinaryFrame(event, None, None, frame[4:])


@dataclass(frozen=True)
class OutputRef:
    """A file ComfyUI reports in a history entry's outputs."""

    node_id: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class OutputFile:
    """An output downloaded through `/view`."""

    ref: OutputRef
    content: bytes
    mime_type: str


class _Progress:
    """Turns execution_cached / progress_state / progress frames into one fraction 0..1."""

    def __init__(self, total_nodes: int, report: Callable[[float], None]) -> None:
        self.total = max(total_nodes, 1)
        self.report = report
        self.cached: set[str] = set()
        self.nodes: dict[str, float] = {}  # node id -> its own fraction done
        self.last = 0.0

    def on_cached(self, nodes: Any) -> None:
        if isinstance(nodes, list):
            self.cached.update(str(n) for n in nodes)
            self._emit()

    def on_state(self, nodes: Any) -> None:
        if not isinstance(nodes, dict):
            return
        for node_id, state in nodes.items():
            if not isinstance(state, dict):
                continue
            if state.get("state") == "finished":
                self.nodes[str(node_id)] = 1.0
            else:
                self._set(str(node_id), state.get("value"), state.get("max"))
        self._emit()

    def on_step(self, node_id: Any, value: Any, maximum: Any) -> None:
        if node_id is not None:
            self._set(str(node_id), value, maximum)
            self._emit()

    def _set(self, node_id: str, value: Any, maximum: Any) -> None:
        if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
            fraction = min(max(float(value) / float(maximum), 0.0), 1.0)
            self.nodes[node_id] = max(self.nodes.get(node_id, 0.0), fraction)

    def _emit(self) -> None:
        done = len(self.cached) + sum(f for n, f in self.nodes.items() if n not in self.cached)
        # 1.0 is reported only once the outputs are in hand
        fraction = min(done / self.total, 0.99)
        if fraction > self.last:
            self.last = fraction
            self.report(fraction)


class ComfyClient:
    """Talks to one ComfyUI server. Use as a context manager (it holds an HTTP connection pool)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 1800.0,
        request_timeout: float = 30.0,
        recv_timeout: float = 0.2,
        idle_check_interval: float = 10.0,
        max_poll_interval: float = 2.0,
        supports_preview_metadata: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.recv_timeout = recv_timeout
        self.idle_check_interval = idle_check_interval
        self.max_poll_interval = max_poll_interval
        self.supports_preview_metadata = supports_preview_metadata
        # ComfyUI servers are staff-registered, usually private addresses: never via env proxies.
        self._http = httpx.Client(
            base_url=self.base_url + "/", timeout=request_timeout, trust_env=False
        )

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ public API

    def run(
        self,
        graph: Mapping[str, Any],
        *,
        prompt_id: str,
        output_node_id: str | None = None,
        on_progress: Callable[[float], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        extra_data: Mapping[str, Any] | None = None,
    ) -> list[OutputRef]:
        """Run `graph` as `prompt_id` (or re-attach to it) and return its output files, best first.

        Raises NodeError: retryable for network trouble, 5xx and a dropped websocket; permanent for
        validation errors, node errors and execution errors (with ComfyUI's messages); "Cancelled"
        (failure_type INTERNAL) once `is_cancelled()` is true; failure_type TIMEOUT after `timeout`.
        """
        report = on_progress or (lambda _fraction: None)
        cancelled = is_cancelled or (lambda: False)
        deadline = time.monotonic() + self.timeout
        client_id = str(uuid.uuid4())
        # The websocket is open before anything is posted, so no event of ours can be missed.
        ws = self._open_websocket(client_id)
        with ws:  # (`as ws` would type it as the base Connection in some websockets releases)
            self._check(prompt_id, deadline, cancelled)
            # Queue before history: a prompt leaves the queue only once its history is written.
            queued = self._in_queue(prompt_id)
            entry = None if queued else self._history(prompt_id)
            if not queued and entry is None:
                self._submit(graph, prompt_id, client_id, extra_data)
                progress = _Progress(len(graph), report)
                self._wait_events(ws, prompt_id, progress, deadline, cancelled)
            if entry is None:
                # Re-attached to a prompt another socket owns (no events for us), or the events
                # ended and the history entry is being written: poll for it.
                entry = self._poll_history(prompt_id, deadline, cancelled)
        self._raise_for_failure(prompt_id, entry)
        refs = self._output_refs(prompt_id, entry, output_node_id)
        report(1.0)
        return refs

    def fetch(self, ref: OutputRef) -> OutputFile:
        """Download one output through `/view`."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        response = self._request("GET", "view", params=params)
        if response.status_code != 200:
            raise NodeError(
                f"ComfyUI at {self.base_url} answered {response.status_code} for output "
                f"{ref.filename!r} ({ref.type})"
            )
        mime = response.headers.get("content-type", "").split(";")[0].strip()
        if not mime or mime == "application/octet-stream":
            mime = mimetypes.guess_type(ref.filename)[0] or "application/octet-stream"
        return OutputFile(ref, response.content, mime)

    def cancel(self, prompt_id: str) -> None:
        """Drop the prompt from the queue and interrupt it if it runs; never a bare interrupt."""
        for path, body in (
            ("queue", {"delete": [prompt_id]}),
            ("interrupt", {"prompt_id": prompt_id}),
        ):
            try:
                self._request("POST", path, json=body)
            except NodeError:
                pass  # best effort: the server may already be gone

    # ------------------------------------------------------------------ steps

    def _submit(
        self,
        graph: Mapping[str, Any],
        prompt_id: str,
        client_id: str,
        extra_data: Mapping[str, Any] | None,
    ) -> None:
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = dict(extra_data)
        response = self._request("POST", "prompt", json=body)
        if response.status_code == 400:
            raise NodeError(_validation_message(self._json(response)))
        if response.status_code != 200:
            raise NodeError(
                f"ComfyUI at {self.base_url} answered {response.status_code} to POST /prompt"
            )
        answer = self._json(response)
        node_errors = answer.get("node_errors") if isinstance(answer, dict) else None
        if node_errors:
            # The valid outputs were queued anyway; a half-run graph is no use to us.
            self.cancel(prompt_id)
            raise NodeError(_validation_message({"node_errors": node_errors}))

    def _wait_events(
        self,
        ws: ClientConnection,
        prompt_id: str,
        progress: _Progress,
        deadline: float,
        is_cancelled: Callable[[], bool],
    ) -> None:
        """Read our websocket until the prompt's end marker (or success) arrives."""
        last_seen = time.monotonic()
        while True:
            self._check(prompt_id, deadline, is_cancelled)
            try:
                frame = ws.recv(timeout=self.recv_timeout)
            except TimeoutError:
                if time.monotonic() - last_seen > self.idle_check_interval:
                    # A long silence: make sure the prompt still exists somewhere.
                    last_seen = time.monotonic()
                    if self._history(prompt_id) is not None or not self._in_queue(prompt_id):
                        return
                continue
            except ConnectionClosed as exc:
                raise NodeError(
                    f"Lost the websocket to ComfyUI at {self.base_url} while prompt "
                    f"{prompt_id} was running ({exc})",
                    retryable=True,
                ) from exc
            if isinstance(frame, bytes):
                parse_binary_frame(frame)  # previews are not outputs; decoded only to be safe
                continue
            try:
                message = json.loads(frame)
            except ValueError:
                continue
            if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
                continue
            data: dict[str, Any] = message["data"]
            if data.get("prompt_id") != prompt_id:
                continue  # status broadcasts, the reconnect frame, other prompts
            last_seen = time.monotonic()
            kind = message.get("type")
            if kind == "executing" and data.get("node") is None:
                return
            if kind == "execution_success":
                return
            if kind == "execution_error":
                raise _execution_error(data)
            if kind == "execution_interrupted":
                raise _interrupted_error(data)
            if kind == "execution_cached":
                progress.on_cached(data.get("nodes"))
            elif kind == "progress_state":
                progress.on_state(data.get("nodes"))
            elif kind == "progress":
                progress.on_step(data.get("node"), data.get("value"), data.get("max"))

    def _poll_history(
        self, prompt_id: str, deadline: float, is_cancelled: Callable[[], bool]
    ) -> dict[str, Any]:
        delay = 0.05
        while True:
            self._check(prompt_id, deadline, is_cancelled)
            entry = self._history(prompt_id)
            if entry is not None:
                return entry
            if not self._in_queue(prompt_id):
                # The queue entry leaves only after the history entry is written; look again.
                entry = self._history(prompt_id)
                if entry is not None:
                    return entry
                raise NodeError(
                    f"ComfyUI at {self.base_url} lost prompt {prompt_id}: it is neither queued "
                    "nor in its history (restarted, or the queue was cleared)",
                    retryable=True,
                )
            self._sleep(delay, prompt_id, deadline, is_cancelled)
            delay = min(delay * 2, self.max_poll_interval)

    def _check(self, prompt_id: str, deadline: float, is_cancelled: Callable[[], bool]) -> None:
        if is_cancelled():
            self.cancel(prompt_id)
            raise NodeError("Cancelled", retryable=False, failure_type="INTERNAL")
        if time.monotonic() > deadline:
            self.cancel(prompt_id)
            raise NodeError(
                f"ComfyUI at {self.base_url} did not finish prompt {prompt_id} within "
                f"{self.timeout:g} s",
                failure_type="TIMEOUT",
            )

    def _sleep(
        self, seconds: float, prompt_id: str, deadline: float, is_cancelled: Callable[[], bool]
    ) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check(prompt_id, deadline, is_cancelled)
            time.sleep(min(left, 0.05))

    def _raise_for_failure(self, prompt_id: str, entry: Mapping[str, Any]) -> None:
        status = entry.get("status")
        if not isinstance(status, dict):
            return  # older servers keep no status: judge by the outputs alone
        if status.get("status_str") != "error" and status.get("completed", True):
            return
        for message in reversed(status.get("messages") or []):
            if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
                if message[0] == "execution_error":
                    raise _execution_error(message[1])
                if message[0] == "execution_interrupted":
                    raise _interrupted_error(message[1])
        raise NodeError(
            f"ComfyUI at {self.base_url} reports prompt {prompt_id} failed",
            failure_type="UPSTREAM_ERROR",
        )

    def _output_refs(
        self, prompt_id: str, entry: Mapping[str, Any], output_node_id: str | None
    ) -> list[OutputRef]:
        outputs = entry.get("outputs")
        outputs = outputs if isinstance(outputs, dict) else {}
        if output_node_id is not None:
            nodes = [(str(output_node_id), outputs.get(str(output_node_id)))]
        else:
            nodes = [(str(node_id), value) for node_id, value in outputs.items()]
        refs: list[OutputRef] = []
        for node_id, node_output in nodes:
            if not isinstance(node_output, dict):
                continue
            for key in _OUTPUT_KEYS:
                for item in node_output.get(key) or []:
                    if isinstance(item, dict) and item.get("filename"):
                        refs.append(
                            OutputRef(
                                node_id=node_id,
                                filename=str(item["filename"]),
                                subfolder=str(item.get("subfolder") or ""),
                                type=str(item.get("type") or "output"),
                            )
                        )
        refs.sort(key=lambda ref: _TYPE_RANK.get(ref.type, 2))
        if not refs:
            where = f"output node {output_node_id}" if output_node_id is not None else "the graph"
            raise NodeError(
                f"ComfyUI finished prompt {prompt_id} but {where} produced no files",
                failure_type="UPSTREAM_ERROR",
            )
        return refs

    # ------------------------------------------------------------------ transport

    def _open_websocket(self, client_id: str) -> ClientConnection:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = urlunsplit((scheme, parts.netloc, parts.path + "/ws", f"clientId={client_id}", ""))
        try:
            ws = connect(
                url,
                open_timeout=self.request_timeout,
                close_timeout=2,
                max_size=None,  # previews can be large; they are dropped right away
                # unbounded: with a bounded queue, unread frames stall the close handshake
                max_queue=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            raise NodeError(
                f"ComfyUI at {self.base_url} refused the websocket ({code})", retryable=code >= 500
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise NodeError(
                f"ComfyUI at {self.base_url} is unreachable ({exc or type(exc).__name__})",
                retryable=True,
            ) from exc
        if self.supports_preview_metadata:
            ws.send(
                json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            )
        return ws

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeError(
                f"ComfyUI at {self.base_url} is unreachable ({method} /{path}: "
                f"{exc or type(exc).__name__})",
                retryable=True,
            ) from exc
        if response.status_code >= 500:
            raise NodeError(
                f"ComfyUI at {self.base_url} answered {response.status_code} to {method} /{path}",
                retryable=True,
            )
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise NodeError(
                f"ComfyUI at {self.base_url} sent a non-JSON answer to {response.request.url.path}",
                retryable=True,
            ) from exc

    def _history(self, prompt_id: str) -> dict[str, Any] | None:
        response = self._request("GET", f"history/{prompt_id}")
        if response.status_code != 200:
            raise NodeError(
                f"ComfyUI at {self.base_url} answered {response.status_code} to /history"
            )
        body = self._json(response)
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    def _in_queue(self, prompt_id: str) -> bool:
        response = self._request("GET", "queue")
        if response.status_code != 200:
            raise NodeError(f"ComfyUI at {self.base_url} answered {response.status_code} to /queue")
        body = self._json(response)
        if not isinstance(body, dict):
            return False
        for key in ("queue_running", "queue_pending"):
            for item in body.get(key) or []:
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return True
        return False


def _validation_message(body: Any) -> str:
    """ComfyUI's own words for a rejected graph: the error and every node error with details."""
    parts: list[str] = []
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            parts.append(_with_details(error))
        elif isinstance(error, str):
            parts.append(error)
        node_errors = body.get("node_errors")
        if isinstance(node_errors, dict):
            for node_id, node_error in node_errors.items():
                if not isinstance(node_error, dict):
                    continue
                class_type = node_error.get("class_type") or "?"
                for item in node_error.get("errors") or []:
                    if isinstance(item, dict):
                        parts.append(f"node {node_id} ({class_type}): {_with_details(item)}")
    return "ComfyUI rejected the workflow: " + ("; ".join(parts) or "no details given")


def _with_details(error: Mapping[str, Any]) -> str:
    message = str(error.get("message") or error.get("type") or "error")
    details = error.get("details")
    return f"{message}: {details}" if details else message


def _execution_error(data: Mapping[str, Any]) -> NodeError:
    lines = str(data.get("exception_message") or "").strip().splitlines()
    first_line = lines[0].strip() if lines else ""
    return NodeError(
        f"ComfyUI node {data.get('node_id')} ({data.get('node_type')}) failed: "
        f"{data.get('exception_type') or 'Exception'}: {first_line}",
        failure_type="UPSTREAM_ERROR",
    )


def _interrupted_error(data: Mapping[str, Any]) -> NodeError:
    return NodeError(
        f"ComfyUI interrupted prompt {data.get('prompt_id')} at node {data.get('node_id')} "
        f"({data.get('node_type')})",
        failure_type="UPSTREAM_ERROR",
    )
