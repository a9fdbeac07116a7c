"""Workflow forms: validate and coerce a step's `nodePayload`, describe a form as JSON Schema.

A form is `workflow.data["form"]`: `{"config": {...}, "fields": [Field]}` where a Field is
`{"id", "name", "type", "default"?, "constraints"? {"min", "max", "step"}, "conf_file"?,
"input_type"?, "is_required"?, "options"?}` (SPEC section 5). `conf_file` names a shared option
list (a `form_config` row); `resolve_form` swaps it for the list itself.

Pure: no Django, no database. Callers pass the option lists they loaded.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

# Field types whose value is a number, whatever `input_type` says. `number` is not in the SPEC's
# list, but the aspect-ratio option files use it for their attached width/height fields.
_NUMBER_TYPES: Final = frozenset({"slider", "number"})
# Field types whose value is a number when `input_type` is "number".
_INPUT_TYPES: Final = frozenset({"input", "optional_input"})
_STRING_TYPES: Final = frozenset({"image_loader", "color_picker", "input", "optional_input"})
_OPTION_TYPES: Final = frozenset({"select", "aspect_ratio"})

# Checkbox spellings seen in real payloads and option files ("checked"/"unchecked" come from the
# aspect-ratio option file's attached checkbox).
_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on", "checked"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off", "unchecked"})

_INT_RE: Final = re.compile(r"[+-]?\d+")

# A seed is an unsigned 32-bit integer whatever its field's slider says: the component library's
# own samples carry seeds like "2145214451" in forms whose seed slider stops at 999999.
SEED_MIN: Final = 0
SEED_MAX: Final = 4_294_967_295
# Field types a seed can come in; a seed-named select, checkbox or image field is not a seed.
_SEED_TYPES: Final = frozenset({"slider", "number", "input", "optional_input", None})

Field = dict[str, Any]


def validate_payload(
    form: Mapping[str, Any] | None,
    payload: Mapping[str, Any],
    *,
    conf_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Return `(coerced payload, errors by field id)` for a step's payload against its form.

    Coercion follows the field type: numbers from strings for sliders and number inputs
    (`"10"` -> 10, `"0.5"` -> 0.5), booleans from "true"/"false" for checkboxes, strings from
    numbers for text-like fields, a rich-text document given as a list becomes its JSON string.
    Select and aspect-ratio values must be one of the field's options when the options are known
    (an inline `options` list, or `conf_options[conf_file]`); a value matching an option only as
    text takes the option's own value. `constraints.min`/`max` are enforced, except on seed fields
    (`is_seed_field`), which take any unsigned 32-bit integer. A field with
    `is_required` that is missing, null or "" is an error. `$ref` values are not checked (they are
    resolved at run time); keys the form does not declare are kept as they are; empty values of
    optional fields are kept as they are. A `None` form accepts any payload.
    """
    coerced: dict[str, Any] = dict(payload)
    errors: dict[str, list[str]] = {}
    if not form:
        return coerced, errors
    for field in _fields(form):
        field_id = field.get("id")
        if not isinstance(field_id, str):
            continue
        value = payload.get(field_id)
        if _is_ref(value):
            continue
        if _is_empty(value):
            if field.get("is_required"):
                errors[field_id] = ["This field is required."]
            continue
        options = _field_options(field, conf_options)
        try:
            coerced[field_id] = _coerce(field, value, options)
        except ValueError as exc:
            errors[field_id] = [str(exc)]
    return coerced, errors


def resolve_form(form: Mapping[str, Any], conf_options: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the form where each field's `conf_file` is replaced by an `options` list.

    `conf_options` maps form_config names to their data (a list of `{name, value}` options, or an
    object holding an `options` list, like the aspect-ratio file); names match with or without a
    `.json` suffix. A `conf_file` that names no known list is left in place, so the field's options
    stay unknown rather than becoming an empty list that would reject every value.
    """
    resolved = copy.deepcopy(dict(form))
    for field in _fields(resolved):
        conf_file = field.get("conf_file")
        if not isinstance(conf_file, str):
            continue
        options = _lookup_conf(conf_options, conf_file)
        if options is not None:
            field["options"] = copy.deepcopy(options)
            del field["conf_file"]
    return resolved


def form_json_schema(
    form: Mapping[str, Any] | None, *, conf_options: Mapping[str, Any]
) -> dict[str, Any]:
    """Return a JSON Schema (2020-12) object describing the payload a form accepts.

    Each field becomes a property with its type, title, default, minimum/maximum and, for
    select-like fields with known options, an `enum`; `x-form-type` keeps the form's own field type
    so a client can pick the right widget. `required` lists the `is_required` fields. Extra keys are
    allowed, as payloads carry them.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in _fields(form or {}):
        field_id = field.get("id")
        if not isinstance(field_id, str):
            continue
        properties[field_id] = _field_schema(field, _field_options(field, conf_options))
        if field.get("is_required"):
            required.append(field_id)
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "additionalProperties": True,
    }
    if required:
        schema["required"] = required
    return schema


def form_defaults(form: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return `{field id: default}` for the fields that declare a non-null default."""
    return {
        field["id"]: copy.deepcopy(field["default"])
        for field in _fields(form or {})
        if isinstance(field.get("id"), str) and field.get("default") is not None
    }


def prompt_fields(form: Mapping[str, Any] | None) -> frozenset[str]:
    """Return the ids of the form's rich-text (`prompt_editor`) fields."""
    return frozenset(
        field["id"]
        for field in _fields(form or {})
        if field.get("type") == "prompt_editor" and isinstance(field.get("id"), str)
    )


def option_values(options: Any) -> list[Any]:
    """Return the values of an option list: `{"value"}` objects, `{"option"}` objects (aspect
    ratios), `{"name"}`-only objects, or bare scalars."""
    if isinstance(options, Mapping):
        options = options.get("options")
    if not isinstance(options, list):
        return []
    values: list[Any] = []
    for option in options:
        if isinstance(option, Mapping):
            for key in ("value", "option", "name"):
                if key in option:
                    values.append(option[key])
                    break
        else:
            values.append(option)
    return values


def is_seed_field(field: Mapping[str, Any]) -> bool:
    """True for a generation seed: a number or text field whose id is `seed` or ends in `_seed`
    (`noise_seed`), in any case. Its value is any unsigned 32-bit integer, whatever its
    constraints say."""
    field_id = field.get("id")
    if not isinstance(field_id, str) or field.get("type") not in _SEED_TYPES:
        return False
    key = field_id.strip().lower()
    return key == "seed" or key.endswith("_seed")


def to_seed(value: Any) -> int:
    """Return the seed a payload value spells (`"2145214451"` -> 2145214451), else ValueError:
    a whole number from 0 to 4294967295, as a JSON number or a numeric string."""
    problem = f"A seed must be a whole number from {SEED_MIN} to {SEED_MAX}, got {value!r}."
    try:
        number = to_number(value)
    except ValueError:
        raise ValueError(problem) from None
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(problem)
        number = int(number)
    if not SEED_MIN <= number <= SEED_MAX:
        raise ValueError(problem)
    return number


def is_number_field(field: Mapping[str, Any]) -> bool:
    """True when the field's value is a number (sliders, number inputs)."""
    field_type = field.get("type")
    return field_type in _NUMBER_TYPES or (
        field_type in _INPUT_TYPES and field.get("input_type") == "number"
    )


# --- internals -------------------------------------------------------------------------------


def _fields(form: Mapping[str, Any]) -> list[Field]:
    fields = form.get("fields")
    if not isinstance(fields, list):
        return []
    return [field for field in fields if isinstance(field, dict)]


def _is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and "$ref" in value


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _lookup_conf(conf_options: Mapping[str, Any] | None, conf_file: str) -> list[Any] | None:
    if not conf_options:
        return None
    stem = conf_file[:-5] if conf_file.endswith(".json") else conf_file
    for name in (conf_file, stem, f"{stem}.json"):
        if name in conf_options:
            data = conf_options[name]
            if isinstance(data, Mapping):
                data = data.get("options")
            return data if isinstance(data, list) else None
    return None


def _field_options(
    field: Mapping[str, Any], conf_options: Mapping[str, Any] | None
) -> list[Any] | None:
    """The field's option values, or None when they are not known."""
    if isinstance(field.get("options"), list):
        return option_values(field["options"])
    conf_file = field.get("conf_file")
    if isinstance(conf_file, str):
        options = _lookup_conf(conf_options, conf_file)
        if options is not None:
            return option_values(options)
    return None


def _coerce(field: Mapping[str, Any], value: Any, options: list[Any] | None) -> Any:
    field_type = field.get("type")
    if is_seed_field(field):
        return to_seed(value)
    if is_number_field(field):
        number = to_number(value)
        _check_range(field, number)
        return number
    if field_type == "checkbox":
        return _to_bool(value)
    if field_type in _OPTION_TYPES:
        if isinstance(value, (dict, list)):
            raise ValueError("Must be one of the field's options, not an object or list.")
        if options is None:
            return value
        return _match_option(value, options)
    if field_type == "prompt_editor":
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            # A client that sends the document itself gets the JSON-string form the format stores.
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        raise ValueError("Must be text or a rich-text document.")
    if field_type in _STRING_TYPES:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return number_text(value)
        raise ValueError("Must be a string.")
    return value


def to_number(value: Any) -> int | float:
    """Return the number a payload value spells (`"10"` -> 10, `"0.5"` -> 0.5), else ValueError."""
    if isinstance(value, bool):
        raise ValueError("A number is required.")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("A finite number is required.")
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"A number is required, got {value!r}.") from None
        if not math.isfinite(number):
            raise ValueError("A finite number is required.")
        return number
    raise ValueError("A number is required.")


def number_text(value: int | float) -> str:
    """Format a number as JavaScript's `String(n)` does for ordinary values (`1.0` -> "1")."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _constraint(field: Mapping[str, Any], name: str) -> float | None:
    constraints = field.get("constraints")
    raw = constraints.get(name) if isinstance(constraints, Mapping) else None
    if raw is None:
        raw = field.get(name)
    try:
        return to_number(raw) if raw is not None else None
    except ValueError:
        # A malformed constraint is the form author's mistake; it must not reject user input.
        return None


def _check_range(field: Mapping[str, Any], number: float) -> None:
    minimum = _constraint(field, "min")
    maximum = _constraint(field, "max")
    if minimum is not None and number < minimum:
        raise ValueError(f"Ensure this value is greater than or equal to {number_text(minimum)}.")
    if maximum is not None and number > maximum:
        raise ValueError(f"Ensure this value is less than or equal to {number_text(maximum)}.")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"Must be true or false, got {value!r}.")


def _same(a: Any, b: Any) -> bool:
    # Python's True == 1 must not let a boolean match a numeric option (or the reverse).
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number_text(value)
    return str(value)


def _match_option(value: Any, options: list[Any]) -> Any:
    for option in options:
        if _same(value, option):
            return option
    # Payloads often carry options as strings ("0" for 0, "true" for true): match by text and
    # store the option's own value.
    text = _as_text(value)
    for option in options:
        if option is not None and _as_text(option) == text:
            return option
    shown = ", ".join(_as_text(option) for option in options[:20])
    more = ", ..." if len(options) > 20 else ""
    raise ValueError(f"{_as_text(value)!r} is not one of the options ({shown}{more}).")


def _field_schema(field: Mapping[str, Any], options: list[Any] | None) -> dict[str, Any]:
    field_type = field.get("type")
    schema: dict[str, Any] = {}
    if isinstance(field.get("name"), str):
        schema["title"] = field["name"]
    if is_seed_field(field):
        schema.update(type="integer", minimum=SEED_MIN, maximum=SEED_MAX)
    elif is_number_field(field):
        schema["type"] = "integer" if _is_integer_field(field) else "number"
        minimum = _constraint(field, "min")
        maximum = _constraint(field, "max")
        if minimum is not None:
            schema["minimum"] = minimum
        if maximum is not None:
            schema["maximum"] = maximum
    elif field_type == "checkbox":
        schema["type"] = "boolean"
    elif field_type in _OPTION_TYPES:
        if options is not None:
            schema["enum"] = options
        else:
            schema["type"] = "string"
    elif field_type == "image_loader":
        schema.update(type="string", format="uri")
    elif field_type in _STRING_TYPES or field_type == "prompt_editor":
        schema["type"] = "string"
    if field_type == "prompt_editor":
        schema["description"] = (
            "Plain text, or a JSON string of a rich-text document; $name inserts a variable, "
            "#<step id> another step's text output."
        )
    elif isinstance(field.get("placeholder"), str) and field["placeholder"]:
        schema["description"] = field["placeholder"]
    default = field.get("default")
    if default is not None:
        try:
            schema["default"] = (
                _coerce(field, default, options) if not _is_empty(default) else default
            )
        except ValueError:
            schema["default"] = default
    schema["x-form-type"] = field_type
    return schema


def _is_integer_field(field: Mapping[str, Any]) -> bool:
    for name in ("step", "min"):
        bound = _constraint(field, name)
        if bound is not None and not float(bound).is_integer():
            return False
    return _constraint(field, "step") is not None
