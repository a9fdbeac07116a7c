"""`$ref` payload values: `{"$ref": <step id>, "path": "<jq filter>"}` (SPEC section 3).

A reference takes the jq filter's first result over the referenced step's output in the same
generation (usually `".src"`). Filters run through emprops/jqbox.py: plain paths in-process,
anything else in a helper process with time and memory limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collections_app.generation_input import is_ref, ref_target, refs_of
from emprops import jqbox

__all__ = ["RefError", "is_ref", "ref_target", "refs_of", "resolve_payload"]


class RefError(Exception):
    """A reference could not be resolved. `key` is the payload key that holds it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"Reference in {key!r}: {message}")


def resolve_payload(
    payload: Mapping[str, Any], outputs: Mapping[int, Mapping[str, Any]]
) -> dict[str, Any]:
    """Return a copy of the payload with each top-level `$ref` replaced by its value.

    `outputs` maps step ids to their outputs in this generation. A reference to a step without an
    output, a malformed reference, a jq filter that does not compile, fails at run time or yields
    nothing raises RefError naming the key.
    """
    resolved: dict[str, Any] = {}
    for key, value in payload.items():
        resolved[key] = _resolve(key, value, outputs) if is_ref(value) else value
    return resolved


def _resolve(key: str, ref: Mapping[str, Any], outputs: Mapping[int, Mapping[str, Any]]) -> Any:
    target = ref_target(ref)
    if target is None:
        raise RefError(key, f"`$ref` must be an integer step id, got {ref.get('$ref')!r}.")
    path = ref.get("path")
    if not isinstance(path, str) or not path.strip():
        raise RefError(key, '`path` must be a jq filter such as ".src".')
    if target not in outputs:
        raise RefError(key, f"step {target} has no output.")
    try:
        return jqbox.first(path, outputs[target])
    except jqbox.JqProgramError as exc:
        raise RefError(key, f"invalid jq path {path!r}: {exc}") from None
    except jqbox.JqEmpty:
        raise RefError(key, f"jq path {path!r} gave no value for step {target}'s output.") from None
    except jqbox.JqLimitError as exc:
        raise RefError(key, f"jq path {path!r} {exc}.") from None
    except jqbox.JqError as exc:
        raise RefError(key, f"jq path {path!r} failed on step {target}'s output: {exc}") from None
