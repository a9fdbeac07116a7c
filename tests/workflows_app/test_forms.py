"""Workflow forms: payload validation and coercion, option resolution, JSON Schema."""

import json

import pytest

from workflows_app.forms import (
    form_defaults,
    form_json_schema,
    prompt_fields,
    resolve_form,
    validate_payload,
)

SAMPLERS = [{"name": "Euler", "value": "euler"}, {"name": "DPM++ 2M", "value": "dpmpp_2m"}]
MODELS = [{"name": "Base", "value": 0}, {"name": "Fast", "value": 1}]
ASPECT = {
    "name": "Aspect Ratio",
    "type": "aspect_ratio",
    "options": [{"option": "1:1"}, {"option": "16:9"}],
}
CONF = {"samplers": SAMPLERS, "models.json": MODELS, "aspect_ratio": ASPECT}

FORM = {
    "config": {"groupOrder": ["main"], "maxNumberOfGenerations": 4, "componentGroup": "image"},
    "fields": [
        {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
        {
            "id": "steps",
            "name": "Steps",
            "type": "slider",
            "default": 20,
            "constraints": {"min": 1, "max": 60, "step": 1},
        },
        {
            "id": "denoise",
            "name": "Denoise",
            "type": "slider",
            "default": 1,
            "constraints": {"min": 0, "max": 1, "step": 0.01},
        },
        {
            "id": "seed",
            "name": "Seed",
            "type": "optional_input",
            "input_type": "number",
            "constraints": {"min": 0, "max": 1000000, "step": 1},
        },
        {"id": "label", "name": "Label", "type": "input", "placeholder": "a label"},
        {
            "id": "sampler",
            "name": "Sampler",
            "type": "select",
            "default": "euler",
            "conf_file": "samplers.json",
        },
        {
            "id": "model",
            "name": "Model",
            "type": "select",
            "default": "0",
            "conf_file": "models.json",
        },
        {"id": "mode", "name": "Mode", "type": "select", "options": ["fast", "slow"]},
        {"id": "free", "name": "Free", "type": "select", "conf_file": "unknown.json"},
        {"id": "tiled", "name": "Tiled", "type": "checkbox", "default": False},
        {"id": "image", "name": "Image", "type": "image_loader", "default": ""},
        {"id": "color", "name": "Color", "type": "color_picker", "default": "#ff0000"},
        {
            "id": "ratio",
            "name": "Ratio",
            "type": "aspect_ratio",
            "conf_file": "aspect_ratio.json",
            "default": "1:1",
        },
    ],
}


def check(payload, conf_options=CONF):
    return validate_payload(FORM, payload, conf_options=conf_options)


def test_numbers_from_strings_are_coerced():
    coerced, errors = check({"prompt": "x", "steps": "10", "denoise": "0.5", "seed": " 42 "})

    assert errors == {}
    assert coerced == {"prompt": "x", "steps": 10, "denoise": 0.5, "seed": 42}


def test_numbers_stay_numbers():
    coerced, errors = check({"prompt": "x", "steps": 10, "denoise": 0.25})

    assert errors == {}
    assert coerced["steps"] == 10 and coerced["denoise"] == 0.25


@pytest.mark.parametrize("bad", ["ten", "1O", True, [], {}, "nan", "inf", float("nan")])
def test_non_numbers_are_rejected(bad):
    _, errors = check({"prompt": "x", "steps": bad})

    assert list(errors) == ["steps"]
    assert "number" in errors["steps"][0]


def test_min_and_max_are_enforced():
    _, low = check({"prompt": "x", "steps": "0"})
    _, high = check({"prompt": "x", "denoise": 1.5, "seed": -1})

    assert low == {"steps": ["Ensure this value is greater than or equal to 1."]}
    assert high == {
        "denoise": ["Ensure this value is less than or equal to 1."],
        "seed": ["A seed must be a whole number from 0 to 4294967295, got -1."],
    }


def test_bounds_are_inclusive():
    _, errors = check({"prompt": "x", "steps": 1, "denoise": "1", "seed": 1000000})

    assert errors == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("False", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("1", True),
        ("unchecked", False),
    ],
)
def test_checkbox_booleans_from_strings(raw, expected):
    coerced, errors = check({"prompt": "x", "tiled": raw})

    assert errors == {}
    assert coerced["tiled"] is expected


@pytest.mark.parametrize("bad", ["maybe", 2, [], 0.5])
def test_checkbox_rejects_other_values(bad):
    _, errors = check({"prompt": "x", "tiled": bad})

    assert list(errors) == ["tiled"]


def test_select_value_must_be_an_option_when_options_are_known():
    _, errors = check({"prompt": "x", "sampler": "heun", "mode": "medium"})

    assert errors == {
        "sampler": ["'heun' is not one of the options (euler, dpmpp_2m)."],
        "mode": ["'medium' is not one of the options (fast, slow)."],
    }


def test_select_text_match_takes_the_options_value():
    coerced, errors = check({"prompt": "x", "model": "1", "sampler": "dpmpp_2m", "mode": "fast"})

    assert errors == {}
    assert coerced["model"] == 1
    assert coerced["sampler"] == "dpmpp_2m"


def test_select_boolean_does_not_match_numeric_option():
    _, errors = check({"prompt": "x", "model": True})

    assert list(errors) == ["model"]


def test_select_without_known_options_accepts_any_scalar():
    coerced, errors = check(
        {"prompt": "x", "free": "anything", "sampler": "heun"}, conf_options=None
    )

    assert errors == {}
    assert coerced["free"] == "anything"


def test_select_rejects_objects():
    _, errors = check({"prompt": "x", "free": {"a": 1}})

    assert list(errors) == ["free"]


def test_aspect_ratio_options_from_object_conf():
    _, ok = check({"prompt": "x", "ratio": "16:9"})
    _, bad = check({"prompt": "x", "ratio": "2:1"})

    assert ok == {}
    assert list(bad) == ["ratio"]


def test_required_field_missing_null_or_blank():
    for payload in [{}, {"prompt": None}, {"prompt": ""}, {"prompt": "   "}]:
        _, errors = check(payload)
        assert errors == {"prompt": ["This field is required."]}


def test_optional_empty_values_are_kept_as_they_are():
    coerced, errors = check({"prompt": "x", "seed": "", "steps": None})

    assert errors == {}
    assert coerced == {"prompt": "x", "seed": "", "steps": None}


def test_refs_skip_validation_even_for_required_fields():
    payload = {"prompt": {"$ref": 1000001, "path": ".data"}, "steps": {"$ref": 2, "path": ".n"}}

    coerced, errors = check(payload)

    assert errors == {}
    assert coerced == payload


def test_keys_not_in_form_are_kept():
    coerced, errors = check({"prompt": "x", "extra": {"deep": [1]}, "steps": "5"})

    assert errors == {}
    assert coerced["extra"] == {"deep": [1]}


def test_string_fields_accept_numbers_as_text_and_reject_objects():
    coerced, errors = check({"prompt": "x", "label": 12, "color": 1.0, "image": ["x"]})

    assert coerced["label"] == "12" and coerced["color"] == "1"
    assert errors == {"image": ["Must be a string."]}


def test_prompt_document_given_as_list_becomes_json_string():
    document = [{"type": "paragraph", "children": [{"text": "a cat"}]}]

    coerced, errors = check({"prompt": document})

    assert errors == {}
    assert json.loads(coerced["prompt"]) == document


def test_prompt_rejects_numbers():
    _, errors = check({"prompt": 5})

    assert errors == {"prompt": ["Must be text or a rich-text document."]}


def test_no_form_accepts_anything():
    payload = {"anything": object()}

    assert validate_payload(None, payload) == (payload, {})


def test_payload_is_not_mutated():
    payload = {"prompt": "x", "steps": "10"}

    check(payload)

    assert payload == {"prompt": "x", "steps": "10"}


def test_string_constraints_are_read_and_broken_constraints_ignored():
    form = {
        "fields": [
            {"id": "a", "type": "slider", "constraints": {"min": "2", "max": "4"}},
            {"id": "b", "type": "slider", "constraints": {"min": "low"}},
        ]
    }

    _, errors = validate_payload(form, {"a": 5, "b": -100})

    assert errors == {"a": ["Ensure this value is less than or equal to 4."]}


def test_resolve_form_replaces_conf_file_with_options():
    resolved = resolve_form(FORM, CONF)
    fields = {f["id"]: f for f in resolved["fields"]}

    assert fields["sampler"]["options"] == SAMPLERS and "conf_file" not in fields["sampler"]
    assert fields["model"]["options"] == MODELS
    assert fields["ratio"]["options"] == ASPECT["options"]
    assert fields["free"]["conf_file"] == "unknown.json" and "options" not in fields["free"]
    assert FORM["fields"][5]["conf_file"] == "samplers.json"  # original untouched


def test_json_schema_of_form():
    schema = form_json_schema(FORM, conf_options=CONF)
    props = schema["properties"]

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["prompt"]
    assert props["steps"] == {
        "title": "Steps",
        "type": "integer",
        "minimum": 1,
        "maximum": 60,
        "default": 20,
        "x-form-type": "slider",
    }
    assert props["denoise"]["type"] == "number"
    assert props["seed"]["type"] == "integer"
    assert props["sampler"]["enum"] == ["euler", "dpmpp_2m"]
    assert props["model"]["enum"] == [0, 1] and props["model"]["default"] == 0
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert props["free"] == {"title": "Free", "type": "string", "x-form-type": "select"}
    assert props["ratio"]["enum"] == ["1:1", "16:9"]
    assert props["tiled"] == {
        "title": "Tiled",
        "type": "boolean",
        "default": False,
        "x-form-type": "checkbox",
    }
    assert props["image"]["format"] == "uri"
    assert props["label"]["description"] == "a label"
    assert props["prompt"]["type"] == "string"


def test_json_schema_of_no_form():
    schema = form_json_schema(None, conf_options={})

    assert schema["properties"] == {}
    assert "required" not in schema


def test_form_defaults_and_prompt_fields():
    assert form_defaults(FORM) == {
        "steps": 20,
        "denoise": 1,
        "sampler": "euler",
        "model": "0",
        "tiled": False,
        "image": "",
        "color": "#ff0000",
        "ratio": "1:1",
    }
    assert prompt_fields(FORM) == frozenset({"prompt"})


# --- seeds: any unsigned 32-bit integer, whatever the field's slider says ----------------------

SEED_FORM = {
    "fields": [
        {"id": "seed", "name": "Seed", "type": "slider", "constraints": {"min": 0, "max": 999999}},
        {"id": "noise_seed", "name": "Noise seed", "type": "input"},
        {"id": "steps", "name": "Steps", "type": "slider", "constraints": {"min": 1, "max": 60}},
        {"id": "seed_mode", "name": "Seed mode", "type": "select", "options": ["fixed", "random"]},
    ]
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2145214451", 2145214451),  # as the component library's test.json payloads carry it
        (4294967295, 4294967295),
        (" 4294967295 ", 4294967295),
        (0, 0),
        (1000000, 1000000),
        (12.0, 12),
    ],
)
def test_a_seed_takes_any_unsigned_32_bit_integer_over_its_sliders_max(raw, expected):
    coerced, errors = validate_payload(SEED_FORM, {"seed": raw, "noise_seed": raw})

    assert errors == {}
    assert coerced == {"seed": expected, "noise_seed": expected}


@pytest.mark.parametrize("bad", [4294967296, -1, "abc", "-1", "1.5", 2.5, True, [], {}, "nan"])
def test_a_seed_outside_unsigned_32_bits_or_not_a_whole_number_is_refused(bad):
    _, errors = validate_payload(SEED_FORM, {"seed": bad})

    assert errors == {
        "seed": [f"A seed must be a whole number from 0 to 4294967295, got {bad!r}."]
    }


def test_other_fields_keep_their_min_and_max_next_to_a_seed():
    _, errors = validate_payload(SEED_FORM, {"seed": "2145214451", "steps": 61})

    assert errors == {"steps": ["Ensure this value is less than or equal to 60."]}


def test_a_seed_named_select_is_not_a_seed():
    coerced, errors = validate_payload(SEED_FORM, {"seed_mode": "random"})

    assert errors == {}
    assert coerced == {"seed_mode": "random"}


def test_json_schema_of_a_seed_is_the_unsigned_32_bit_range():
    props = form_json_schema(SEED_FORM, conf_options={})["properties"]

    assert props["seed"] == {"title": "Seed", "type": "integer", "minimum": 0,
                             "maximum": 4294967295, "x-form-type": "slider"}
    assert props["noise_seed"]["maximum"] == 4294967295
    assert props["steps"]["maximum"] == 60
