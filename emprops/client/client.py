"""`Client`: the EmProps API over httpx, with typed results and one exception per kind of error."""

from __future__ import annotations

import builtins
import email.utils
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from emprops.client.errors import (
    ConnectionFailed,
    NotFound,
    ValidationError,
    error_from_response,
)
from emprops.client.models import (
    Event,
    Job,
    Output,
    Quote,
    Workflow,
    WorkflowForm,
    _StreamEnded,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
MAX_RETRY_AFTER = 60.0  # never sleep longer than this on one Retry-After
STREAM_READ_TIMEOUT = 75.0  # the server sends a heartbeat at least every 30 s


class Client:
    """The API at `base_url` (with or without the trailing `/api`), authenticated with an `ek_`
    API key (`X-API-Key`) or a JWT (`Authorization: Bearer`). A 429 is retried up to
    `max_retries` times, waiting what `Retry-After` says, before RateLimited is raised."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None,
                 token: str | None = None, timeout: float = 30.0, *, max_retries: int = 3,
                 transport: httpx.BaseTransport | None = None) -> None:
        base = base_url.rstrip("/")
        self.base_url = base[: -len("/api")] if base.endswith("/api") else base
        self.max_retries = max_retries
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "emprops-client/1"}
        if api_key:
            headers["X-API-Key"] = api_key
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport)
        # outputs may live on another origin (user content, CDN, S3): fetched without credentials
        self._files = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)
        self._sleep = time.sleep  # every wait goes through here (tests replace it)
        self.collections = Collections(self)
        self.jobs = Jobs(self)
        self.workflows = Workflows(self)
        self.collectors = Collectors(self)

    def close(self) -> None:
        self._http.close()
        self._files.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the unified API -------------------------------------------------------------------

    def generate(self, *, workflow: str, inputs: Mapping[str, Any] | None = None,
                 variables: Iterable[Mapping[str, Any]] | None = None, count: int | None = None,
                 idempotency_key: str | None = None, **fields: Any) -> Job:
        """`POST /api/collections/generate`: a collection from a workflow (name or id) and its
        job in one call; `fields` are further collection fields (title, hashes, run_at ...)."""
        body: dict[str, Any] = {**fields, "inputs": dict(inputs or {})}
        body["workflow_id" if _is_uuid(workflow) else "workflow_name"] = workflow
        if variables is not None:
            body["variables"] = [dict(v) for v in variables]
        if count is not None:
            body["count"] = count
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = self.request("POST", "/api/collections/generate", json=body, headers=headers)
        job = Job.from_api(data["job"], self)
        job.collection, job.cost = data.get("collection"), data.get("cost")
        if isinstance(data.get("urls"), dict):
            job.urls = dict(data["urls"])
        return job

    def me(self) -> dict[str, Any]:
        """`GET /api/me`: who the credentials belong to, and their credits."""
        return dict(self.request("GET", "/api/me"))

    # ---- transport --------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """Send one request and return the envelope's `data`; raise the APIError subclass for
        an error answer."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.request(method, path, json=json, params=clean,
                                              headers=headers)
            except httpx.TransportError as exc:
                raise _connection_failed(exc, self.base_url) from exc
            if response.status_code == 429:
                wait = retry_after(response)
                if attempt < self.max_retries:
                    self._sleep(wait if wait is not None else 2.0 ** attempt)
                    continue
                raise error_from_response(response, retry_after=wait)
            if response.status_code >= 400:
                raise error_from_response(response)
            if response.status_code == 204 or not response.content:
                return None
            try:
                body = response.json()
            except ValueError:
                raise ConnectionFailed(f"{method} {path}: the answer is not JSON",
                                       status=response.status_code) from None
            return body.get("data") if isinstance(body, dict) else body
        raise AssertionError("unreachable")

    def stream_events(self, job_id: str, *, last_event_id: int | None = None,
                      deadline: float | None = None) -> Iterator[Event]:
        """One connection to a job's event stream: its events as they come, until the server
        closes it. A 204 (nothing after `last_event_id` of a finished job) ends with
        _StreamEnded."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        read = STREAM_READ_TIMEOUT
        if deadline is not None:
            read = max(0.5, min(read, deadline - time.monotonic()))
        timeout = httpx.Timeout(self.timeout, read=read)
        for attempt in range(self.max_retries + 1):
            try:
                with self._http.stream("GET", f"/api/jobs/{job_id}/events", headers=headers,
                                       timeout=timeout) as response:
                    if response.status_code == 429 and attempt < self.max_retries:
                        response.read()
                        wait = retry_after(response)
                        self._sleep(wait if wait is not None else 2.0 ** attempt)
                        continue
                    if response.status_code == 204:
                        raise _StreamEnded
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response, retry_after=retry_after(response))
                    yield from parse_sse(response.iter_lines(), deadline=deadline)
                    return
            except httpx.ReadTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {job_id} did not finish within the timeout") from exc
                raise _connection_failed(exc, self.base_url) from exc
            except httpx.TransportError as exc:
                raise _connection_failed(exc, self.base_url) from exc

    def download(self, output: Output, folder: str | Path) -> Path:
        """Save one output's file as `folder/<gid>-<step>-<name>` (written whole, then renamed
        into place, so a half-written file never carries the final name)."""
        if not output.src:
            raise ValueError("this output has no file")
        target = Path(folder) / output.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        try:
            with self._files.stream("GET", output.src) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                with open(part, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            part.unlink(missing_ok=True)
            raise _connection_failed(exc, output.src) from exc
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        return target


class Collections:
    def __init__(self, client: Client) -> None:
        self._client = client

    def generate(self, collection_id: str, count: int | None = None, *,
                 variables: Mapping[str, Any] | None = None,
                 hashes: list[str] | None = None) -> Job:
        """`POST /api/collections/{id}/generations`: generate from a saved collection."""
        body: dict[str, Any] = {}
        if count is not None:
            body["count"] = count
        if variables is not None:
            body["variables"] = dict(variables)
        if hashes is not None:
            body["hashes"] = hashes
        data = self._client.request("POST", f"/api/collections/{collection_id}/generations",
                                    json=body)
        return self._client.jobs.get(data["jobId"])


class Collectors:
    """A collector's calls: wallet sign-in (EIP-4361), purchases verified on chain, collects."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def nonce(self) -> str:
        """`GET /api/collectors/nonce`: the nonce to put in the message the wallet signs."""
        return str(self._client.request("GET", "/api/collectors/nonce")["nonce"])

    def login(self, message: str, signature: str) -> dict[str, Any]:
        """`POST /api/collectors/login`: tokens (`access` is the collector token) and the
        collector; pass `access` as `Client(token=...)`."""
        return dict(self._client.request("POST", "/api/collectors/login",
                                         json={"message": message, "signature": signature}))

    def me(self) -> dict[str, Any]:
        return dict(self._client.request("GET", "/api/collectors/me"))

    def purchase(self, collection_id: str, tx_hash: str) -> dict[str, Any]:
        """`POST /api/collections/{id}/purchases`: the payment, `confirmed` or `pending`."""
        return dict(self._client.request("POST", f"/api/collections/{collection_id}/purchases",
                                         json={"tx_hash": tx_hash}))

    def collect(self, collection_id: str) -> dict[str, Any]:
        """`POST /api/collections/{id}/collect`: spend one paid generation."""
        return dict(self._client.request("POST", f"/api/collections/{collection_id}/collect"))

    def purchases(self, *, limit: int | None = None, offset: int | None = None,
                  ) -> list[dict[str, Any]]:
        page = self._client.request("GET", "/api/collectors/me/purchases",
                                    params={"limit": limit, "offset": offset})
        return [dict(item) for item in page["items"]]

    def generations(self, *, limit: int | None = None, offset: int | None = None,
                    ) -> list[dict[str, Any]]:
        """Your collected generations, newest first (`status`, `output_url`, `output_data`)."""
        page = self._client.request("GET", "/api/collectors/me/generations",
                                    params={"limit": limit, "offset": offset})
        return [dict(item) for item in page["items"]]


class Jobs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, job_id: str) -> Job:
        return Job.from_api(self._client.request("GET", f"/api/jobs/{job_id}"), self._client)

    def list(self, *, status: str | None = None, job_type: str | None = None,
             limit: int | None = None, offset: int | None = None,
             ordering: str | None = None) -> list[Job]:
        """Your jobs, one page (newest first unless `ordering` says otherwise)."""
        page = self._client.request("GET", "/api/jobs", params={
            "status": status, "job_type": job_type, "limit": limit, "offset": offset,
            "ordering": ordering})
        return [Job.from_api(item, self._client) for item in page["items"]]

    def cancel(self, job_id: str) -> Job:
        return Job(id=str(job_id), status="", progress=0, _client=self._client).cancel()

    def retry(self, job_id: str, refresh_workflows: bool = False) -> Job:
        return Job(id=str(job_id), status="", progress=0,
                   _client=self._client).retry(refresh_workflows)


class Workflows:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, limit: int | None = None, offset: int | None = None) -> list[Workflow]:
        page = self._client.request("GET", "/api/workflows",
                                    params={"limit": limit, "offset": offset})
        return [Workflow.from_api(item) for item in page["items"]]

    def search(self, query: str, *, limit: int | None = None) -> builtins.list[Workflow]:
        """Workflows whose name, label or description contain `query`."""
        page = self._client.request("GET", "/api/workflows",
                                    params={"search": query, "limit": limit})
        return [Workflow.from_api(item) for item in page["items"]]

    def get(self, name: str) -> Workflow:
        """A workflow by name (or id)."""
        path = f"/api/workflows/{name}" if _is_uuid(name) else f"/api/workflows/name/{name}"
        return Workflow.from_api(self._client.request("GET", path))

    def form(self, name: str) -> WorkflowForm:
        """The workflow's form: JSON Schema of its inputs, fields with options, an example."""
        workflow_id = name if _is_uuid(name) else self.get(name).id
        return WorkflowForm.from_api(
            self._client.request("GET", f"/api/workflows/{workflow_id}/form"))

    def quote(self, name: str, inputs: Mapping[str, Any] | None = None, count: int = 1) -> Quote:
        """What `count` generations with these inputs would cost, in credits. `name` is a
        workflow (name or id) or, as in generate(), a built-in node such as `prompt`."""
        try:
            workflow_id = name if _is_uuid(name) else self.get(name).id
        except NotFound as missing:
            # a built-in has no workflow row: quote it as the one-step input generate() builds
            request = {"steps": [{"id": 1, "nodeName": name, "nodePayload": dict(inputs or {})}],
                       "generations": {"generations": count, "hashes": [],
                                       "use_custom_hashes": False}}
            try:
                return Quote.from_api(self._client.request(
                    "POST", "/api/instruction-sets/credits", json={"request": request}))
            except ValidationError:
                raise missing from None
        return Quote.from_api(self._client.request(
            "POST", f"/api/workflows/{workflow_id}/quote",
            json={"inputs": dict(inputs or {}), "count": count}))


def parse_sse(lines: Iterable[str], *, deadline: float | None = None) -> Iterator[Event]:
    """Server-Sent Events (the WHATWG event-stream format) from lines; `data` is decoded as JSON
    where it is JSON. Comments (heartbeats) yield nothing but still let a deadline be checked."""
    event = ""
    data: list[str] = []
    event_id: int | None = None
    for line in lines:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError("the event stream ran past the timeout")
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield Event(id=event_id, event=event or "message", data=value)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value_text = line.partition(":")
        value_text = value_text.removeprefix(" ")
        if name == "event":
            event = value_text
        elif name == "data":
            data.append(value_text)
        elif name == "id":
            try:
                event_id = int(value_text)
            except ValueError:
                event_id = None


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (a number or an HTTP date), capped at MAX_RETRY_AFTER."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _connection_failed(exc: httpx.TransportError, where: str) -> ConnectionFailed:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectionFailed(f"cannot reach {where}: {exc or type(exc).__name__}",
                                unreachable=True)
    return ConnectionFailed(f"the connection to {where} failed: {exc or type(exc).__name__}")
