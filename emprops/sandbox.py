"""Run untrusted JavaScript (credits scripts, polling expressions) out of process.

Every evaluation runs in a fresh V8 isolate inside one persistent helper process per calling
process, so an infinite loop, a memory bomb or a V8 abort can at worst cost that helper, which is
killed and restarted; the Celery worker or web process that asked is never at risk. The helper
speaks newline-delimited JSON over its stdin/stdout:

    parent -> child  {"id": n, "source": str, "expression": str, "timeout_s": f, "memory_mb": n}
    child  -> parent {"id": n, "ack": true}                      (request read, about to run it)
    child  -> parent {"id": n, "ok": true, "json": "<JSON text of the result>"}
                  or {"id": n, "ok": false, "kind": "timeout"|"memory"|"script", "message": str}

The ack tells a helper that died between calls (kill -9, OOM killer) from one that a script
killed: the first is retried once on a fresh helper, transparently; the second is an error.

This module imports nothing from Django and nothing heavy: the helper runs this very file as a
script (`python -I sandbox.py`), and only the helper imports mini-racer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import IO, Any, ClassVar

logger = logging.getLogger(__name__)

CREDITS_TIMEOUT_S = 1.0
CREDITS_MEMORY_MB = 32
DEFAULT_COST = Decimal(1)
# A credits script answering more than this is treated as broken (it would overflow the ledger).
MAX_COST = Decimal(1_000_000_000)
_COST_QUANTUM = Decimal("0.0001")

# Beyond the script's own time limit, how long the parent waits before declaring the helper hung.
_GRACE_S = 2.0
_ACK_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 30.0
# Results and protocol lines are bounded so a script cannot flood the calling process.
_MAX_RESULT_CHARS = 1_000_000
_MAX_LINE_BYTES = 4 * _MAX_RESULT_CHARS + 65_536
_CHILD_FLAG = "--emprops-sandbox-child"
_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*$")


class SandboxError(Exception):
    """JavaScript could not be evaluated; `kind` says why."""

    kind: ClassVar[str] = "error"


class SandboxTimeout(SandboxError):
    """The script ran past its time limit (or the helper stopped answering)."""

    kind = "timeout"


class SandboxMemoryError(SandboxError):
    """The script went over its memory limit."""

    kind = "memory"


class SandboxScriptError(SandboxError):
    """The script threw, did not parse, or returned something that is not JSON."""

    kind = "script"


class SandboxCrash(SandboxError):
    """The helper process died while running the script, or could not be started."""

    kind = "crash"


_ERRORS_BY_KIND: dict[str, type[SandboxError]] = {
    cls.kind: cls for cls in (SandboxTimeout, SandboxMemoryError, SandboxScriptError, SandboxCrash)
}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def evaluate(source: str, *, expression: str, timeout_s: float = 1.0, memory_mb: int = 64) -> Any:
    """Run `source`, then return the JSON value of `expression` (undefined becomes None).

    Raises SandboxError (a subclass per kind) on timeout, memory, script errors, results that
    are not JSON-serialisable, and helper crashes.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if memory_mb <= 0:
        raise ValueError("memory_mb must be positive")
    request = {
        "source": source,
        "expression": expression,
        "timeout_s": float(timeout_s),
        "memory_mb": int(memory_mb),
    }
    return _pool.run(request, timeout_s=timeout_s)


def call_function(
    source: str, name: str, arg: Any, *, timeout_s: float = 1.0, memory_mb: int = 64
) -> Any:
    """Run `source`, then call the global function `name` with the JSON value `arg`.

    `name` is an identifier or a dotted path (`lib.cost`); `arg` must be JSON-serialisable
    (ValueError/TypeError otherwise). Errors as for evaluate().
    """
    if not _IDENTIFIER_PATH.match(name):
        raise ValueError(f"not a JavaScript function name: {name!r}")
    expression = f"({name})({_js_literal(arg)})"
    return evaluate(source, expression=expression, timeout_s=timeout_s, memory_mb=memory_mb)


def credits_cost(script: str | None, payload: Mapping[str, Any]) -> Decimal:
    """The cost of one step: `computeCost(payload)` of a workflow's credits script.

    Accepts `{cost: n}` or a bare number (numeric strings too), finite and non-negative,
    quantized to 4 places. Anything else (no script, no computeCost, a throw, NaN, a negative or
    absurd value, timeout, memory) costs DEFAULT_COST, never an exception.
    """
    if not script or not script.strip():
        return DEFAULT_COST
    try:
        arg = _js_literal(payload)
    except (TypeError, ValueError):
        logger.warning("credits script not run: the step payload is not JSON")
        return DEFAULT_COST
    # typeof keeps a script without computeCost from being a ReferenceError (it costs 1 either way,
    # but a clean null is cheaper to log than an exception).
    expression = f'(typeof computeCost === "function" ? computeCost({arg}) : undefined)'
    try:
        result = evaluate(
            script,
            expression=expression,
            timeout_s=CREDITS_TIMEOUT_S,
            memory_mb=CREDITS_MEMORY_MB,
        )
    except SandboxError as exc:
        logger.warning("credits script failed (%s): %s", exc.kind, str(exc)[:200])
        return DEFAULT_COST
    cost = _cost_from_result(result)
    if cost is None:
        logger.warning("credits script returned no usable cost (%s)", type(result).__name__)
        return DEFAULT_COST
    return cost


def eval_condition(expression: str, data: Any, *, timeout_s: float = 1.0) -> bool:
    """The truthiness of a JavaScript expression over `data` (a polling response).

    Raises SandboxError when the expression does not parse, throws or runs too long.
    """
    # The newline lets an expression end in a // comment without swallowing the parenthesis.
    wrapped = f"(function (data) {{ return !!({expression}\n); }})({_js_literal(data)})"
    return bool(evaluate("", expression=wrapped, timeout_s=timeout_s))


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _js_literal(value: Any) -> str:
    # JSON is a JavaScript expression (ES2019 allows U+2028 in strings; ensure_ascii sidesteps it).
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _cost_from_result(result: Any) -> Decimal | None:
    if isinstance(result, Mapping):
        result = result.get("cost")
    if isinstance(result, bool) or result is None:
        return None
    if isinstance(result, int | float):
        if not math.isfinite(result):
            return None
        value = Decimal(repr(result)) if isinstance(result, float) else Decimal(result)
    elif isinstance(result, str):
        try:
            value = Decimal(result.strip())
        except InvalidOperation:
            return None
        if not value.is_finite():
            return None
    else:
        return None
    if value < 0 or value > MAX_COST:
        return None
    return value.quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------------
# Parent side: one helper process per calling process
# --------------------------------------------------------------------------------------------


class _HelperGone(Exception):
    """The helper closed its stdout (died) or broke the protocol."""


class _HelperSilent(Exception):
    """The helper did not answer in time."""


class _Helper:
    """One running sandbox process and the parent's end of its pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), _CHILD_FLAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # The helper needs no secrets from our environment, nor our terminal's signals:
            # it exits when its stdin closes.
            env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"},
            cwd="/",
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout
        self._in_fd = self._in.fileno()
        self._out_fd = self._out.fileno()
        os.set_blocking(self._in_fd, False)
        self._selector = selectors.DefaultSelector()
        self._buffer = bytearray()
        try:
            ready = self.read_line(time.monotonic() + _START_TIMEOUT_S)
        except (_HelperGone, _HelperSilent) as exc:
            self.kill()
            raise SandboxCrash(f"the sandbox process did not start: {exc}") from exc
        if ready.get("ready") is not True:
            self.kill()
            raise SandboxCrash("the sandbox process did not start")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._in_fd, view)
            except BlockingIOError:
                self._wait(self._in_fd, selectors.EVENT_WRITE, deadline)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _HelperGone("stdin closed") from exc
            view = view[written:]

    def read_line(self, deadline: float) -> dict[str, Any]:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                try:
                    message = json.loads(line)
                except ValueError as exc:
                    raise _HelperGone("unreadable line") from exc
                if not isinstance(message, dict):
                    raise _HelperGone("unexpected line")
                return message
            if len(self._buffer) > _MAX_LINE_BYTES:
                raise _HelperGone("line too long")
            self._wait(self._out_fd, selectors.EVENT_READ, deadline)
            chunk = os.read(self._out_fd, 1 << 16)
            if not chunk:
                raise _HelperGone(f"exited ({self.proc.poll()})")
            self._buffer += chunk

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _HelperSilent("no answer in time")
        self._selector.register(fd, event)
        try:
            ready = self._selector.select(remaining)
        finally:
            self._selector.unregister(fd)
        if not ready:
            raise _HelperSilent("no answer in time")

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
        with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.abandon()

    def abandon(self) -> None:
        """Close our ends of the pipes without touching the process (used after fork)."""
        self._selector.close()
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
                stream.close()


class _Pool:
    """The calling process's helper: started lazily, restarted after a crash, hang or fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._helper: _Helper | None = None
        self._owner_pid = os.getpid()
        self._ids = itertools.count(1)

    def after_fork_in_child(self) -> None:
        # The forked process must neither share the parent's helper (interleaved pipe traffic)
        # nor inherit a lock some other thread held at fork time.
        helper, self._helper = self._helper, None
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        if helper is not None:
            helper.abandon()

    def child_pid(self) -> int | None:
        """The helper's pid, if one is running (for tests and diagnostics)."""
        helper = self._helper
        return helper.proc.pid if helper is not None and self._owner_pid == os.getpid() else None

    def shutdown(self) -> None:
        with self._lock:
            if self._helper is not None:
                self._helper.kill()
                self._helper = None

    def run(self, request: dict[str, Any], *, timeout_s: float) -> Any:
        if self._owner_pid != os.getpid():  # forked without the at-fork hook (should not happen)
            self.after_fork_in_child()
        with self._lock:
            response = self._exchange(request, timeout_s=timeout_s)
        if response.get("ok"):
            text = response.get("json")
            if not isinstance(text, str):
                raise SandboxCrash("malformed answer from the sandbox")
            return json.loads(text)
        error = _ERRORS_BY_KIND.get(str(response.get("kind")), SandboxScriptError)
        raise error(str(response.get("message") or error.kind))

    def _exchange(self, request: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
        for attempt in (1, 2):
            helper = self._healthy_helper()
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, **request}, separators=(",", ":")).encode()
            try:
                helper.write(line + b"\n", time.monotonic() + _ACK_TIMEOUT_S)
                ack = helper.read_line(time.monotonic() + _ACK_TIMEOUT_S)
                if ack.get("id") != request_id or ack.get("ack") is not True:
                    raise _HelperGone("out of step")
            except (_HelperGone, _HelperSilent) as exc:
                # The helper died before it started on this request (e.g. killed while idle):
                # nothing of the script ran, so one retry on a fresh helper is safe.
                self._discard(helper)
                if attempt == 2:
                    raise SandboxCrash(f"the sandbox process is unavailable: {exc}") from exc
                continue
            try:
                response = helper.read_line(time.monotonic() + timeout_s + _GRACE_S)
                if response.get("id") != request_id:
                    raise _HelperGone("out of step")
            except _HelperSilent as exc:
                self._discard(helper)
                raise SandboxTimeout("the script did not finish in time") from exc
            except _HelperGone as exc:
                self._discard(helper)
                raise SandboxCrash(f"the sandbox process died running the script: {exc}") from exc
            if response.get("fatal"):
                self._discard(helper)
            return response
        raise AssertionError("unreachable")

    def _healthy_helper(self) -> _Helper:
        if self._helper is not None and not self._helper.alive:
            self._discard(self._helper)
        if self._helper is None:
            self._helper = _Helper()
        return self._helper

    def _discard(self, helper: _Helper) -> None:
        helper.kill()
        if self._helper is helper:
            self._helper = None


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.after_fork_in_child)


# --------------------------------------------------------------------------------------------
# Child side: the helper process itself (runs this file as a script)
# --------------------------------------------------------------------------------------------

# Globals a script has no use for and that could hurt: timers (mini-racer installs them), and
# every way to allocate memory outside the V8 heap, which the heap limit does not count.
_HARDEN_JS = """
(function () {
  const names = ["setTimeout", "clearTimeout", "__timer_manager", "SharedArrayBuffer",
    "ArrayBuffer", "DataView", "Atomics", "WebAssembly", "Int8Array", "Uint8Array",
    "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array",
    "Float16Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
    "require", "process", "fetch", "XMLHttpRequest", "importScripts"];
  for (const name of names) {
    try { delete globalThis[name]; } catch (e) {}
    if (name in globalThis) {
      try {
        Object.defineProperty(globalThis, name, {value: undefined, writable: false});
      } catch (e) {
        try { globalThis[name] = undefined; } catch (e2) {}
      }
    }
  }
})();
"""

_RESULT_JS = """
(function () {
  const value = (%s
  );
  if (value === undefined) return "null";
  const text = JSON.stringify(value);
  if (typeof text !== "string") {
    throw new TypeError("the result is not JSON-serialisable (" + typeof value + ")");
  }
  return text;
})()
"""


def _child_main() -> int:  # pragma: no cover - runs in the helper process
    import asyncio

    from py_mini_racer import (
        JSEvalException,
        JSOOMException,
        JSTimeoutException,
        MiniRacer,
        mini_racer,
    )

    # Keep the protocol on a private descriptor, so nothing printed by V8 or a library on fd 1
    # can corrupt it.
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    write_lock = threading.Lock()
    armed: dict[str, Any] = {}

    def send(message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(protocol_fd, view) :]

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="v8-loop", daemon=True).start()

    def fresh() -> tuple[Any, MiniRacer]:
        maker = mini_racer(loop)
        racer = maker.__enter__()
        racer.eval(_HARDEN_JS)
        return maker, racer

    def watch_memory() -> None:
        # Backstop for memory V8's heap limit cannot see (off-heap allocations): past the cap
        # the helper answers "memory" and exits, and the parent starts a fresh one.
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            time.sleep(0.005)
            try:
                with open("/proc/self/statm", "rb") as statm:
                    rss = int(statm.read().split()[1]) * page
            except (OSError, ValueError, IndexError):
                return
            with write_lock:
                if armed and rss > armed["cap"]:
                    send(
                        {
                            "id": armed["id"],
                            "ok": False,
                            "kind": "memory",
                            "message": "JavaScript memory limit reached",
                            "fatal": True,
                        }
                    )
                    os._exit(75)

    def current_rss() -> int:
        try:
            with open("/proc/self/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    threading.Thread(target=watch_memory, name="rss-watch", daemon=True).start()

    def run(racer: MiniRacer, request: dict[str, Any]) -> dict[str, Any]:
        budget = float(request["timeout_s"])
        started = time.monotonic()
        racer.set_hard_memory_limit(int(request["memory_mb"]) * 1024 * 1024)
        try:
            if request["source"]:
                racer.eval(request["source"], timeout_sec=budget)
            remaining = budget - (time.monotonic() - started)
            if remaining <= 0:
                raise JSTimeoutException()
            text = racer.eval(_RESULT_JS % request["expression"], timeout_sec=remaining)
        except JSTimeoutException:
            return {
                "ok": False,
                "kind": "timeout",
                "message": f"script ran over {budget:g} s",
            }
        except JSOOMException:
            return {
                "ok": False,
                "kind": "memory",
                "message": "JavaScript memory limit reached",
            }
        except JSEvalException as exc:
            if racer.was_hard_memory_limit_reached():
                return {
                    "ok": False,
                    "kind": "memory",
                    "message": "JavaScript memory limit reached",
                }
            return {"ok": False, "kind": "script", "message": str(exc)[:2000]}
        if not isinstance(text, str):
            return {
                "ok": False,
                "kind": "script",
                "message": "the result is not JSON-serialisable",
            }
        if len(text) > _MAX_RESULT_CHARS:
            return {"ok": False, "kind": "script", "message": "the result is too large"}
        return {"ok": True, "json": text}

    spare = fresh()
    send({"ready": True})
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
            request_id = request["id"]
        except (ValueError, KeyError, TypeError):
            return 2
        send({"id": request_id, "ack": True})
        maker, racer = spare
        memory_mb = int(request.get("memory_mb") or 64)
        with write_lock:
            armed.update(id=request_id, cap=current_rss() + (2 * memory_mb + 64) * 1024 * 1024)
        try:
            response = run(racer, request)
        except Exception as exc:  # noqa: BLE001 - any failure is the script's, reported as such
            response = {"ok": False, "kind": "script", "message": str(exc)[:2000]}
        with write_lock:
            armed.clear()
            send({"id": request_id, **response})
        # Prepare the next isolate while the parent is busy with the answer.
        maker.__exit__(None, None, None)
        spare = fresh()
    return 0


if __name__ == "__main__" and _CHILD_FLAG in sys.argv:  # pragma: no cover
    sys.exit(_child_main())
