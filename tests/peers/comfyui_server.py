"""A protocol-faithful ComfyUI test peer (see /work/shared/comfyui-protocol.md).

It speaks ComfyUI's HTTP and WebSocket protocol on loopback and really runs a few model-free
nodes on real pixels (Pillow), so clients are tested against the wire format, not a mock:
EmptyImage, ImageInvert, LoadImage, SaveImage, PreviewImage, SaveImageWebsocket, plus two
test-control nodes: TestSlow (sleeps `seconds` in `steps`, sending `progress`, interruptible) and
TestFail (raises RuntimeError(message) -> execution_error).

In a test::

    with ComfyTestServer() as comfy:        # random free port, temp dirs, own executor thread
        post(comfy.url + "/prompt", ...)
        assert comfy.executions[prompt_id] == 1

As a process: ``python -m tests.peers.comfyui_server --port 8188 [--root DIR]``.

Images are float32 bands in 0..1, as ComfyUI's tensors, so the saved bytes match a real server
(0x336699 inverted is (204, 153, 101), not (204, 153, 102)).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import email.parser
import email.policy
import hashlib
import heapq
import io
import itertools
import json
import mimetypes
import os
import random
import socket
import string
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn
from PIL import Image, PngImagePlugin

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# An image batch: a list of images, each a tuple of three float32 bands (R, G, B) in 0..1.
Band = Image.Image
FImage = tuple[Band, Band, Band]

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
MAX_UPLOAD_SIZE = 104857600


def _int_spec(default: int, lo: int, hi: int, **extra: Any) -> list[Any]:
    return ["INT", {"default": default, "min": lo, "max": hi, "step": 1, **extra}]


_IMAGE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODE_DEFS: dict[str, dict[str, Any]] = {
    "EmptyImage": {
        "input": {
            "required": {
                "width": _int_spec(512, 1, 16384),
                "height": _int_spec(512, 1, 16384),
                "batch_size": _int_spec(1, 1, 4096),
                "color": _int_spec(0, 0, 0xFFFFFF, display="color"),
            }
        },
        "output": ["IMAGE"],
        "category": "image",
    },
    "ImageInvert": {
        "input": {"required": {"image": ["IMAGE"]}},
        "output": ["IMAGE"],
        "category": "image",
    },
    "LoadImage": {
        "input": {"required": {"image": [[], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "category": "image",
    },
    "SaveImage": {
        "input": {
            "required": {
                "images": ["IMAGE", {"tooltip": "The images to save."}],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
            },
            "hidden": _IMAGE_HIDDEN,
        },
        "output": [],
        "output_node": True,
        "category": "image",
    },
    "PreviewImage": {
        "input": {"required": {"images": ["IMAGE"]}, "hidden": _IMAGE_HIDDEN},
        "output": [],
        "output_node": True,
        "category": "image",
    },
    "SaveImageWebsocket": {
        "input": {"required": {"images": ["IMAGE"]}},
        "output": [],
        "output_node": True,
        "category": "api node/image",
    },
    "TestSlow": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "seconds": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0, "step": 0.01}],
            },
            "optional": {"steps": _int_spec(10, 1, 10000)},
        },
        "output": ["IMAGE"],
        "category": "testing",
    },
    "TestFail": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "message": ["STRING", {"default": "TestFail raised"}],
            }
        },
        "output": ["IMAGE"],
        "category": "testing",
    },
}


def _object_info_entry(name: str) -> dict[str, Any]:
    spec = NODE_DEFS[name]
    inputs = spec["input"]
    return {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items() if k != "hidden"},
        "output": spec["output"],
        "output_is_list": [False] * len(spec["output"]),
        "output_name": list(spec["output"]),
        "name": name,
        "display_name": name,
        "description": "",
        "python_module": "nodes" if not name.startswith("Test") else "custom_nodes.testing",
        "category": spec["category"],
        "output_node": bool(spec.get("output_node")),
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _full_type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class _Interrupted(Exception):
    pass


# ---------------------------------------------------------------------------- pixels


def _band(width: int, height: int, value8: int) -> Band:
    return Image.new("F", (width, height), value8 / 255.0)


def _to_rgb8(img: FImage) -> Image.Image:
    # 255. * tensor, clipped and truncated to uint8, as ComfyUI's SaveImage does.
    bands = [b.point(lambda x: x * 255.0).convert("I").convert("L") for b in img]
    return Image.merge("RGB", bands)


def _from_rgb8(pil: Image.Image) -> FImage:
    r, g, b = (band.convert("F").point(lambda x: x / 255.0) for band in pil.convert("RGB").split())
    return (r, g, b)


def _png_bytes(img: FImage, pnginfo: PngImagePlugin.PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    _to_rgb8(img).save(buf, format="PNG", pnginfo=pnginfo, compress_level=4)
    return buf.getvalue()


# ---------------------------------------------------------------------------- websocket plumbing


@dataclass(eq=False)
class _Socket:
    sid: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | bytes | None]
    supports_preview_metadata: bool = False
    got_first_message: bool = False

    def put(self, frame: str | bytes | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, frame)


@dataclass(order=True)
class _Item:
    number: float
    seq: int
    prompt_id: str = field(compare=False)
    prompt: dict[str, Any] = field(compare=False)
    extra_data: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)

    def as_tuple(self) -> list[Any]:
        safe = {
            k: v
            for k, v in self.extra_data.items()
            if k not in ("auth_token_comfy_org", "api_key_comfy_org")
        }
        return [self.number, self.prompt_id, self.prompt, safe, self.outputs]


@dataclass
class _Run:
    """State of the prompt being executed."""

    item: _Item
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    messages: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def client_id(self) -> str | None:
        cid = self.item.extra_data.get("client_id")
        return str(cid) if cid is not None else None


class ComfyTestServer:
    """A ComfyUI look-alike on loopback. Counters are plain attributes, read them from tests."""

    def __init__(self, root: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="comfy-peer-")
            root = self._tmp.name
        self.root = Path(root).resolve()
        self.output_dir = self.root / "output"
        self.input_dir = self.root / "input"
        self.temp_dir = self.root / "temp"
        for d in (self.output_dir, self.input_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"

        # --- counters and records for tests
        self.executions: Counter[str] = Counter()  # prompt_id -> times the executor ran it
        self.executed_prompt_ids: list[str] = []
        self.prompt_posts: list[Any] = []  # parsed bodies of POST /prompt (None if malformed)
        self.interrupt_requests: list[Any] = []  # parsed bodies of POST /interrupt (None if empty)
        self.queue_requests: list[Any] = []  # parsed bodies of POST /queue
        self.interrupted_prompt_ids: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self.ws_connections: list[str] = []  # sids, in connection order

        # --- server state (guarded by _lock)
        self._lock = threading.Condition()
        self.number = 0
        self._seq = itertools.count()
        self._pending: list[_Item] = []
        self._run: _Run | None = None
        self._last_node_id: str | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._sockets: dict[str, _Socket] = {}
        self._interrupt = threading.Event()
        # signature -> (outputs, ui); only the last prompt's nodes are kept, like the classic cache
        self._cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}

        self._stop = threading.Event()
        self._crashed = False
        self._executor = threading.Thread(
            target=self._execute_loop, name="comfy-executor", daemon=True
        )
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=2,
        )

    def start(self) -> ComfyTestServer:
        """Serve from a background thread; returns once the port accepts connections."""
        self._executor.start()
        self._uvicorn = uvicorn.Server(self._config())
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("ComfyUI test server did not start")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread (the `python -m` entry point)."""
        self._executor.start()
        self._uvicorn = uvicorn.Server(self._config())
        print(f"ComfyUI test server listening on {self.url}", flush=True)
        self._uvicorn.run(sockets=[self._sock])
        self._stop.set()

    def crash(self) -> None:
        """Go away as a killed ComfyUI does: no last messages (a graceful stop reports the
        running prompt interrupted), connections dropped, queue and history gone with it."""
        with self._lock:
            self._crashed = True
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt.set()
        with self._lock:
            self._lock.notify_all()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._executor.join(10)
        self._sock.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> ComfyTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers

    @property
    def running_prompt_id(self) -> str | None:
        with self._lock:
            return self._run.item.prompt_id if self._run else None

    def pending_prompt_ids(self) -> list[str]:
        with self._lock:
            return [i.prompt_id for i in sorted(self._pending)]

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._history.get(prompt_id)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached on the ComfyUI test server")
            time.sleep(0.01)

    def inject(self, sid: str, frame: str | bytes | dict[str, Any]) -> None:
        """Send a raw frame to one websocket client (for robustness tests)."""
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        with self._lock:
            sock = self._sockets.get(sid)
            if sock is not None:
                sock.put(frame)

    # ------------------------------------------------------------------ messaging

    def _queue_info(self) -> dict[str, Any]:
        remaining = len(self._pending) + (1 if self._run is not None else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    def _broadcast_status_locked(self) -> None:
        frame = json.dumps({"type": "status", "data": {"status": self._queue_info()}})
        for sock in self._sockets.values():
            sock.put(frame)

    def _send(self, sid: str | None, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            if self._crashed:
                return
            if sid is None:
                # no client_id: broadcast-flagged events reach everyone, the rest nobody
                if event in ("execution_interrupted", "execution_error"):
                    for sock in self._sockets.values():
                        sock.put(json.dumps({"type": event, "data": data}))
                return
            sock = self._sockets.get(sid)
            if sock is not None:
                sock.put(json.dumps({"type": event, "data": data}))

    def _send_preview(self, run: _Run, node_id: str, png: bytes, value: int, maximum: int) -> None:
        pid = run.item.prompt_id
        progress = json.dumps(
            {
                "type": "progress",
                "data": {"value": value, "max": maximum, "prompt_id": pid, "node": node_id},
            }
        )
        with self._lock:
            sid = run.client_id
            sock = self._sockets.get(sid) if sid is not None else None
            if sock is None:
                return
            if sock.supports_preview_metadata:
                meta = json.dumps(
                    {
                        "node_id": node_id,
                        "prompt_id": pid,
                        "display_node_id": node_id,
                        "parent_node_id": None,
                        "real_node_id": node_id,
                        "image_type": "image/png",
                    }
                ).encode()
                sock.put(struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + png)
                sock.put(progress)
            else:
                sock.put(progress)
                sock.put(struct.pack(">II", PREVIEW_IMAGE, 2) + png)

    def _record(self, run: _Run, event: str, data: dict[str, Any]) -> None:
        run.messages.append([event, data])
        self._send(run.client_id, event, data)

    def _progress_state(self, run: _Run) -> None:
        pid = run.item.prompt_id
        nodes = {
            nid: {
                **st,
                "node_id": nid,
                "prompt_id": pid,
                "display_node_id": nid,
                "parent_node_id": None,
                "real_node_id": nid,
            }
            for nid, st in run.states.items()
        }
        self._send(run.client_id, "progress_state", {"prompt_id": pid, "nodes": nodes})

    # ------------------------------------------------------------------ validation

    def _validate(
        self, prompt: Any, targets: list[str] | None
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        def err(etype: str, message: str, details: str) -> dict[str, Any]:
            return {"type": etype, "message": message, "details": details, "extra_info": {}}

        if not isinstance(prompt, dict):
            raise TypeError("prompt must be a dict")  # a real server 500s here too
        outputs: list[str] = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return (
                    False,
                    err(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            class_type = node["class_type"]
            if class_type not in NODE_DEFS:
                return (
                    False,
                    err(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            if NODE_DEFS[class_type].get("output_node") and isinstance(node.get("inputs"), dict):
                if targets is None or str(node_id) in targets:
                    outputs.append(str(node_id))
        if not outputs:
            return False, err("prompt_no_outputs", "Prompt has no outputs", ""), [], {}

        validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        good: list[str] = []
        node_errors: dict[str, Any] = {}
        for out in outputs:
            ok = self._validate_node(prompt, out, validated)
            if ok:
                good.append(out)
                continue
            for nid, (valid, reasons) in validated.items():
                if not valid and reasons:
                    entry = node_errors.setdefault(
                        nid,
                        {
                            "errors": reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[nid]["class_type"],
                        },
                    )
                    entry["dependent_outputs"].append(out)
        if not good:
            return (
                False,
                err("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""),
                [],
                node_errors,
            )
        return True, None, good, node_errors

    def _validate_node(
        self,
        prompt: dict[str, Any],
        node_id: str,
        validated: dict[str, tuple[bool, list[dict[str, Any]]]],
    ) -> bool:
        if node_id in validated:
            return validated[node_id][0]
        node = prompt[node_id]
        class_type = node["class_type"]
        spec = NODE_DEFS[class_type]["input"]
        inputs = node.get("inputs") or {}
        errors: list[dict[str, Any]] = []
        valid = True
        to_check = [(name, cfg, True) for name, cfg in spec.get("required", {}).items()]
        to_check += [(name, cfg, False) for name, cfg in spec.get("optional", {}).items()]
        for name, cfg, required in to_check:
            if name not in inputs:
                if required:
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
                    valid = False
                continue
            val = inputs[name]
            kind = cfg[0]
            opts: dict[str, Any] = cfg[1] if len(cfg) > 1 else {}
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": name,
                            "extra_info": {
                                "input_name": name,
                                "input_config": cfg,
                                "received_value": val,
                            },
                        }
                    )
                    valid = False
                    continue
                src = str(val[0])
                if src not in prompt:
                    errors.append(
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": f"'{src}'",
                            "extra_info": {
                                "input_name": name,
                                "input_config": cfg,
                                "exception_message": f"'{src}'",
                                "exception_type": "KeyError",
                                "traceback": [f"KeyError: '{src}'\n"],
                                "linked_node": val,
                            },
                        }
                    )
                    valid = False
                    continue
                if not self._validate_node(prompt, src, validated):
                    valid = False
                continue
            if kind in ("INT", "FLOAT", "STRING"):
                try:
                    if kind == "INT":
                        val = int(val)
                    elif kind == "FLOAT":
                        val = float(val)
                    else:
                        val = str(val)
                except (TypeError, ValueError) as exc:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {kind} value",
                            "details": f"{name}, {val}, {exc}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": cfg,
                                "received_value": val,
                                "exception_message": str(exc),
                            },
                        }
                    )
                    valid = False
                    continue
                if kind != "STRING" and "min" in opts and val < opts["min"]:
                    errors.append(self._range_error("smaller", "min", name, cfg, val))
                    valid = False
                elif kind != "STRING" and "max" in opts and val > opts["max"]:
                    errors.append(self._range_error("bigger", "max", name, cfg, val))
                    valid = False
            if class_type == "LoadImage" and name == "image":
                if not (self.input_dir / str(val)).is_file():
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": f"image - Invalid image file: {val}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": cfg,
                                "received_value": val,
                            },
                        }
                    )
                    valid = False
        validated[node_id] = (valid, errors)
        return valid

    @staticmethod
    def _range_error(word: str, bound: str, name: str, cfg: list[Any], val: Any) -> dict[str, Any]:
        return {
            "type": f"value_{word}_than_{bound}",
            "message": f"Value {val} {word} than {bound} of {cfg[1][bound]}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": cfg, "received_value": val},
        }

    # ------------------------------------------------------------------ execution

    def _execute_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._pending and not self._stop.is_set():
                    self._lock.wait(0.1)
                if self._stop.is_set():
                    return
                item = heapq.heappop(self._pending)
                run = _Run(item)
                self._run = run
                self._broadcast_status_locked()
                self.executions[item.prompt_id] += 1
                self.executed_prompt_ids.append(item.prompt_id)
            status_str, completed = self._execute(run)
            with self._lock:
                self._history[item.prompt_id] = {
                    "prompt": item.as_tuple(),
                    "outputs": run.outputs,
                    "status": {
                        "status_str": status_str,
                        "completed": completed,
                        "messages": run.messages,
                    },
                    "meta": run.meta,
                }
                self._run = None
                self._last_node_id = None
                self._broadcast_status_locked()
            self._send(run.client_id, "executing", {"node": None, "prompt_id": item.prompt_id})

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        sigs: dict[str, str] = {}

        def sig(nid: str) -> str:
            if nid not in sigs:
                node = prompt[nid]
                parts: dict[str, Any] = {}
                for name, val in sorted((node.get("inputs") or {}).items()):
                    if isinstance(val, list) and len(val) == 2 and str(val[0]) in prompt:
                        parts[name] = ["link", sig(str(val[0])), val[1]]
                    else:
                        parts[name] = val
                raw = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
                sigs[nid] = hashlib.sha256(raw.encode()).hexdigest()
            return sigs[nid]

        for nid in prompt:
            sig(nid)
        return sigs

    def _order(self, prompt: dict[str, Any], outputs: list[str]) -> list[str]:
        order: list[str] = []

        def visit(nid: str) -> None:
            if nid in order:
                return
            for val in (prompt[nid].get("inputs") or {}).values():
                if isinstance(val, list) and len(val) == 2 and str(val[0]) in prompt:
                    visit(str(val[0]))
            order.append(nid)

        for out in outputs:
            visit(out)
        return order

    def _execute(self, run: _Run) -> tuple[str, bool]:
        item = run.item
        pid = item.prompt_id
        prompt = item.prompt
        self._interrupt.clear()
        self._record(run, "execution_start", {"prompt_id": pid, "timestamp": _now_ms()})
        sigs = self._signatures(prompt)
        order = self._order(prompt, item.outputs)
        with self._lock:
            cached_ids = [nid for nid in prompt if sigs[nid] in self._cache]
            current_outputs = list(cached_ids)
            wanted = set(sigs.values())
            self._cache = {k: v for k, v in self._cache.items() if k in wanted}
        self._record(
            run, "execution_cached", {"nodes": cached_ids, "prompt_id": pid, "timestamp": _now_ms()}
        )
        values: dict[str, tuple[Any, ...]] = {}
        node_id = order[0]
        try:
            for node_id in order:
                class_type = prompt[node_id]["class_type"]
                hit = self._cache.get(sigs[node_id])
                if hit is not None:
                    values[node_id], ui = hit
                    run.executed.append(node_id)
                    if ui:
                        self._executed(run, node_id, ui)
                        run.states[node_id] = {"value": 1, "max": 1, "state": "finished"}
                        self._progress_state(run)
                    continue
                if self._interrupt.is_set():
                    raise _Interrupted()
                run.states[node_id] = {"value": 0.0, "max": 1.0, "state": "running"}
                self._progress_state(run)
                with self._lock:
                    self._last_node_id = node_id
                self._send(
                    run.client_id,
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": pid},
                )
                inputs = self._resolve(prompt[node_id].get("inputs") or {}, values)
                out, ui = self._run_node(run, node_id, class_type, inputs)
                values[node_id] = out
                with self._lock:
                    self._cache[sigs[node_id]] = (out, ui)
                run.executed.append(node_id)
                if ui:
                    self._executed(run, node_id, ui)
                run.states[node_id] = {"value": 1.0, "max": 1.0, "state": "finished"}
                self._progress_state(run)
        except _Interrupted:
            with self._lock:
                self.interrupted_prompt_ids.append(pid)
            self._record(
                run,
                "execution_interrupted",
                {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": prompt[node_id]["class_type"],
                    "executed": list(run.executed),
                    "timestamp": _now_ms(),
                },
            )
            return "error", False
        except Exception as exc:
            inputs_repr = {k: [repr(v)] for k, v in (prompt[node_id].get("inputs") or {}).items()}
            self._record(
                run,
                "execution_error",
                {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": prompt[node_id]["class_type"],
                    "executed": list(run.executed),
                    "exception_message": str(exc),
                    "exception_type": _full_type_name(exc),
                    "traceback": traceback.format_tb(exc.__traceback__),
                    "current_inputs": inputs_repr,
                    "current_outputs": current_outputs,
                    "timestamp": _now_ms(),
                },
            )
            return "error", False
        self._record(run, "execution_success", {"prompt_id": pid, "timestamp": _now_ms()})
        return "success", True

    def _executed(self, run: _Run, node_id: str, ui: dict[str, Any]) -> None:
        run.outputs[node_id] = ui
        run.meta[node_id] = {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }
        self._send(
            run.client_id,
            "executed",
            {
                "node": node_id,
                "display_node": node_id,
                "output": ui,
                "prompt_id": run.item.prompt_id,
            },
        )

    @staticmethod
    def _resolve(inputs: dict[str, Any], values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for name, val in inputs.items():
            if isinstance(val, list) and len(val) == 2 and str(val[0]) in values:
                resolved[name] = values[str(val[0])][int(val[1])]
            else:
                resolved[name] = val
        return resolved

    def _run_node(
        self, run: _Run, node_id: str, class_type: str, inputs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        if class_type == "EmptyImage":
            w, h, n, color = (int(inputs[k]) for k in ("width", "height", "batch_size", "color"))
            rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
            batch = [tuple(_band(w, h, c) for c in rgb) for _ in range(n)]
            return (batch,), None
        if class_type == "ImageInvert":
            inverted = [
                tuple(b.point(lambda x: x * -1.0 + 1.0) for b in img) for img in inputs["image"]
            ]
            return (inverted,), None
        if class_type == "LoadImage":
            with Image.open(self.input_dir / str(inputs["image"])) as pil:
                img = _from_rgb8(pil)
            w, h = img[0].size
            return ([img], [Image.new("F", (w, h), 0.0)]), None
        if class_type in ("SaveImage", "PreviewImage"):
            return (), self._save_images(run, class_type, inputs)
        if class_type == "SaveImageWebsocket":
            images: list[FImage] = inputs["images"]
            for i, img in enumerate(images):
                self._send_preview(run, node_id, _png_bytes(img), i, len(images))
            return (), None
        if class_type == "TestSlow":
            steps = int(inputs.get("steps", 10))
            per_step = float(inputs["seconds"]) / steps
            for i in range(steps):
                end = time.monotonic() + per_step
                while time.monotonic() < end:
                    if self._interrupt.is_set():
                        raise _Interrupted()
                    time.sleep(min(0.01, max(0.0, end - time.monotonic())))
                run.states[node_id] = {
                    "value": float(i + 1),
                    "max": float(steps),
                    "state": "running",
                }
                self._progress_state(run)
                self._send(
                    run.client_id,
                    "progress",
                    {
                        "value": i + 1,
                        "max": steps,
                        "prompt_id": run.item.prompt_id,
                        "node": node_id,
                    },
                )
            return (inputs["image"],), None
        if class_type == "TestFail":
            raise RuntimeError(str(inputs["message"]))
        raise RuntimeError(f"no implementation for {class_type}")

    def _save_images(self, run: _Run, class_type: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if class_type == "SaveImage":
            base, kind, prefix = self.output_dir, "output", str(inputs["filename_prefix"])
        else:
            infix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            base, kind, prefix = self.temp_dir, "temp", f"ComfyUI_temp_{infix}"
        subfolder, name = os.path.split(os.path.normpath(prefix))
        full = os.path.abspath(os.path.join(base, subfolder))
        if os.path.commonpath((str(base), full)) != str(base):
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {full}"
                f"\n         output_dir: {base}"
                f"\n         commonpath: {os.path.commonpath((str(base), full))}"
            )
        os.makedirs(full, exist_ok=True)
        counter = 1
        for existing in os.listdir(full):
            if existing.startswith(name + "_") and existing.endswith("_.png"):
                digits = existing[len(name) + 1 : -len("_.png")]
                if digits.isdigit():
                    counter = max(counter, int(digits) + 1)
        results = []
        for img in inputs["images"]:
            info = PngImagePlugin.PngInfo()
            info.add_text("prompt", json.dumps(run.item.prompt))
            for key, val in (run.item.extra_data.get("extra_pnginfo") or {}).items():
                info.add_text(key, json.dumps(val))
            filename = f"{name}_{counter:05}_.png"
            Path(full, filename).write_bytes(_png_bytes(img, info))
            results.append({"filename": filename, "subfolder": subfolder, "type": kind})
            counter += 1
        return {"images": results}

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        path = scope["path"].removeprefix("/api")
        if path != "/ws":
            await send({"type": "websocket.close", "code": 1008})
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        sid = query.get("clientId", [""])[0] or uuid.uuid4().hex
        await send({"type": "websocket.accept"})
        sock = _Socket(sid, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self._sockets[sid] = sock  # reusing a clientId replaces the old socket
            self.ws_connections.append(sid)
            status = self._queue_info()
            sock.put(json.dumps({"type": "status", "data": {"status": status, "sid": sid}}))
            if self._run is not None and self._run.client_id == sid and self._last_node_id:
                sock.put(json.dumps({"type": "executing", "data": {"node": self._last_node_id}}))

        async def pump() -> None:
            while True:
                frame = await sock.queue.get()
                if frame is None:
                    return
                if isinstance(frame, bytes):
                    await send({"type": "websocket.send", "bytes": frame})
                else:
                    await send({"type": "websocket.send", "text": frame})

        sender = asyncio.create_task(pump())
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                first = not sock.got_first_message
                sock.got_first_message = True
                if not first or not text:
                    continue
                try:
                    parsed = json.loads(text)
                except ValueError:
                    continue
                if isinstance(parsed, dict) and parsed.get("type") == "feature_flags":
                    data = parsed.get("data") or {}
                    sock.supports_preview_metadata = bool(data.get("supports_preview_metadata"))
                    reply = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
                    sock.put(json.dumps({"type": "feature_flags", "data": reply}))
        finally:
            sender.cancel()
            with self._lock:
                if self._sockets.get(sid) is sock:
                    del self._sockets[sid]

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method = scope["method"]
        path = scope["path"]
        query_string = scope.get("query_string", b"").decode()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((method, path + (f"?{query_string}" if query_string else "")))
        if path.startswith("/api/"):
            path = path[len("/api") :]
        query = {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}

        origin = headers.get("origin")
        if origin and urlsplit(origin).netloc != headers.get("host"):
            await _respond(send, 403, b"", "text/plain")
            return
        try:
            status, payload, ctype, extra = self._route(method, path, query, headers, body)
        except Exception:
            traceback.print_exc()
            status, payload, ctype, extra = (
                500,
                b"500 Internal Server Error\n\nServer got itself in trouble",
                "text/plain; charset=utf-8",
                {},
            )
        await _respond(send, status, payload, ctype, extra)

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str, dict[str, str]]:
        if method == "GET":
            if path == "/prompt":
                with self._lock:
                    return _json(self._queue_info())
            if path == "/queue":
                with self._lock:
                    running = [self._run.item.as_tuple()] if self._run else []
                    pending = [i.as_tuple() for i in sorted(self._pending)]
                return _json({"queue_running": running, "queue_pending": pending})
            if path == "/history":
                return _json(self._history_slice(query))
            if path.startswith("/history/"):
                pid = path[len("/history/") :]
                with self._lock:
                    entry = self._history.get(pid)
                return _json({pid: entry} if entry is not None else {})
            if path == "/view":
                return self._view(query)
            if path == "/object_info":
                return _json({name: _object_info_entry(name) for name in NODE_DEFS})
            if path.startswith("/object_info/"):
                name = path[len("/object_info/") :]
                return _json({name: _object_info_entry(name)} if name in NODE_DEFS else {})
            if path == "/system_stats":
                return _json(_system_stats())
            if path == "/features":
                return _json(
                    {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
                )
            if path == "/embeddings":
                return _json([])
            if path == "/models":
                return _json(["checkpoints", "loras", "vae"])
            if path == "/":
                return 200, b"<!doctype html><title>ComfyUI</title>", "text/html", {}
        if method == "POST":
            if path == "/prompt":
                return self._post_prompt(body)
            if path == "/queue":
                return self._post_queue(body)
            if path == "/interrupt":
                return self._post_interrupt(body)
            if path == "/history":
                data = json.loads(body or b"{}")
                with self._lock:
                    if data.get("clear"):
                        self._history.clear()
                    for pid in data.get("delete", []):
                        self._history.pop(pid, None)
                return 200, b"", "application/octet-stream", {}
            if path == "/free":
                return 200, b"", "application/octet-stream", {}
            if path in ("/upload/image", "/upload/mask"):
                return self._upload(headers, body)
        return 404, b"404: Not Found", "text/plain; charset=utf-8", {}

    def _post_prompt(self, body: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        try:
            data = json.loads(body)
        except ValueError:
            with self._lock:
                self.prompt_posts.append(None)
            raise
        with self._lock:
            self.prompt_posts.append(data)
            if isinstance(data, dict) and "number" in data:
                number: float = float(data["number"])
            else:
                number = self.number
                if isinstance(data, dict) and data.get("front"):
                    number = -number
                self.number += 1
        if not isinstance(data, dict) or "prompt" not in data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return _json({"error": error, "node_errors": {}}, 400)
        prompt = data["prompt"]
        prompt_id = str(data.get("prompt_id") or uuid.uuid4())
        targets = data.get("partial_execution_targets")
        ok, error_body, outputs, node_errors = self._validate(prompt, targets)
        if not ok:
            return _json({"error": error_body, "node_errors": node_errors}, 400)
        extra_data = dict(data.get("extra_data") or {})
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
        item = _Item(number, next(self._seq), prompt_id, copy.deepcopy(prompt), extra_data, outputs)
        with self._lock:
            heapq.heappush(self._pending, item)
            self._broadcast_status_locked()
            self._lock.notify_all()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _post_queue(self, body: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        data = json.loads(body or b"{}")
        with self._lock:
            self.queue_requests.append(data)
            if data.get("clear"):
                self._pending.clear()
            if "delete" in data:
                ids = set(data["delete"])
                self._pending = [i for i in self._pending if i.prompt_id not in ids]
                heapq.heapify(self._pending)
            self._broadcast_status_locked()
        return 200, b"", "application/octet-stream", {}

    def _post_interrupt(self, body: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        data: Any = None
        if body.strip():
            try:
                data = json.loads(body)
            except ValueError:
                data = None
        with self._lock:
            self.interrupt_requests.append(data)
            running = self._run.item.prompt_id if self._run else None
            if isinstance(data, dict) and "prompt_id" in data:
                if data["prompt_id"] == running:
                    self._interrupt.set()
                # else: "not currently running", nothing happens
            else:
                self._interrupt.set()
        return 200, b"", "application/octet-stream", {}

    def _history_slice(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            items = list(self._history.items())
        max_items = int(query["max_items"]) if query.get("max_items") else None
        offset = int(query.get("offset") or -1)
        if offset < 0 and max_items is not None:
            offset = len(items) - max_items
        offset = max(offset, 0)
        end = offset + max_items if max_items is not None else None
        return dict(items[offset:end])

    def _dir_for(self, kind: str) -> Path | None:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    def _view(self, query: dict[str, str]) -> tuple[int, bytes, str, dict[str, str]]:
        filename = query.get("filename")
        if filename is None:
            return 404, b"", "application/octet-stream", {}
        if not filename or filename.startswith("/") or ".." in filename:
            return 400, b"", "application/octet-stream", {}
        base = self._dir_for(query.get("type", "output"))
        if base is None:
            return 400, b"", "application/octet-stream", {}
        full_dir = os.path.abspath(os.path.join(base, query.get("subfolder", "")))
        if os.path.commonpath((full_dir, str(base))) != str(base):
            return 403, b"", "application/octet-stream", {}
        path = Path(full_dir, os.path.basename(filename))
        if not path.is_file():
            return 404, b"", "application/octet-stream", {}
        name = path.name
        if "preview" in query or query.get("channel") in ("rgb", "a"):
            with Image.open(path) as pil:
                if "preview" in query:
                    fmt, _, quality = query["preview"].partition(";")
                    fmt = fmt if fmt in ("webp", "jpeg") else "webp"
                    buf = io.BytesIO()
                    pil.convert("RGB").save(buf, format=fmt, quality=int(quality or 90))
                    return (
                        200,
                        buf.getvalue(),
                        f"image/{fmt}",
                        {"Content-Disposition": f'filename="{name}"'},
                    )
                buf = io.BytesIO()
                if query["channel"] == "rgb":
                    pil.convert("RGB").save(buf, format="PNG")
                else:
                    rgba = pil.convert("RGBA")
                    Image.merge(
                        "RGBA", [Image.new("L", rgba.size, 0)] * 3 + [rgba.getchannel("A")]
                    ).save(buf, "PNG")
                return (
                    200,
                    buf.getvalue(),
                    "image/png",
                    {"Content-Disposition": f'filename="{name}"'},
                )
        content = path.read_bytes()
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype in ("text/html", "text/javascript", "application/javascript", "text/css"):
            ctype = "application/octet-stream"
        stat = path.stat()
        return (
            200,
            content,
            ctype,
            {
                "Content-Disposition": f'filename="{name}"',
                "ETag": f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"',
                "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
                "Accept-Ranges": "bytes",
            },
        )

    def _upload(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str, dict[str, str]]:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return 400, b"", "application/octet-stream", {}
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        fields: dict[str, str] = {}
        image: tuple[str, bytes] | None = None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if name == "image" and part.get_filename():
                image = (str(part.get_filename()), payload)
            elif isinstance(name, str):
                fields[name] = payload.decode()
        if image is None:
            return 400, b"", "application/octet-stream", {}
        kind = fields.get("type", "input")
        base = self._dir_for(kind)
        if base is None:
            return 400, b"", "application/octet-stream", {}
        subfolder = fields.get("subfolder", "")
        folder = os.path.abspath(os.path.join(base, os.path.normpath(subfolder)))
        filename, content = image
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((str(base), filepath)) != str(base):
            return 400, b"", "application/octet-stream", {}
        os.makedirs(folder, exist_ok=True)
        duplicate = False
        if fields.get("overwrite", "").lower() not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            i = 1
            while os.path.exists(filepath):
                if Path(filepath).read_bytes() == content:
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            Path(filepath).write_bytes(content)
        return _json({"name": filename, "subfolder": subfolder, "type": kind})


def _json(data: Any, status: int = 200) -> tuple[int, bytes, str, dict[str, str]]:
    return status, json.dumps(data).encode(), "application/json; charset=utf-8", {}


async def _respond(
    send: Send, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
) -> None:
    headers: Iterable[tuple[str, str]] = [
        ("content-type", ctype),
        ("content-length", str(len(body))),
        *(extra or {}).items(),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _system_stats() -> dict[str, Any]:
    return {
        "system": {
            "os": "posix",
            "ram_total": 16 * 2**30,
            "ram_free": 8 * 2**30,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": sys.version,
            "pytorch_version": "2.14.1+cu130",
            "embedded_python": False,
            "argv": ["main.py", "--cpu"],
        },
        "devices": [
            {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": 16 * 2**30,
                "vram_free": 8 * 2**30,
                "torch_vram_total": 16 * 2**30,
                "torch_vram_free": 8 * 2**30,
            }
        ],
    }


def invert_graph(
    *, prefix: str = "proto_test", color: int = 0x336699, size: int = 64, slow: float | None = None
) -> dict[str, Any]:
    """EmptyImage -> ImageInvert [-> TestSlow] -> SaveImage, as in the protocol notes."""
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
    if slow is not None:
        graph["4"] = {
            "class_type": "TestSlow",
            "inputs": {"image": ["2", 0], "seconds": slow, "steps": 5},
        }
        graph["3"]["inputs"]["images"] = ["4", 0]
    return graph


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ComfyUI protocol test peer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--root", default=None, help="folder for output/, input/ and temp/")
    args = parser.parse_args(argv)
    ComfyTestServer(args.root, host=args.host, port=args.port).serve_forever()


if __name__ == "__main__":
    main()
