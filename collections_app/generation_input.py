"""GenerationInput v2, the `data` of a collection: validate, re-number, count generations.

The format (SPEC section 3):

    {"version": "v2",
     "steps": [{"id", "nodeName", "nodePayload", "alias"?, "fromId"?, "skip"?, "isTest"?,
                "testValue"?}, ...],
     "generations": {"hashes": [...], "generations": 1, "use_custom_hashes": false},
     "variables": [{"name", "type", "value_type", "value": {"values", "weights"?,
                    "display_names"?}, "lock_value"?, "test_value"?}, ...]}

Steps depend on each other through `$ref` payload values and `#<id>` mentions in rich-text
prompts. The small graph and rich-text helpers the format needs live here, so that collections
can be checked without the engine; `generation_app.engine` builds on them.

Pure: no Django, no database.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from workflows_app.forms import number_text, prompt_fields, validate_payload
from workflows_app.node_types import COMPONENT_READERS, VARIABLES_STEP_ID

# The base58-like alphabet of hashes (no 0, O, I, l): shared with the PRNG.
ALPHABET: Final = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
HASH_PREFIX: Final = "oo"
HASH_BODY_LENGTH: Final = 49
VERSION: Final = "v2"
VARIABLE_TYPES: Final = ("pick", "weighted_pick")
VALUE_TYPES: Final = ("strings", "images", "text", "video", "live_artifact", "integers")
# Payload keys that hold a prompt even when their value is plain text (the `prompt` node's field).
PROMPT_KEYS: Final = frozenset({"prompt"})

# `#<id>` in text. Not after a word character or `&` (so `&#123;` entities and `abc#1` are text),
# and not followed by a word character (`#12px` is not a mention).
MENTION_RE: Final = re.compile(r"(?<![\w&])#(\d+)(?!\w)")

NodeForm = Callable[[str], "dict[str, Any] | None | Literal[False]"]
PromptKeys = Callable[[str], Collection[str]]


class GenerationInputError(Exception):
    """The GenerationInput is invalid. `details` maps a path (`steps[2].nodePayload.steps`,
    `variables[1].type`, `generations.hashes`, ...) to its messages."""

    def __init__(self, details: dict[str, list[str]]) -> None:
        self.details = details
        first = next(iter(details.items()), ("data", ["invalid"]))
        super().__init__(f"Invalid GenerationInput: {first[0]}: {first[1][0]}")


class DuplicateHashes(GenerationInputError):
    """A request names the same hash more than once: it would run, and be charged, again for the
    same picks and the same output. `repeated` maps each such hash to how many times it appears."""

    def __init__(self, path: str, repeated: Mapping[str, int]) -> None:
        self.repeated = dict(repeated)
        shown = ", ".join(f"{h!r} ({n} times)" for h, n in list(self.repeated.items())[:10])
        more = ", ..." if len(self.repeated) > 10 else ""
        message = (f"Duplicate hashes: {shown}{more}. Each generation needs its own hash: a "
                   "repeated hash makes the same output again and is charged again.")
        self.details = {path: [message]}
        Exception.__init__(self, message)  # the message as it is, without the generic prefix


class CycleError(ValueError):
    """Steps depend on each other in a loop. `cycle` lists step ids, each depending on the next
    and the last on the first."""

    def __init__(self, cycle: list[int]) -> None:
        self.cycle = cycle
        super().__init__(f"Steps form a cycle: {_cycle_text(cycle)}.")


def empty_generation_input() -> dict[str, Any]:
    """Return a new, empty GenerationInput with one generation."""
    return {
        "version": VERSION,
        "steps": [],
        "generations": {"hashes": [], "generations": 1, "use_custom_hashes": False},
        "variables": [],
    }


def new_hash() -> str:
    """Return a fresh generation hash: "oo" and 49 characters of the alphabet, from `secrets`."""
    return HASH_PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(HASH_BODY_LENGTH))


# --- $ref --------------------------------------------------------------------------------------


def is_ref(value: Any) -> bool:
    """True when a payload value is a reference, `{"$ref": <step id>, "path": "<jq filter>"}`."""
    return isinstance(value, Mapping) and "$ref" in value


def ref_target(value: Any) -> int | None:
    """The step id a reference names, or None when it is not a valid integer reference."""
    if not is_ref(value):
        return None
    target = value["$ref"]
    return target if isinstance(target, int) and not isinstance(target, bool) else None


def refs_of(payload: Mapping[str, Any]) -> set[int]:
    """The step ids referenced by the payload's top-level `$ref` values."""
    return {t for t in (ref_target(v) for v in payload.values()) if t is not None}


# --- rich text ---------------------------------------------------------------------------------


def parse_document(value: str) -> list[dict[str, Any]] | None:
    """Return the Slate-style document a prompt string holds, or None for plain text.

    A document is a JSON list of block objects, each with a `children` list.
    """
    text = value.strip()
    if not text.startswith("["):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    if isinstance(parsed, list) and all(
        isinstance(block, dict) and isinstance(block.get("children"), list) for block in parsed
    ):
        return parsed
    return None


def node_mention(node: Mapping[str, Any]) -> int | None:
    """The step id a `{"type": "component", "component": {"id"}}` node names, else None."""
    if node.get("type") != "component":
        return None
    component = node.get("component")
    raw = component.get("id") if isinstance(component, Mapping) else None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    return None


def iter_nodes(nodes: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every node of a document, depth first, parents before their children."""
    for node in nodes:
        if isinstance(node, dict):
            yield node
            children = node.get("children")
            if isinstance(children, list):
                yield from iter_nodes(children)


def explicit_mentions(value: str) -> set[int]:
    """Step ids named by component nodes of a rich-text document (none for plain text)."""
    document = parse_document(value)
    if document is None:
        return set()
    return {i for i in (node_mention(n) for n in iter_nodes(document)) if i is not None}


def text_mentions(value: str) -> set[int]:
    """Step ids written as `#<id>` in the text of a prompt (its text nodes, or the plain string)."""
    document = parse_document(value)
    if document is None:
        return {int(m) for m in MENTION_RE.findall(value)}
    found: set[int] = set()
    for node in iter_nodes(document):
        text = node.get("text")
        if isinstance(text, str):
            found.update(int(m) for m in MENTION_RE.findall(text))
    return found


def mentions(value: str) -> set[int]:
    """Step ids a prompt mentions: component nodes and `#<id>` in its text."""
    return explicit_mentions(value) | text_mentions(value)


def rewrite_mentions(value: str, id_map: Mapping[int, int]) -> str:
    """Return the prompt with every mentioned step id in `id_map` replaced by its new id.

    Component nodes and `#<id>` text are both rewritten; ids not in `id_map` stay as they are.
    A document comes back as a JSON string (compact, like JavaScript's JSON.stringify), plain text
    as plain text.
    """
    document = parse_document(value)
    if document is None:
        return _rewrite_text(value, id_map)
    document = copy.deepcopy(document)
    for node in iter_nodes(document):
        old = node_mention(node)
        if old is not None and old in id_map:
            component = node["component"]
            # Keep the id's JSON type: some documents store it as a string.
            component["id"] = str(id_map[old]) if isinstance(component["id"], str) else id_map[old]
        text = node.get("text")
        if isinstance(text, str):
            node["text"] = _rewrite_text(text, id_map)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _rewrite_text(text: str, id_map: Mapping[int, int]) -> str:
    def swap(match: re.Match[str]) -> str:
        old = int(match.group(1))
        return f"#{id_map[old]}" if old in id_map else match.group(0)

    return MENTION_RE.sub(swap, text)


def prompt_values(
    payload: Mapping[str, Any], prompt_keys: Collection[str] = ()
) -> Iterator[tuple[str, str, bool]]:
    """Yield `(key, value, is_prompt)` for the payload's rich-text values.

    A value is rich text when it is a string that holds a document, or any string under a prompt
    key (`prompt`, or a form's `prompt_editor` fields given in `prompt_keys`). Other strings (a js
    step's script, a colour "#123") are never read for mentions. `is_prompt` is true for the keyed
    ones.
    """
    for key, value in payload.items():
        if not isinstance(value, str):
            continue
        keyed = key in PROMPT_KEYS or key in prompt_keys
        if keyed or parse_document(value) is not None:
            yield key, value, keyed


def step_mentions(
    payload: Mapping[str, Any], step_ids: Collection[int], prompt_keys: Collection[str] = ()
) -> dict[str, set[int]]:
    """Mentions per payload key.

    Component nodes always count (an unknown id is a dangling mention). `#<id>` written in text
    counts only when a step has that id: in free text `#1` is more often "number one" than a
    reference, and a mention that would be ambiguous must not fail a collection.
    """
    found: dict[str, set[int]] = {}
    for key, value, _ in prompt_values(payload, prompt_keys):
        ids = explicit_mentions(value) | (text_mentions(value) & set(step_ids))
        if ids:
            found[key] = ids
    return found


def step_dependencies(
    payload: Mapping[str, Any], step_ids: Collection[int], prompt_keys: Collection[str] = ()
) -> dict[str, set[int]]:
    """The step ids each payload key depends on, through `$ref` or rich-text mentions."""
    deps = step_mentions(payload, step_ids, prompt_keys)
    for key, value in payload.items():
        target = ref_target(value)
        if target is not None:
            deps.setdefault(key, set()).add(target)
    return deps


# --- graph -------------------------------------------------------------------------------------


def find_cycle(deps: Mapping[int, Collection[int]]) -> list[int] | None:
    """Return one dependency cycle (each step depends on the next, the last on the first) or None.

    Dependencies on ids that are not keys of `deps` are ignored. Deterministic: steps are visited
    in the mapping's order.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path: list[int] = [root]
        stack: list[Iterator[int]] = [iter(sorted(deps[root]))]
        colour[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return path[path.index(nxt) :]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(sorted(deps[nxt])))
    return None


def topological_order(deps: Mapping[int, Collection[int]]) -> list[int]:
    """Return the steps so that each comes after everything it depends on, else CycleError.

    Among steps that are ready together, the one earlier in the mapping comes first, so the order
    is stable and follows the steps' list order where it can. Dependencies on unknown ids are
    ignored.
    """
    position = {step: i for i, step in enumerate(deps)}
    waiting = {step: {d for d in deps[step] if d in position} for step in deps}
    dependants: dict[int, list[int]] = {step: [] for step in deps}
    for step, needs in waiting.items():
        for need in needs:
            dependants[need].append(step)
    heap = [position[step] for step, needs in waiting.items() if not needs]
    heapq.heapify(heap)
    steps = list(deps)
    order: list[int] = []
    while heap:
        step = steps[heapq.heappop(heap)]
        order.append(step)
        for dependant in dependants[step]:
            waiting[dependant].discard(step)
            if not waiting[dependant]:
                heapq.heappush(heap, position[dependant])
    if len(order) != len(deps):
        cycle = find_cycle(deps)
        raise CycleError(cycle or [step for step in deps if step not in set(order)])
    return order


def _cycle_text(cycle: list[int]) -> str:
    return " -> ".join(str(step) for step in [*cycle, cycle[0]]) if cycle else ""


# --- validation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Caps on the lists of a GenerationInput. A body within the size limit still holds
    thousands of steps or values, and each step costs validation, a component row, a graph node
    and a node run per generation: caps keep one request from taking the server for seconds."""

    steps: int
    variables: int
    values: int  # per variable (and as many weights)


def check_limits(data: Any, limits: Limits) -> None:
    """Raise GenerationInputError naming each list over its cap. Reads lengths only, so it is
    cheap enough to run first, before anything is copied, looked up or validated."""
    if not isinstance(data, Mapping):
        return  # not a GenerationInput at all: validate() says so
    errors: dict[str, list[str]] = {}
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > limits.steps:
        errors["steps"] = [f"At most {limits.steps} steps per collection, got {len(steps)}."]
    variables = data.get("variables")
    if isinstance(variables, list):
        if len(variables) > limits.variables:
            errors["variables"] = [f"At most {limits.variables} variables, got {len(variables)}."]
        for i, variable in enumerate(variables[: limits.variables]):
            value = variable.get("value") if isinstance(variable, Mapping) else None
            for key in ("values", "weights"):
                items = value.get(key) if isinstance(value, Mapping) else None
                if isinstance(items, list) and len(items) > limits.values:
                    errors[f"variables[{i}].value.{key}"] = [
                        f"At most {limits.values} {key} per variable, got {len(items)}."]
    if errors:
        raise GenerationInputError(errors)


def validate(
    data: Any,
    *,
    node_form: NodeForm,
    reads_all_components: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Return the normalised GenerationInput, or raise GenerationInputError naming each bad path.

    `node_form(name)` returns a node's form (a workflow's or a built-in's), None for a node without
    a form, or False for an unknown node. `reads_all_components(name)` says which nodes wait for
    every earlier step (default: the js, p5 and p52vid built-ins); those edges count for cycles.

    Normalisation: a missing `version` becomes "v2"; missing `steps`, `variables` and
    `generations` parts take their empty defaults; payloads are coerced by their forms; variable
    values given as numbers become strings and weights become numbers; a missing `value_type`
    becomes "strings". Keys the format does not know are kept.
    """
    if not isinstance(data, Mapping):
        raise GenerationInputError({"data": ["Expected a GenerationInput object."]})
    errors: dict[str, list[str]] = {}

    def error(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    result: dict[str, Any] = copy.deepcopy(dict(data))
    version = data.get("version")
    if version is None:
        result["version"] = VERSION
    elif version != VERSION:
        error("version", f"Unsupported version {version!r}: expected {VERSION!r}.")

    result["steps"] = _validate_steps(
        data.get("steps"), node_form, reads_all_components or COMPONENT_READERS.__contains__, error
    )
    result["variables"] = _validate_variables(data.get("variables"), error)
    result["generations"] = _validate_generations(data.get("generations"), error)
    if errors:
        raise GenerationInputError(errors)
    return result


ErrorSink = Callable[[str, str], None]


def _validate_steps(
    raw: Any, node_form: NodeForm, reads_all_components: Callable[[str], bool], error: ErrorSink
) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        error("steps", "Expected a list of steps.")
        return []
    steps: list[Any] = copy.deepcopy(raw)
    index_of: dict[int, int] = {}
    prompt_keys: dict[int, frozenset[str]] = {}
    for i, step in enumerate(steps):
        at = f"steps[{i}]"
        if not isinstance(step, dict):
            error(at, "Expected a step object.")
            continue
        step_id = step.get("id")
        if not isinstance(step_id, int) or isinstance(step_id, bool):
            error(f"{at}.id", "A step needs an integer id.")
        elif step_id in index_of:
            error(f"{at}.id", f"Duplicate step id {step_id} (also steps[{index_of[step_id]}]).")
        else:
            index_of[step_id] = i
        form = _check_node_name(step.get("nodeName"), node_form, f"{at}.nodeName", error)
        prompt_keys[i] = prompt_fields(form or None)
        _check_optional(step, at, error)
        payload = step.get("nodePayload")
        if payload is None:
            payload = step["nodePayload"] = {}
        if not isinstance(payload, dict):
            error(f"{at}.nodePayload", "Expected an object.")
            continue
        coerced, field_errors = validate_payload(form or None, payload)
        for key, messages in field_errors.items():
            for message in messages:
                error(f"{at}.nodePayload.{key}", message)
        step["nodePayload"] = coerced
        for key, value in coerced.items():
            if is_ref(value):
                _check_ref_shape(value, f"{at}.nodePayload.{key}", error)

    # Second pass, now that every id is known: refs and mentions may point to later steps.
    # the hidden variables step (953) is always there, whether or not `steps` lists it
    step_ids = set(index_of) | {VARIABLES_STEP_ID}
    deps: dict[int, set[int]] = {}
    edge_keys: dict[tuple[int, int], str] = {}
    previous: list[int] = []
    for i, step in enumerate(steps):
        step_id = step.get("id") if isinstance(step, dict) else None
        # Only steps that own their id take part: bad and duplicate ids were reported above.
        if not isinstance(step_id, int) or index_of.get(step_id) != i:
            continue
        payload = step.get("nodePayload")
        payload = payload if isinstance(payload, dict) else {}
        at = f"steps[{i}].nodePayload"
        for key, value in payload.items():
            target = ref_target(value)
            if target is not None and target not in step_ids:
                error(f"{at}.{key}", f"Refers to step {target}, which does not exist.")
        mentioned = step_mentions(payload, step_ids, prompt_keys.get(i, frozenset()))
        for key, ids in mentioned.items():
            for missing in sorted(ids - step_ids):
                error(f"{at}.{key}", f"Mentions step #{missing}, which does not exist.")
        needs = step_dependencies(payload, step_ids, prompt_keys.get(i, frozenset()))
        deps[step_id] = set()
        for key, ids in needs.items():
            for target in ids & step_ids:
                deps[step_id].add(target)
                edge_keys.setdefault((step_id, target), key)
        name = step.get("nodeName")
        if isinstance(name, str) and reads_all_components(name):
            deps[step_id].update(previous)
        previous.append(step_id)

    cycle = find_cycle(deps)
    if cycle:
        first, second = cycle[0], cycle[1 % len(cycle)]
        edge_key = edge_keys.get((first, second))
        at = f"steps[{index_of[first]}]" + (f".nodePayload.{edge_key}" if edge_key else "")
        error(at, f"Steps form a cycle: {_cycle_text(cycle)}.")
    return steps


def _check_node_name(
    name: Any, node_form: NodeForm, at: str, error: ErrorSink
) -> dict[str, Any] | None:
    if not isinstance(name, str) or not name.strip():
        error(at, "A step needs a nodeName.")
        return None
    form = node_form(name)
    if form is False:
        error(at, f"Unknown node {name!r}.")
        return None
    return form


def _check_optional(step: Mapping[str, Any], at: str, error: ErrorSink) -> None:
    alias = step.get("alias")
    if alias is not None and not isinstance(alias, str):
        error(f"{at}.alias", "Expected a string.")
    for flag in ("skip", "isTest"):
        if step.get(flag) is not None and not isinstance(step[flag], bool):
            error(f"{at}.{flag}", "Expected true or false.")
    from_id = step.get("fromId")
    if from_id is not None and (not isinstance(from_id, int) or isinstance(from_id, bool)):
        error(f"{at}.fromId", "Expected an integer step id.")


def _check_ref_shape(value: Mapping[str, Any], at: str, error: ErrorSink) -> None:
    if ref_target(value) is None:
        error(at, "`$ref` must be an integer step id.")
    path = value.get("path")
    if not isinstance(path, str) or not path.strip():
        error(at, 'A `$ref` needs a string `path` (a jq filter such as ".src").')
        return
    problem = jq_compile_error(path)
    if problem:
        error(at, f"Invalid jq path {path!r}: {problem}")


def jq_compile_error(path: str) -> str | None:
    """The jq compiler's complaint about a filter, or None when it compiles."""
    from emprops import jqbox

    return jqbox.compile_error(path)


def _validate_variables(raw: Any, error: ErrorSink) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        error("variables", "Expected a list of variables.")
        return []
    variables: list[Any] = copy.deepcopy(raw)
    seen: dict[str, int] = {}
    for i, variable in enumerate(variables):
        at = f"variables[{i}]"
        if not isinstance(variable, dict):
            error(at, "Expected a variable object.")
            continue
        name = variable.get("name")
        if not isinstance(name, str) or not name.strip():
            error(f"{at}.name", "A variable needs a non-empty name.")
        elif name in seen:
            error(f"{at}.name", f"Duplicate variable name {name!r} (also variables[{seen[name]}]).")
        else:
            seen[name] = i
        kind = variable.get("type")
        if kind not in VARIABLE_TYPES:
            error(
                f"{at}.type", f"Unknown variable type {kind!r}: expected 'pick' or 'weighted_pick'."
            )
        value_type = variable.setdefault("value_type", "strings")
        if value_type not in VALUE_TYPES:
            error(
                f"{at}.value_type",
                f"Unknown value_type {value_type!r}: expected one of {', '.join(VALUE_TYPES)}.",
            )
        lock = variable.get("lock_value")
        if lock is not None and not isinstance(lock, bool):
            error(f"{at}.lock_value", "Expected true or false.")
        value = variable.get("value")
        if value is None:
            value = variable["value"] = {"values": []}
        if not isinstance(value, dict):
            error(f"{at}.value", "Expected an object with a `values` list.")
            continue
        values = _variable_values(value.get("values"), f"{at}.value.values", error)
        value["values"] = values
        if kind == "weighted_pick":
            value["weights"] = _variable_weights(
                value.get("weights"), len(values), f"{at}.value.weights", error
            )
    return variables


def _variable_values(raw: Any, at: str, error: ErrorSink) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        error(at, "Expected a list of strings.")
        return []
    values: list[Any] = []
    for j, item in enumerate(raw):
        # Numbers are accepted and stored as the strings JavaScript would show ("integers"
        # variables are often sent as [1, 2, 3]); anything else is ambiguous and refused.
        if isinstance(item, str):
            values.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item):
            values.append(number_text(item))
        else:
            error(at, f"values[{j}] must be a string, got {_json_type(item)}.")
            values.append(item)
    return values


def _variable_weights(raw: Any, count: int, at: str, error: ErrorSink) -> list[Any]:
    if not isinstance(raw, list):
        error(at, "A weighted_pick variable needs a list of weights, one per value.")
        return []
    if len(raw) != count:
        error(at, f"Expected {count} weights (one per value), got {len(raw)}.")
    weights: list[Any] = []
    for j, item in enumerate(raw):
        weight: Any = item
        if isinstance(item, str):
            try:
                weight = float(item)
                weight = int(weight) if weight.is_integer() else weight
            except ValueError:
                weight = None
        if (
            not isinstance(weight, (int, float))
            or isinstance(weight, bool)
            or not math.isfinite(weight)
            or weight < 0
        ):
            error(at, f"weights[{j}] must be a non-negative number, got {item!r}.")
            weights.append(item)
        else:
            weights.append(weight)
    if count and len(raw) == count and all(isinstance(w, (int, float)) for w in weights):
        if sum(weights) <= 0:
            error(at, "At least one weight must be positive.")
    return weights


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _validate_generations(raw: Any, error: ErrorSink) -> dict[str, Any]:
    defaults = empty_generation_input()["generations"]
    if raw is None:
        return dict(defaults)
    if not isinstance(raw, dict):
        error("generations", "Expected an object with hashes, generations and use_custom_hashes.")
        return dict(defaults)
    result: dict[str, Any] = {**defaults, **copy.deepcopy(raw)}
    hashes = result["hashes"]
    if hashes is None:
        hashes = result["hashes"] = []
    if not isinstance(hashes, list):
        error("generations.hashes", "Expected a list of hash strings.")
    else:
        for j, item in enumerate(hashes):
            if not isinstance(item, str) or not item.strip():
                error("generations.hashes", f"hashes[{j}] must be a non-empty string.")
    count = result["generations"]
    if isinstance(count, str) and count.strip().isdigit():
        count = result["generations"] = int(count)
    if count is None:
        result["generations"] = 1
    elif not isinstance(count, int) or isinstance(count, bool) or count < 0:
        error("generations.generations", "Expected a whole number of generations, 0 or more.")
    custom = result["use_custom_hashes"]
    if custom is None:
        result["use_custom_hashes"] = False
    elif not isinstance(custom, bool):
        error("generations.use_custom_hashes", "Expected true or false.")
    elif custom and isinstance(hashes, list) and not hashes:
        error("generations.hashes", "use_custom_hashes is set, so at least one hash is needed.")
    return result


# --- re-numbering and generations --------------------------------------------------------------


def renumber(
    data: Mapping[str, Any],
    new_ids: Iterator[int],
    *,
    prompt_keys: PromptKeys | None = None,
) -> dict[str, Any]:
    """Return a deep copy whose steps carry new ids, taken in order from `new_ids`.

    Each step's old id goes to `fromId`; every `$ref` and every `#<id>` mention (component nodes
    and text, in documents and in `prompt` values, plus the `prompt_keys(nodeName)` fields) is
    rewritten to the new ids; `testValue`s are dropped. The hidden variables step keeps id 953.
    Expects validated data.
    """
    result: dict[str, Any] = copy.deepcopy(dict(data))
    steps = [step for step in result.get("steps") or [] if isinstance(step, dict)]
    id_map: dict[int, int] = {}
    for step in steps:
        old = step.get("id")
        if not isinstance(old, int) or isinstance(old, bool):
            continue
        if old == VARIABLES_STEP_ID:
            id_map[old] = old
            continue
        new = next(new_ids)
        id_map[old] = new
        step["id"] = new
        step["fromId"] = old
    for step in steps:
        step.pop("testValue", None)
        payload = step.get("nodePayload")
        if not isinstance(payload, dict):
            continue
        name = step.get("nodeName")
        keys = prompt_keys(name) if prompt_keys and isinstance(name, str) else ()
        for key, value, _ in list(prompt_values(payload, keys)):
            payload[key] = rewrite_mentions(value, id_map)
        for key, value in payload.items():
            target = ref_target(value)
            if target is not None and target in id_map:
                payload[key] = {**value, "$ref": id_map[target]}
    return result


def stored_hashes(data: Mapping[str, Any]) -> list[str]:
    """The non-empty string hashes a GenerationInput carries in `generations.hashes`."""
    generations = data.get("generations")
    if not isinstance(generations, Mapping):
        return []
    return [h for h in generations.get("hashes") or [] if isinstance(h, str) and h]


def count_generations(data: Mapping[str, Any]) -> int:
    """How many generations a GenerationInput makes by itself: one per stored hash, else
    `generations.generations` (at least 1). The one rule that requests, quotes and schedules use."""
    stored = stored_hashes(data)
    if stored:
        return len(stored)
    generations = data.get("generations")
    n = generations.get("generations") if isinstance(generations, Mapping) else None
    return max(1, n) if isinstance(n, int) and not isinstance(n, bool) else 1


def generation_hashes(
    data: Mapping[str, Any],
    *,
    count: int | None = None,
    hashes: list[str] | None = None,
    make_hash: Callable[[], str] = new_hash,
) -> list[str]:
    """The hashes of a request's generations, one per generation.

    Explicit `hashes` win; else `count` fresh hashes (the request asked for that many); else the
    data's own hashes; else `count_generations(data)` fresh hashes from `make_hash`. A hash given
    twice, explicitly or in the data, raises DuplicateHashes (path `hashes` or
    `generations.hashes`).
    """
    if hashes is not None:
        _refuse_repeats("hashes", hashes)
        return list(hashes)
    if count is not None:
        return [make_hash() for _ in range(max(0, count))]
    stored = stored_hashes(data)
    _refuse_repeats("generations.hashes", stored)
    return stored or [make_hash() for _ in range(count_generations(data))]


def repeated_hashes(hashes: Iterable[Any]) -> dict[str, int]:
    """Each hash that appears more than once, with its count, in first-seen order."""
    counts: dict[str, int] = {}
    for h in hashes:
        if isinstance(h, str):
            counts[h] = counts.get(h, 0) + 1
    return {h: n for h, n in counts.items() if n > 1}


def _refuse_repeats(path: str, hashes: Iterable[Any]) -> None:
    repeated = repeated_hashes(hashes)
    if repeated:
        raise DuplicateHashes(path, repeated)
