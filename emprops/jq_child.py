"""The jq evaluator's helper process (`python -I jq_child.py MEMORY_MB`): see emprops/jqbox.py.

It imports nothing from the project (it runs isolated, without the project on its path) and is
started with an empty environment, so a filter's `$ENV` / `env` sees nothing. Its address space
is capped (RLIMIT_AS) and each request gets a CPU-time allowance (RLIMIT_CPU): jq runs in C and
cannot be interrupted, so a runaway ends this process, never the caller.
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import sys
from typing import Any


def _send(fd: int, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].removeprefix("jq: error: ") if lines else type(exc).__name__


def _address_space() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:  # pragma: no cover - runs in the helper process
    import jq  # type: ignore[import-not-found,unused-ignore]  # a C extension without stubs

    memory_mb = int(sys.argv[1])
    max_result = int(sys.argv[2])
    # Keep the protocol on a private descriptor, so nothing printed on fd 1 can corrupt it.
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    cap = _address_space() + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)

    compiled = functools.lru_cache(maxsize=256)(jq.compile)

    def run(request: dict[str, Any]) -> dict[str, Any]:
        program = request["program"]
        args = request.get("args")
        try:
            prog = jq.compile(program, args=args) if args else compiled(program)
        except ValueError as exc:
            return {"ok": False, "kind": "program", "message": _first_line(exc)}
        if request.get("op") == "check":
            return {"ok": True}
        try:
            value = prog.input_text(request["input"]).first()
        except StopIteration:
            return {"ok": True, "empty": True}
        except ValueError as exc:
            return {"ok": False, "kind": "runtime", "message": _first_line(exc)}
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return {"ok": False, "kind": "runtime", "message": "the result is not JSON (NaN)"}
        if len(text) > max_result:
            return {"ok": False, "kind": "limit",
                    "message": f"the result is larger than {max_result // 1_000_000} MB"}
        return {"ok": True, "json": text}

    _send(protocol_fd, {"ready": True})
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
            request_id = request["id"]
        except (ValueError, KeyError, TypeError):
            return 2
        _send(protocol_fd, {"id": request_id, "ack": True})
        # SIGXCPU ends this process once the request has used its CPU allowance (a backstop:
        # the parent's wall-clock deadline normally kills it first).
        usage = resource.getrusage(resource.RUSAGE_SELF)
        allowance = math.ceil(usage.ru_utime + usage.ru_stime + float(request["timeout_s"])) + 1
        soft = allowance if cpu_hard == resource.RLIM_INFINITY else min(allowance, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
        try:
            response = run(request)
        except MemoryError:
            _send(protocol_fd, {"id": request_id, "ok": False, "kind": "limit", "fatal": True,
                                "message": f"jq went over its memory limit ({memory_mb} MB)"})
            return 3
        _send(protocol_fd, {"id": request_id, **response})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
