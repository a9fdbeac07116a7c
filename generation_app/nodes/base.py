"""The small interface every node type implements.

Nodes know nothing of the ORM, jobs or Celery: they get a resolved payload and a run context,
and return a NodeOutput or raise NodeError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class NodeError(Exception):
    """A step failed. `retryable` says whether running it again may succeed."""

    def __init__(
        self, message: str, *, retryable: bool = False, failure_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.failure_type = failure_type or ("UPSTREAM_ERROR" if retryable else "VALIDATION_ERROR")


@dataclass(frozen=True)
class StoredFile:
    """A file a node produced: name within the step folder (e.g. `p5.png`), bytes and mime type."""

    filename: str
    content: bytes
    mime_type: str


@dataclass
class NodeOutput:
    """What a node returns.

    `files` are stored by the runner at `generations/{user}/{job}/{gid}/{step}/{filename}`;
    `src_file` / `alt_file` name which of them become `src` / `altSrc` in the step output;
    `src_files` names, in order, the files of a node that makes several (a ComfyUI batch), which
    become the output's `srcs` list of `{src, mimeType}`.
    `data` is the text (or structured) result that `#<id>` mentions and `$ref` filters read.
    """

    mime_type: str | None
    data: Any = None
    files: list[StoredFile] = field(default_factory=list)
    src_file: str | None = None
    alt_file: str | None = None
    src_files: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a node may know about where it runs."""

    user_id: str
    job_id: str
    gid: int
    step_id: int
    node_name: str
    alias: str | None
    hash: str
    seed: int
    variables: Mapping[str, Any]
    # step id -> that step's output dict ({"src", "data", "mimeType", ...}) for steps done so far
    components: Mapping[int, Mapping[str, Any]]
    # step alias or nodeName -> step id, so `getComponentOutput(alias)` can find outputs
    aliases: Mapping[str, int] = field(default_factory=dict)
    # read a stored output of this job by its storage key (never over HTTP)
    read_output: Callable[[str], bytes] | None = None
    # report progress of this step, 0.0-1.0
    report_progress: Callable[[float], None] = lambda _fraction: None
    # returns True once the job was cancelled; long-running nodes poll it
    is_cancelled: Callable[[], bool] = lambda: False
    # the workflow row's fields for workflow-backed nodes (type, data, server url, ...)
    workflow: Mapping[str, Any] | None = None
    # the user's stored secret for this workflow, if any (never logged)
    user_secret: str | None = None
    attempt: int = 1
    # a string unique to this node run, stable across redeliveries
    run_key: str = ""
    # platform configuration a node may need (LLM endpoint, time limits, allow-lists ...)
    config: Mapping[str, Any] = field(default_factory=dict)


class Node:
    """One step of a generation. Pure with respect to the database."""

    name: ClassVar[str]
    # Bumped whenever a change to the node can change its output bytes: it is part of every
    # run's cache key, so outputs of an older implementation are never reused.
    version: ClassVar[str] = "1"
    # Whether the output is a function of what the cache key covers (payload, the outputs the
    # node sees, seed, hash, variables, environment); a deterministic run is served from the
    # cache by default, any other only when its workflow says `"cacheable": true`.
    deterministic: ClassVar[bool] = False

    def cacheable(self, payload: Mapping[str, Any]) -> bool:
        """Whether this run (with this payload) may be served from an earlier identical run."""
        return self.deterministic

    def env_fingerprint(self, payload: Mapping[str, Any],
                        workflow: Mapping[str, Any] | None) -> dict[str, str]:
        """What outside the key can change this node's bytes where it runs now (renderer and
        library versions, the upstream server): part of the cache key and recorded with each
        run, so a replay can name what drifted. Cheap after the first call in a process."""
        return {}

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        """Return this step's output for a resolved payload, or raise NodeError."""
        raise NotImplementedError(".run() must be overridden")
