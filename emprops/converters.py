"""URL converters for names in paths. A name never holds a NUL (PostgreSQL cannot store one),
so a path with `%00` in a name matches nothing and is the catch-all's enveloped 404, rather than
a DataError (a 500) when the name reaches a query."""

from __future__ import annotations

from django.urls import register_converter
from django.urls.converters import PathConverter, StringConverter


class NameConverter(StringConverter):
    regex = "[^/\x00]+"


class SlashedNameConverter(PathConverter):
    """A name that may contain slashes (model file names such as `sdxl/base.safetensors`)."""

    regex = "[^\x00]+"


register_converter(NameConverter, "name")
register_converter(SlashedNameConverter, "slashed_name")
