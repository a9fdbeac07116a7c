"""Content-addressed node runs: the cache key of a run, the content hash of an output, and the
reuse of an earlier identical run's output.

A run's key is sha256 over what decides its bytes and nothing that names its job: the node type
and its implementation version, its environment fingerprint (Chromium and p5 versions, the
ComfyUI server's build ...), the workflow snapshot digest, the step's payload as written (its
`$ref`s and `#id` mentions name steps, never jobs) together with the content hash of every
output it waits on (so each reference stands for the bytes it names, without resolving the
payload a second time), and the seed, hash and variables of its generation. A run whose key
matches a completed run of the same owner reuses that run's files, copied to its own storage
keys: deleting one job never removes another's file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from emprops import storage
from generation_app.models import NodeRun
from generation_app.nodes.base import NodeOutput, StoredFile

logger = logging.getLogger(__name__)

# staff test-runs and replays exist to run the node: they never take an output from the cache
NO_CACHE_JOB_TYPES = frozenset({"workflow_test", "replay"})
# the keys of a step output the runner derives from its files; the rest is the node's own
_DERIVED = frozenset({"mimeType", "src", "data", "altSrc", "altMimeType", "srcs", "cached",
                      "cachedFrom"})


class Probe(NamedTuple):
    """What the cache said about one run: its key (None: not cacheable), the environment it
    runs in, and the completed run whose output it reuses (None: it runs)."""

    key: str | None
    env: dict[str, str]
    source: dict[str, Any] | None = None


NOT_CACHED = Probe(None, {})


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str,
                      ensure_ascii=False)


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def cache_allowed(*, job_type: str, job_data: Mapping[str, Any] | None) -> bool:
    """Whether a job's runs may be served from the cache (`no_cache` requests, staff test-runs
    and replays may not; their outputs still serve later runs)."""
    return job_type not in NO_CACHE_JOB_TYPES and not (job_data or {}).get("noCache")


def files_meta(result: NodeOutput, keys: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """filename -> {sha256, mimeType, key} of a result's files as stored at `keys`."""
    return {f.filename: {"sha256": _sha256(f.content), "mimeType": keys[f.filename][1],
                         "key": keys[f.filename][0]} for f in result.files}


def output_content_hash(*, output: Mapping[str, Any], files: Mapping[str, Any] | None,
                        job_id: str) -> str:
    """sha256 of what a step produced: its data and mime type (this job's id neutralised, so a
    text quoting one of its own URLs hashes the same in every job) and the sha256 of each file.
    URLs never enter it."""
    doc = {"mimeType": output.get("mimeType"), "data": output.get("data"),
           "files": {name: meta["sha256"] for name, meta in (files or {}).items()}}
    return _sha256(_canonical(doc).replace(job_id, "~"))


def run_cache_key(*, node_type: str, node_name: str, version: str, env: Mapping[str, str],
                  workflow_digest: str | None, payload: Any, upstream: Mapping[int, str],
                  seed: int, hash: str, variables: Mapping[str, Any]) -> str:
    """The content address of a node run (see the module docstring)."""
    return _sha256(_canonical({
        "node": node_type, "name": node_name, "version": version, "env": dict(env),
        "workflow": workflow_digest, "payload": payload,
        "upstream": {str(k): v for k, v in sorted(upstream.items())},
        "seed": seed, "hash": hash, "variables": dict(variables)}))


def cache_lookup(*, user_id: Any, key: str) -> dict[str, Any] | None:
    """The newest completed run of this user with this key (one indexed query), or None."""
    row: Any = (
        NodeRun.objects.filter(cache_key=key, status=NodeRun.Status.COMPLETED,
                               job__user_id=user_id, output_files__isnull=False)
        .order_by("-completed_at", "-id")
        .values("id", "job_id", "gid", "step_id", "output", "output_files", "env").first())
    return dict(row) if row is not None else None


def _rewrite(value: Any, old: str, new: str) -> Any:
    return json.loads(json.dumps(value).replace(old, new)) if value is not None else None


def cached_output(*, source: Mapping[str, Any], user_id: Any, job_id: Any,
                  gid: int) -> NodeOutput | None:
    """The source run's output as a NodeOutput for this run: its files read back (each checked
    against its sha256) to be stored again at this run's keys, and references to the source's
    own folder in its data pointed at this run's. None when a file is gone or changed."""
    out: Mapping[str, Any] = source["output"] or {}
    meta: Mapping[str, Any] = source["output_files"] or {}
    files = []
    for name, m in meta.items():
        try:
            content = storage.read(m["key"])
        except Exception:  # noqa: BLE001 - deleted by retention, unreadable: run instead
            logger.info("cache source %s lost its file %s", source["id"], m.get("key"))
            return None
        if _sha256(content) != m["sha256"]:
            return None
        files.append(StoredFile(name, content, m["mimeType"]))
    by_key = {m["key"]: name for name, m in meta.items()}

    def named(url: Any) -> str | None:
        key = storage.key_for_url(url) if isinstance(url, str) else None
        return by_key.get(key) if key else None

    src_file = named(out.get("src"))
    if out.get("src") and src_file is None:
        return None
    old = f"generations/{user_id}/{source['job_id']}/{source['gid']}/"
    new = f"generations/{user_id}/{job_id}/{gid}/"
    extra = {k: v for k, v in out.items() if k not in _DERIVED}
    return NodeOutput(
        mime_type=out.get("mimeType"), data=_rewrite(out.get("data"), old, new), files=files,
        src_file=src_file, alt_file=named(out.get("altSrc")),
        src_files=[n for n in (named(s.get("src")) for s in out.get("srcs") or []
                               if isinstance(s, Mapping)) if n],
        extra=_rewrite(extra, old, new) or {})


def source_ref(source: Mapping[str, Any]) -> dict[str, Any]:
    """How outputs, history and events name the run an output was reused from."""
    return {"nodeRunId": source["id"], "jobId": str(source["job_id"]), "gid": source["gid"],
            "stepId": source["step_id"]}
