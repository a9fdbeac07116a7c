"""The variables step: pick each variable's value for one generation from its hash."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from generation_app.engine.prng import HashRandom


def pick_variables(
    variables: list[dict[str, Any]],
    hash: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return `{name: value}` for one generation, drawing from a fresh `HashRandom(hash)`.

    Variables draw in list order, one draw each: `pick` is a uniform pick over `value.values`,
    `weighted_pick` a pick weighted by `value.weights` (numbers or numeric strings; anything else
    weighs 0). A locked variable (`lock_value`) with a non-null `test_value` takes that value and
    consumes no draw. An empty values list gives "" (and still consumes its draw).

    `overrides` (a generation request's `{variables: {name: value}}`) replace a variable's values
    with the one given. The variable still consumes exactly the draws it would have consumed
    without the override (one, or none when locked), so overriding one variable never shifts the
    picks of the others for the same hash.
    """
    rng = HashRandom(hash)
    overrides = overrides or {}
    picked: dict[str, str] = {}
    for variable in variables:
        name = variable.get("name")
        if not isinstance(name, str):
            continue
        locked = bool(variable.get("lock_value")) and variable.get("test_value") is not None
        if locked:
            value = _text(variable["test_value"])
        else:
            value = _draw(rng, variable)
        if name in overrides:
            value = _text(overrides[name])
        picked[name] = value
    return picked


def generation_traits(
    picked: Mapping[str, str], variables: Sequence[Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """Return `(features, feature_labels)` of one generation, in the variables' list order.

    `features` maps a variable's name to its picked value (the GenerationOutput's
    `generation.features`). Which variables are traits: those marked `is_feature` when any
    variable is marked (as the existing platform's data marks them), else every picked variable,
    so data that never marks one loses nothing. `feature_labels` maps a name to the display name
    of its picked value (`value.display_names` at the value's index) where one is given; an
    overridden value that is not in the list has none.
    """
    definitions = [v for v in variables if isinstance(v, Mapping) and isinstance(v.get("name"), str)]
    marked = [v for v in definitions if v.get("is_feature") is True]
    features: dict[str, str] = {}
    labels: dict[str, str] = {}
    for variable in marked or definitions:
        name = variable["name"]
        if name not in picked:
            continue
        value = picked[name]
        features[name] = value
        label = _display_name(variable, value)
        if label:
            labels[name] = label
    return features, labels


def _display_name(variable: Mapping[str, Any], value: str) -> str | None:
    spec = variable.get("value")
    if not isinstance(spec, Mapping):
        return None
    values, names = spec.get("values"), spec.get("display_names")
    if not isinstance(values, list) or not isinstance(names, list):
        return None
    for index, candidate in enumerate(values):
        if _text(candidate) == value:
            name = names[index] if index < len(names) else None
            return name if isinstance(name, str) and name.strip() else None
    return None


def _draw(rng: HashRandom, variable: Mapping[str, Any]) -> str:
    spec = variable.get("value")
    spec = spec if isinstance(spec, Mapping) else {}
    values = spec.get("values")
    values = values if isinstance(values, list) else []
    if not values:
        rng.rand()
        return ""
    if variable.get("type") == "weighted_pick":
        weights = spec.get("weights")
        weights = [_weight(w) for w in weights] if isinstance(weights, list) else []
        if not weights:
            # No weights at all: the platform's JavaScript would throw; an even pick keeps the
            # generation running and consumes the same single draw.
            weights = [1.0] * len(values)
        choice = rng.pseudorandom_weighted_pick(values, weights)
    else:
        choice = rng.pseudorandom_pick(values)
    return _text(choice)


def _weight(raw: Any) -> float:
    if isinstance(raw, bool):
        return 0.0
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
