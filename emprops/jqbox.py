"""Run user and staff jq filters (`$ref` paths, fetch_api expressions) with time and memory limits.

jq runs in C: a filter such as `def f: f; f` or `last(range(1e9))` cannot be interrupted by a
signal and would hold a worker slot for ever. Filters therefore run in a helper process per
calling process (emprops/helper_pool.py, `emprops/jq_child.py`) whose address space is capped and
which is SIGKILLed when it overruns its time; the caller gets JqLimitError and a fresh helper
serves the next filter.

Plain paths (`.`, `.src`, `.data.items[0]`, `.["a b"]`, `.[-1]`) are the common case and are
evaluated in-process, with jq's own semantics (missing keys and indices give null, numbers come
back as jq gives them); anything else, including a plain path that meets the wrong type (so the
error message is jq's own), goes to the helper.

This module imports nothing from Django; the limits come from the environment.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from emprops.helper_pool import HelperPool

TIMEOUT_S: Final = float(os.environ.get("JQ_TIMEOUT_SECONDS", "2"))
MEMORY_MB: Final = int(os.environ.get("JQ_MEMORY_MB", "256"))
MAX_PROGRAM_CHARS: Final = 4000
MAX_RESULT_BYTES: Final = 32 * 1024 * 1024
# How long past the time limit the parent waits before it kills the helper.
_GRACE_S = 0.25
_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jq_child.py")


class JqError(Exception):
    """A filter could not give a value; `kind` says why."""

    kind: ClassVar[str] = "error"


class JqProgramError(JqError):
    """The filter does not compile (or is too long)."""

    kind = "program"


class JqRuntimeError(JqError):
    """The filter failed on this input (e.g. indexing a string with a key)."""

    kind = "runtime"


class JqEmpty(JqError):
    """The filter gave no value."""

    kind = "empty"


class JqLimitError(JqError):
    """The filter ran past its time or memory limit, or its result was too large.

    It is the filter's doing: running it again would do the same, so it is never retried.
    """

    kind = "limit"


class JqUnavailable(JqError):
    """The evaluator process could not be started or reached."""

    kind = "unavailable"


_ERRORS: dict[str, type[JqError]] = {
    cls.kind: cls for cls in (JqProgramError, JqRuntimeError, JqLimitError)
}

_pool = HelperPool(
    [sys.executable, "-I", _CHILD_SCRIPT, str(MEMORY_MB), str(MAX_RESULT_BYTES)],
    grace_s=_GRACE_S,
    max_line_bytes=4 * MAX_RESULT_BYTES + 65_536,
    on_unavailable=lambda why: JqUnavailable(f"the jq evaluator is unavailable: {why}"),
    on_timeout=lambda why: JqLimitError(f"ran over its time limit ({TIMEOUT_S:g} s)"),
    on_died=lambda why: JqLimitError(
        f"went over its memory or CPU limit ({MEMORY_MB} MB, {TIMEOUT_S:g} s)"),
)


def first(program: str, value: Any, *, args: Mapping[str, Any] | None = None,
          timeout_s: float = TIMEOUT_S) -> Any:
    """The filter's first result over `value`.

    `args` become jq variables (`$name`), never program text. Raises JqProgramError,
    JqRuntimeError, JqEmpty (no result), JqLimitError or JqUnavailable.
    """
    _check_length(program)
    if not args:
        steps = plain_path(program)
        if steps is not None:
            found, result = _walk(value, steps)
            if found:
                return _as_jq_gives(result)
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JqRuntimeError(f"the input is not JSON: {exc}") from None
    response = _pool.exchange(
        {"op": "first", "program": program, "input": text, "args": dict(args or {}),
         "timeout_s": timeout_s},
        timeout_s=timeout_s,
    )
    if response.get("ok"):
        if response.get("empty"):
            raise JqEmpty("the filter gave no value")
        return json.loads(str(response.get("json")))
    raise _ERRORS.get(str(response.get("kind")), JqRuntimeError)(str(response.get("message")))


def compile_error(program: str) -> str | None:
    """The jq compiler's complaint about a filter, or None when it compiles."""
    try:
        _check_length(program)
    except JqProgramError as exc:
        return str(exc)
    if plain_path(program) is not None:
        return None
    return _compile_error(program)


@functools.lru_cache(maxsize=512)
def _compile_error(program: str) -> str | None:
    response = _pool.exchange({"op": "check", "program": program, "timeout_s": TIMEOUT_S},
                              timeout_s=TIMEOUT_S)
    return None if response.get("ok") else str(response.get("message") or "does not compile")


def _check_length(program: str) -> None:
    if len(program) > MAX_PROGRAM_CHARS:
        raise JqProgramError(f"the filter is longer than {MAX_PROGRAM_CHARS} characters")


# ---- the in-process fast path ---------------------------------------------------------------

_SEGMENT = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)          # .name
      | \.?\[\s*(?P<index>-?\d{1,18})\s*\]           # [0] .[0] [-1]
      | \.?\[\s*"(?P<bkey>[^"\\]*)"\s*\]             # ["a b"] .["a b"]
      | \."(?P<qkey>[^"\\]*)"                        # ."a b"
    """,
    re.VERBOSE,
)


@functools.lru_cache(maxsize=1024)
def plain_path(program: str) -> tuple[str | int, ...] | None:
    """The keys and indices of a plain path filter, or None for any other filter."""
    text = program.strip()
    if text == ".":
        return ()
    if not text.startswith("."):
        return None
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None or (pos == 0 and text[0] != "."):
            return None
        if match["name"] is not None:
            steps.append(match["name"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(match["bkey"] if match["bkey"] is not None else match["qkey"])
        pos = match.end()
    return tuple(steps)


def _walk(value: Any, steps: tuple[str | int, ...]) -> tuple[bool, Any]:
    """(True, result) as jq gives it, or (False, None) where jq would raise an error."""
    for step in steps:
        if value is None:
            continue  # jq: null indexed by anything is null
        if isinstance(step, str):
            if not isinstance(value, dict):
                return False, None
            value = value.get(step)
        else:
            if not isinstance(value, list):
                return False, None
            index = step + len(value) if step < 0 else step
            value = value[index] if 0 <= index < len(value) else None
    return True, value


def _as_jq_gives(value: Any) -> Any:
    # jq holds every number as a double and hands integral ones back as ints (1.0 -> 1).
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, list):
        return [_as_jq_gives(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_jq_gives(item) for key, item in value.items()}
    return value
