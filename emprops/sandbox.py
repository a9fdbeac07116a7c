"""Run untrusted JavaScript (credits scripts, polling expressions) out of process.

Every evaluation runs in a fresh V8 isolate inside one persistent helper process per calling
process, so an infinite loop, a memory bomb or a V8 abort can at worst cost that helper, which is
killed and restarted; the Celery worker or web process that asked is never at risk. The helper
speaks newline-delimited JSON over its stdin/stdout:

    parent -> child  {"id": n, "source": str, "expression": str, "timeout_s": f, "memory_mb": n}
    child  -> parent {"id": n, "ack": true}                      (request read, about to run it)
    child  -> parent {"id": n, "ok": true, "json": "<JSON text of the result>"}
                  or {"id": n, "ok": false, "kind": "timeout"|"memory"|"script", "message": str}

The helper's life cycle (ack, retry of a helper that died idle, kill on silence) is
emprops/helper_pool.py's. This module imports nothing from Django and nothing heavy: the helper
runs `emprops/sandbox_child.py` as an isolated script, and only the helper imports mini-racer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

from emprops.helper_pool import HelperPool

logger = logging.getLogger(__name__)

CREDITS_TIMEOUT_S = 1.0
CREDITS_MEMORY_MB = 32
DEFAULT_COST = Decimal(1)
# A credits script answering more than this is treated as broken (it would overflow the ledger).
MAX_COST = Decimal(1_000_000_000)
_COST_QUANTUM = Decimal("0.0001")

# Beyond the script's own time limit, how long the parent waits before declaring the helper hung.
_GRACE_S = 2.0
# Results and protocol lines are bounded so a script cannot flood the calling process.
_MAX_RESULT_CHARS = 1_000_000
_MAX_LINE_BYTES = 4 * _MAX_RESULT_CHARS + 65_536
_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
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


def credits_check(script: str, payload: Mapping[str, Any]) -> Decimal:
    """The cost credits_cost would give, run with the same limits, or SandboxError saying why it
    would fall back to DEFAULT_COST (no computeCost, a throw, a timeout, no usable number): for
    staff checking a workflow before it goes live."""
    try:
        arg = _js_literal(payload)
    except (TypeError, ValueError):
        raise SandboxScriptError("the payload is not JSON") from None
    expression = f'(typeof computeCost === "function" ? computeCost({arg}) : undefined)'
    result = evaluate(script, expression=expression, timeout_s=CREDITS_TIMEOUT_S,
                      memory_mb=CREDITS_MEMORY_MB)
    if result is None:
        raise SandboxScriptError("the script defines no function computeCost, or it returned "
                                 "nothing")
    cost = _cost_from_result(result)
    if cost is None:
        shown = json.dumps(result, default=str)[:100]
        raise SandboxScriptError(f"computeCost returned {shown}, not a cost (a number from 0 to "
                                 f"{MAX_COST}, or {{cost: number}})")
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
# Parent side: one helper process per calling process (emprops/helper_pool.py)
# --------------------------------------------------------------------------------------------


class _Pool:
    """Runs requests in the sandbox helper and turns its answers into values or SandboxErrors."""

    def __init__(self) -> None:
        self._helpers = HelperPool(
            [sys.executable, "-I", _CHILD_SCRIPT],
            grace_s=_GRACE_S,
            max_line_bytes=_MAX_LINE_BYTES,
            on_unavailable=lambda why: SandboxCrash(f"the sandbox process is unavailable: {why}"),
            on_timeout=lambda why: SandboxTimeout("the script did not finish in time"),
            on_died=lambda why: SandboxCrash(f"the sandbox process died running the script: {why}"),
        )

    def child_pid(self) -> int | None:
        return self._helpers.child_pid()

    def shutdown(self) -> None:
        self._helpers.shutdown()

    def run(self, request: dict[str, Any], *, timeout_s: float) -> Any:
        response = self._helpers.exchange(request, timeout_s=timeout_s)
        if response.get("ok"):
            text = response.get("json")
            if not isinstance(text, str):
                raise SandboxCrash("malformed answer from the sandbox")
            return json.loads(text)
        error = _ERRORS_BY_KIND.get(str(response.get("kind")), SandboxScriptError)
        raise error(str(response.get("message") or error.kind))


_pool = _Pool()
