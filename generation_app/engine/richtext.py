"""Rich-text prompts (SPEC section 3): a JSON string of a Slate-style document, or plain text.

A document is a list of blocks `{"type": "paragraph", "children": [...]}` whose children are text
`{"text"}`, variables `{"type": "variable", "variable": {"name"}}` and components
`{"type": "component", "component": {"id"}}` (children may nest). As text, variables read `$name`
and components `#<id>`, blocks joined by "\\n". Rendering a prompt puts the generation's variable
values and the mentioned steps' text outputs in their place.

Parsing, mentions and re-writing live with the GenerationInput format (collections can be checked
without the engine); they are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from collections_app.generation_input import (
    MENTION_RE,
    explicit_mentions,
    mentions,
    node_mention,
    parse_document,
    rewrite_mentions,
    text_mentions,
)

__all__ = [
    "explicit_mentions",
    "mentions",
    "parse_document",
    "render",
    "rewrite_mentions",
    "text_mentions",
    "to_text",
]


def to_text(value: str) -> str:
    """The prompt as text: `$name` for variables, `#<id>` for components, blocks joined by "\\n".

    A plain string, or JSON that is not a document, is returned as it is.
    """
    document = parse_document(value)
    if document is None:
        return value
    return "\n".join(_node_text(block, {}, {}, substitute=False) for block in document)


def render(value: str, *, variables: Mapping[str, str], components: Mapping[int, str]) -> str:
    """The prompt's final text for one generation.

    Variable nodes and `$name` in text (a whole name: `$color` does not match inside `$color2`;
    longer names are tried first) become `variables[name]`; component nodes and `#<id>` in text
    become `components[id]`, the text output of that step. Unknown names and ids stay as written.
    Values put in are not scanned again, so a value holding `$other` stays as it is.
    """
    document = parse_document(value)
    if document is None:
        return _substitute(value, variables, components)
    return "\n".join(
        _node_text(block, variables, components, substitute=True) for block in document
    )


def _node_text(
    node: Any,
    variables: Mapping[str, str],
    components: Mapping[int, str],
    *,
    substitute: bool,
) -> str:
    if not isinstance(node, Mapping):
        return ""
    kind = node.get("type")
    if kind == "variable":
        variable = node.get("variable")
        name = variable.get("name") if isinstance(variable, Mapping) else None
        if not isinstance(name, str):
            return ""
        if substitute and name in variables:
            return str(variables[name])
        return f"${name}"
    if kind == "component":
        step_id = node_mention(node)
        if step_id is None:
            return ""
        if substitute and step_id in components:
            return str(components[step_id])
        return f"#{step_id}"
    text = node.get("text")
    if isinstance(text, str):
        return _substitute(text, variables, components) if substitute else text
    children = node.get("children")
    if isinstance(children, list):
        return "".join(
            _node_text(child, variables, components, substitute=substitute) for child in children
        )
    return ""


def _substitute(text: str, variables: Mapping[str, str], components: Mapping[int, str]) -> str:
    pattern = _pattern(tuple(variables))

    def swap(match: re.Match[str]) -> str:
        if match.group("step") is not None:
            step_id = int(match.group("step"))
            return str(components[step_id]) if step_id in components else match.group(0)
        return str(variables[match.group("name")])

    return pattern.sub(swap, text)


_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}


def _pattern(names: Iterable[str]) -> re.Pattern[str]:
    key = tuple(names)
    pattern = _PATTERNS.get(key)
    if pattern is None:
        # One pass over the text for every name and mention, so a substituted value is never
        # scanned again; longest names first so a prefix cannot win the alternation.
        ordered = sorted((n for n in key if n), key=lambda n: (-len(n), n))
        alternatives = [MENTION_RE.pattern.replace(r"(\d+)", r"(?P<step>\d+)")]
        if ordered:
            names_re = "|".join(re.escape(n) for n in ordered)
            alternatives.append(rf"\$(?P<name>{names_re})(?!\w)")
        pattern = re.compile("|".join(alternatives))
        if len(_PATTERNS) > 256:
            _PATTERNS.clear()
        _PATTERNS[key] = pattern
    return pattern
