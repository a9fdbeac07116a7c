"""Request body parsers: DRF's, refusing what PostgreSQL cannot store or Python cannot walk.
The API parses JSON; MultiPartParser only where a view takes uploads (`parser_classes`).

A NUL character cannot be stored in a `text` column nor in `jsonb` (`\\u0000`), and JSON nested
thousands deep overflows the recursion of the decoder and of every validator after it. Both are
refused here, once for every endpoint, as a 400 instead of a DataError or RecursionError (a 500)
somewhere deep in a service."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_JSON_DEPTH = 64
NUL = "\x00"


def check_json_value(value: Any) -> None:
    """ParseError when `value` nests deeper than MAX_JSON_DEPTH or a string in it holds a NUL."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                raise ParseError("Text cannot contain NUL (\\u0000) characters.")
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def check_form(data: QueryDict) -> None:
    for key, values in data.lists():
        if NUL in key or any(isinstance(v, str) and NUL in v for v in values):
            raise ParseError("Text cannot contain NUL (\\u0000) characters.")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether a JSON text nests deeper than `limit`, read before it is decoded.

    The decoder recurses once per level; within the interpreter's recursion limit it raises
    RecursionError, but a library that raises that limit (py_ecc sets 100,000) lets a deep enough
    document overflow the C stack and kill the process. So depth is checked here, on the bytes:
    cheap when the text has few brackets, linear in the brackets otherwise."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for ch in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw)):
        if ch in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if nests_deeper_than(raw, MAX_JSON_DEPTH):
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None
        check_json_value(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except SuspiciousOperation as exc:  # too many fields: Django's limit, a client's error
            raise ParseError(str(exc)) from None
        check_form(parsed.data)
        return parsed
