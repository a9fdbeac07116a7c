"""The JavaScript sandbox's helper process (`python -I sandbox_child.py`): see emprops/sandbox.py.

It imports nothing from the project (it runs isolated, without the project on its path); only
this process imports mini-racer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

# Results are bounded so a script cannot flood the calling process (the parent bounds lines too).
_MAX_RESULT_CHARS = 1_000_000

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child_main())
