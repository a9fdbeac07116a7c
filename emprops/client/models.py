"""Typed results: jobs, their outputs and events, workflows, forms and quotes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from emprops.client.errors import APIError, AuthError, JobFailed, NotFound

if TYPE_CHECKING:
    from emprops.client.client import Client

FINISHED = frozenset({"completed", "failed", "cancelled"})
RECONNECT_SECONDS = 1.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Quote:
    per_generation: float
    total_cost: float
    generations: int
    breakdown: list[dict[str, Any]]

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Quote:
        return cls(per_generation=float(raw.get("per_generation") or 0),
                   total_cost=float(raw.get("total_cost", raw.get("total")) or 0),
                   generations=int(raw.get("generations") or 0),
                   breakdown=list(raw.get("breakdown") or []))


@dataclass(frozen=True)
class Workflow:
    id: str
    name: str
    label: str
    description: str
    type: str
    output_mime_type: str | None
    cost: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Workflow:
        cost = raw.get("cost")
        return cls(id=str(raw["id"]), name=raw.get("name") or "", label=raw.get("label") or "",
                   description=raw.get("description") or "", type=raw.get("type") or "",
                   output_mime_type=raw.get("output_mime_type"),
                   cost=float(cost) if cost is not None else None, raw=dict(raw))


@dataclass(frozen=True)
class WorkflowForm:
    workflow_id: str
    name: str
    schema: dict[str, Any]
    fields: list[dict[str, Any]]
    example: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> WorkflowForm:
        return cls(workflow_id=str(raw["workflow_id"]), name=raw.get("name") or "",
                   schema=raw.get("schema") or {}, fields=list(raw.get("fields") or []),
                   example=raw.get("example") or {}, config=raw.get("config") or {})


@dataclass(frozen=True)
class Output:
    """One step's output of one generation (`data.outputs[i].steps[j].nodeResponse`)."""

    generation_id: int
    hash: str
    step_id: int
    node_name: str
    src: str | None  # absolute URL of the stored file
    mime_type: str | None
    data: Any = None  # the text itself, for text outputs

    @property
    def filename(self) -> str:
        """`<gid>-<step>-<name>`: stable across runs, so a re-download overwrites, never piles up."""
        name = Path(unquote(urlsplit(self.src or "").path)).name
        name = _UNSAFE.sub("_", name).strip("._") or _UNSAFE.sub("_", self.node_name) or "output"
        return f"{self.generation_id}-{self.step_id}-{name}"


def outputs_of(generation_outputs: Iterable[Mapping[str, Any]], base_url: str) -> list[Output]:
    """Flatten GenerationOutputs (`{generation: {id, hash}, steps: [{id, nodeName,
    nodeResponse}]}`) into Outputs; relative `src`s are made absolute against `base_url`."""
    out: list[Output] = []
    for gen_out in generation_outputs:
        gen = gen_out.get("generation") or {}
        for step in gen_out.get("steps") or []:
            response = step.get("nodeResponse")
            if not isinstance(response, Mapping):
                continue
            src = response.get("src")
            out.append(Output(
                generation_id=int(gen.get("id", 0)), hash=str(gen.get("hash") or ""),
                step_id=int(step.get("id", 0)), node_name=str(step.get("nodeName") or ""),
                src=str(httpx.URL(base_url).join(src)) if isinstance(src, str) and src else None,
                mime_type=response.get("mimeType"), data=response.get("data")))
    return out


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of a job's stream: `job_update`, `history_init` or `job_history`."""

    id: int | None
    event: str
    data: Any


@dataclass
class Job:
    """A job as last seen; `refresh()`, `wait()` and `events()` bring it up to date."""

    id: str
    status: str
    progress: int
    name: str = ""
    job_type: str = ""
    error_message: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False)
    retry_count: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    collection: dict[str, Any] | None = field(default=None, repr=False)  # from generate()
    cost: dict[str, Any] | None = field(default=None, repr=False)  # from generate()
    # what it waits for and its links (`waiting`, `urls.gallery` of the job detail)
    waiting: dict[str, Any] | None = field(default=None, repr=False)
    urls: dict[str, Any] = field(default_factory=dict, repr=False)
    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any], client: Client | None = None) -> Job:
        job = cls(id=str(raw["id"]), status="", progress=0, _client=client)
        job._update(raw)
        return job

    def _update(self, raw: Mapping[str, Any]) -> None:
        for name in ("status", "name", "job_type", "error_message", "created_at", "updated_at",
                     "started_at", "completed_at"):
            if name in raw:
                setattr(self, name, raw[name])
        if "progress" in raw:
            self.progress = int(raw["progress"] or 0)
        if "retry_count" in raw:
            self.retry_count = int(raw["retry_count"] or 0)
        if isinstance(raw.get("data"), dict):
            self.data = raw["data"]
        if "waiting" in raw:
            self.waiting = raw["waiting"] if isinstance(raw["waiting"], dict) else None
        if isinstance(raw.get("urls"), dict):
            self.urls = {**self.urls, **raw["urls"]}

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("this Job is not bound to a Client")
        return self._client

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def collection_id(self) -> str | None:
        if self.collection:
            return str(self.collection.get("id"))
        return self.data.get("collectionId")

    @property
    def generations(self) -> int | None:
        """How many generations the job holds (from its quote), when known."""
        quote = self.data.get("quote")
        return int(quote["generations"]) if isinstance(quote, dict) and "generations" in quote \
            else None

    @property
    def outputs(self) -> list[Output]:
        return outputs_of(self.data.get("outputs") or [], self.client.base_url)

    def refresh(self) -> Job:
        self._update(self.client.request("GET", f"/api/jobs/{self.id}"))
        return self

    def cancel(self) -> Job:
        self._update(self.client.request("POST", f"/api/jobs/{self.id}/cancel"))
        return self

    def retry(self, refresh_workflows: bool = False) -> Job:
        self._update(self.client.request("POST", f"/api/jobs/{self.id}/retry",
                                         json={"refresh_workflows": refresh_workflows}))
        return self

    def events(self, *, last_event_id: int | None = None, timeout: float | None = None,
               max_reconnects: int = 5) -> Iterator[Event]:
        """The job's live events until it is finished; a dropped stream is resumed with
        `Last-Event-ID`, so no event is lost or repeated. Stops on a terminal `job_update` (after
        the `history_init` that follows one in a snapshot) or when a reconnect past the final
        event is answered 204. Raises TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = last_event_id
        fruitless = 0  # reconnects in a row that brought no event
        while True:
            got_any = False
            fresh = last is None  # no Last-Event-ID: the server starts with a snapshot
            try:
                for ev in self.client.stream_events(self.id, last_event_id=last,
                                                    deadline=deadline):
                    if got_any and fresh and self.finished:
                        # a finished job's snapshot: its history_init follows at once
                        if ev.event == "history_init":
                            yield ev
                        return
                    if ev.id is not None:
                        last = ev.id
                    if ev.event == "job_update" and isinstance(ev.data, dict):
                        self._update(ev.data)
                    yield ev
                    if ev.event == "job_update" and self.finished and not (fresh and not got_any):
                        return
                    got_any = True
                if got_any and fresh and self.finished:
                    return
            except _StreamEnded:
                return
            except (AuthError, NotFound):
                raise
            except APIError:
                if fruitless >= max_reconnects:
                    raise
            fruitless = 0 if got_any else fruitless + 1
            if fruitless > max_reconnects:
                raise APIError(f"the event stream of job {self.id} kept closing without events")
            if deadline is not None and time.monotonic() + RECONNECT_SECONDS > deadline:
                raise TimeoutError(f"job {self.id} did not finish within the timeout")
            self.client._sleep(RECONNECT_SECONDS)

    def wait(self, timeout: float | None = None, poll: float = 2.0) -> Job:
        """Block until the job is finished and return it (outputs included). Follows the event
        stream, polling instead when the stream is unavailable. Raises JobFailed when the job
        failed or was cancelled, TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.finished:
            try:
                for _ in self.events(timeout=timeout):
                    pass
            except (AuthError, NotFound):
                raise
            except APIError:
                pass  # no stream (a proxy that buffers it, a server restart): poll instead
        self.refresh()
        while not self.finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            self.client._sleep(poll if deadline is None
                               else max(0.0, min(poll, deadline - time.monotonic())))
            self.refresh()
        if self.status != "completed":
            raise JobFailed(self)
        return self

    def download(self, folder: str | Path, outputs: Iterable[Output] | None = None) -> list[Path]:
        """Save each output that has a file (default: all of the job's) into `folder` as
        `<gid>-<step>-<name>`; returns the paths."""
        chosen = self.outputs if outputs is None else list(outputs)
        return [self.client.download(o, folder) for o in chosen if o.src]


class _StreamEnded(Exception):
    """The server answered 204: the job is finished and there is nothing after Last-Event-ID."""
