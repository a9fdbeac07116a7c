"""GenerationInput v2: validation (every 400 case of SPEC section 3), re-numbering, generations."""

import copy
import itertools
import json

import pytest

from collections_app.generation_input import (
    ALPHABET,
    GenerationInputError,
    count_generations,
    empty_generation_input,
    generation_hashes,
    new_hash,
    renumber,
    validate,
)

TXT2IMG_FORM = {
    "config": {"maxNumberOfGenerations": 4},
    "fields": [
        {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
        {"id": "negative", "name": "Negative", "type": "prompt_editor"},
        {"id": "steps", "name": "Steps", "type": "slider", "constraints": {"min": 1, "max": 60}},
        {"id": "tiled", "name": "Tiled", "type": "checkbox"},
        {"id": "image", "name": "Image", "type": "image_loader"},
    ],
}
NODES = {"txt2img": TXT2IMG_FORM, "prompt": None, "variables": None, "js": None, "p5": None}


def node_form(name):
    return NODES.get(name, False)


def doc(*children):
    return json.dumps([{"type": "paragraph", "children": list(children)}])


def comp(step_id):
    return {"type": "component", "component": {"id": step_id}, "children": [{"text": ""}]}


def data(steps=(), variables=(), generations=None, **extra):
    result = {"version": "v2", "steps": list(steps), "variables": list(variables), **extra}
    result["generations"] = generations or {
        "hashes": [],
        "generations": 1,
        "use_custom_hashes": False,
    }
    return result


def errors_of(value, **kwargs):
    with pytest.raises(GenerationInputError) as caught:
        validate(value, node_form=node_form, **kwargs)
    return caught.value.details


VALID_STEPS = [
    {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a $color cat"}},
    {
        "id": 2,
        "nodeName": "txt2img",
        "nodePayload": {"prompt": doc({"text": "draw "}, comp(1)), "steps": "10", "tiled": "true"},
        "alias": "Image",
    },
    {
        "id": 3,
        "nodeName": "txt2img",
        "nodePayload": {"prompt": "x", "image": {"$ref": 2, "path": ".src"}},
    },
]
VALID_VARIABLES = [
    {
        "name": "color",
        "type": "pick",
        "value_type": "strings",
        "value": {"values": ["red", "blue"]},
    },
    {
        "name": "size",
        "type": "weighted_pick",
        "value_type": "integers",
        "value": {"values": [1, 2.0, "3"], "weights": ["1", 2, 0.5]},
    },
]


# --- the empty input and valid inputs


def test_empty_generation_input():
    assert empty_generation_input() == {
        "version": "v2",
        "steps": [],
        "generations": {"hashes": [], "generations": 1, "use_custom_hashes": False},
        "variables": [],
    }
    assert empty_generation_input() is not empty_generation_input()


def test_empty_input_is_valid():
    assert validate(empty_generation_input(), node_form=node_form) == empty_generation_input()


def test_valid_input_is_normalised():
    original = data(VALID_STEPS, VALID_VARIABLES, extra_key="kept")
    snapshot = copy.deepcopy(original)

    result = validate(original, node_form=node_form)

    assert original == snapshot  # input untouched
    assert result["steps"][1]["nodePayload"]["steps"] == 10
    assert result["steps"][1]["nodePayload"]["tiled"] is True
    assert result["steps"][2]["nodePayload"]["image"] == {"$ref": 2, "path": ".src"}
    assert result["variables"][1]["value"] == {"values": ["1", "2", "3"], "weights": [1, 2, 0.5]}
    assert result["extra_key"] == "kept"
    assert result["steps"][1]["alias"] == "Image"


def test_missing_parts_take_defaults():
    result = validate({}, node_form=node_form)

    assert result == empty_generation_input()


def test_missing_value_type_and_value_are_defaulted():
    result = validate(data(variables=[{"name": "v", "type": "pick"}]), node_form=node_form)

    assert result["variables"] == [
        {"name": "v", "type": "pick", "value_type": "strings", "value": {"values": []}}
    ]


def test_forward_refs_are_allowed():
    steps = [
        {
            "id": 1,
            "nodeName": "txt2img",
            "nodePayload": {"prompt": "x", "image": {"$ref": 2, "path": ".src"}},
        },
        {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "y"}},
    ]

    assert validate(data(steps), node_form=node_form)["steps"][0]["id"] == 1


def test_hidden_variables_step_is_a_normal_step():
    steps = [{"id": 953, "nodeName": "variables", "nodePayload": {}}, *VALID_STEPS]

    assert len(validate(data(steps), node_form=node_form)["steps"]) == 4


# --- whole-object and version errors


@pytest.mark.parametrize("value", [None, [], "v2", 5])
def test_not_an_object(value):
    assert errors_of(value) == {"data": ["Expected a GenerationInput object."]}


def test_unsupported_version():
    assert errors_of(data(version="v1")) == {
        "version": ["Unsupported version 'v1': expected 'v2'."]
    }


# --- steps


def test_steps_not_a_list():
    assert errors_of(data() | {"steps": {"id": 1}}) == {"steps": ["Expected a list of steps."]}


def test_step_not_an_object():
    assert errors_of(data(["x"])) == {"steps[0]": ["Expected a step object."]}


@pytest.mark.parametrize("bad_id", [None, "1", 1.5, True])
def test_step_id_must_be_an_integer(bad_id):
    steps = [{"id": bad_id, "nodeName": "prompt", "nodePayload": {}}]

    assert errors_of(data(steps)) == {"steps[0].id": ["A step needs an integer id."]}


def test_duplicate_step_ids():
    steps = [
        {"id": 7, "nodeName": "prompt", "nodePayload": {}},
        {"id": 7, "nodeName": "prompt", "nodePayload": {}},
    ]

    assert errors_of(data(steps)) == {"steps[1].id": ["Duplicate step id 7 (also steps[0])."]}


def test_unknown_node_name():
    steps = [{"id": 1, "nodeName": "nope", "nodePayload": {}}]

    assert errors_of(data(steps)) == {"steps[0].nodeName": ["Unknown node 'nope'."]}


@pytest.mark.parametrize("name", [None, "", "  ", 5])
def test_missing_node_name(name):
    steps = [{"id": 1, "nodeName": name, "nodePayload": {}}]

    assert errors_of(data(steps)) == {"steps[0].nodeName": ["A step needs a nodeName."]}


def test_payload_must_be_an_object():
    steps = [{"id": 1, "nodeName": "prompt", "nodePayload": ["x"]}]

    assert errors_of(data(steps)) == {"steps[0].nodePayload": ["Expected an object."]}


def test_missing_payload_becomes_empty_object():
    result = validate(data([{"id": 1, "nodeName": "prompt"}]), node_form=node_form)

    assert result["steps"][0]["nodePayload"] == {}


def test_optional_step_fields_are_type_checked():
    steps = [
        {
            "id": 1,
            "nodeName": "prompt",
            "nodePayload": {},
            "alias": 5,
            "skip": "no",
            "isTest": 1,
            "fromId": "x",
        }
    ]

    assert errors_of(data(steps)) == {
        "steps[0].alias": ["Expected a string."],
        "steps[0].skip": ["Expected true or false."],
        "steps[0].isTest": ["Expected true or false."],
        "steps[0].fromId": ["Expected an integer step id."],
    }


def test_payload_fails_the_form():
    steps = [{"id": 1, "nodeName": "txt2img", "nodePayload": {"steps": "100", "tiled": "maybe"}}]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.prompt": ["This field is required."],
        "steps[0].nodePayload.steps": ["Ensure this value is less than or equal to 60."],
        "steps[0].nodePayload.tiled": ["Must be true or false, got 'maybe'."],
    }


def test_errors_name_the_step_index():
    steps = [
        *VALID_STEPS,
        {"id": 4, "nodeName": "txt2img", "nodePayload": {"prompt": "x", "steps": "many"}},
    ]

    assert errors_of(data(steps)) == {
        "steps[3].nodePayload.steps": ["A number is required, got 'many'."]
    }


# --- $ref


def test_dangling_ref():
    steps = [
        {
            "id": 1,
            "nodeName": "txt2img",
            "nodePayload": {"prompt": "x", "image": {"$ref": 99, "path": ".src"}},
        }
    ]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.image": ["Refers to step 99, which does not exist."]
    }


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"$ref": "2", "path": ".src"}, "`$ref` must be an integer step id."),
        ({"$ref": None, "path": ".src"}, "`$ref` must be an integer step id."),
        ({"$ref": 2}, 'A `$ref` needs a string `path` (a jq filter such as ".src").'),
        ({"$ref": 2, "path": 3}, 'A `$ref` needs a string `path` (a jq filter such as ".src").'),
    ],
)
def test_malformed_ref(ref, message):
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"x": ref}},
        {"id": 2, "nodeName": "prompt", "nodePayload": {}},
    ]

    assert errors_of(data(steps)) == {"steps[0].nodePayload.x": [message]}


def test_ref_path_that_jq_cannot_compile():
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"x": {"$ref": 2, "path": ".["}}},
        {"id": 2, "nodeName": "prompt", "nodePayload": {}},
    ]

    details = errors_of(data(steps))

    assert list(details) == ["steps[0].nodePayload.x"]
    assert details["steps[0].nodePayload.x"][0].startswith("Invalid jq path '.[': syntax error")


def test_ref_cycle():
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"a": {"$ref": 2, "path": ".data"}}},
        {"id": 2, "nodeName": "prompt", "nodePayload": {"b": {"$ref": 1, "path": ".data"}}},
    ]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.a": ["Steps form a cycle: 1 -> 2 -> 1."]
    }


def test_self_reference_is_a_cycle():
    steps = [{"id": 5, "nodeName": "prompt", "nodePayload": {"a": {"$ref": 5, "path": ".data"}}}]

    assert errors_of(data(steps)) == {"steps[0].nodePayload.a": ["Steps form a cycle: 5 -> 5."]}


def test_mention_cycle():
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "see #2"}},
        {"id": 2, "nodeName": "txt2img", "nodePayload": {"prompt": doc(comp(1))}},
    ]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.prompt": ["Steps form a cycle: 1 -> 2 -> 1."]
    }


def test_cycle_through_a_component_reader():
    # js at index 1 waits for step 1; step 1 refers to the js step.
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"a": {"$ref": 2, "path": ".src"}}},
        {"id": 2, "nodeName": "js", "nodePayload": {"script": "x"}},
    ]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.a": ["Steps form a cycle: 1 -> 2 -> 1."]
    }


def test_custom_component_readers():
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"a": {"$ref": 2, "path": ".src"}}},
        {"id": 2, "nodeName": "js", "nodePayload": {}},
    ]

    result = validate(data(steps), node_form=node_form, reads_all_components=lambda name: False)

    assert [s["id"] for s in result["steps"]] == [1, 2]


# --- mentions


def test_dangling_component_node_mention():
    steps = [{"id": 1, "nodeName": "txt2img", "nodePayload": {"prompt": doc(comp(42))}}]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.prompt": ["Mentions step #42, which does not exist."]
    }


def test_dangling_mention_in_any_document_value():
    steps = [
        {"id": 1, "nodeName": "txt2img", "nodePayload": {"prompt": "x", "negative": doc(comp(42))}}
    ]

    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.negative": ["Mentions step #42, which does not exist."]
    }


def test_text_hash_numbers_that_are_no_step_are_plain_text():
    steps = [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "ranked #1 #2 of #100"}}]

    # "#1" is the step itself, so it would be a cycle; "#2" and "#100" are just text.
    assert errors_of(data(steps)) == {
        "steps[0].nodePayload.prompt": ["Steps form a cycle: 1 -> 1."]
    }
    steps[0]["id"] = 5
    assert validate(data(steps), node_form=node_form)["steps"][0]["id"] == 5


# --- variables


def test_variables_not_a_list():
    assert errors_of(data() | {"variables": {"name": "x"}}) == {
        "variables": ["Expected a list of variables."]
    }


def test_variable_not_an_object():
    assert errors_of(data(variables=["color"])) == {"variables[0]": ["Expected a variable object."]}


@pytest.mark.parametrize("name", [None, "", "   ", 3])
def test_variable_name_required(name):
    variables = [{"name": name, "type": "pick", "value": {"values": []}}]

    assert errors_of(data(variables=variables)) == {
        "variables[0].name": ["A variable needs a non-empty name."]
    }


def test_duplicate_variable_names():
    variables = [{"name": "a", "type": "pick"}, {"name": "a", "type": "pick"}]

    assert errors_of(data(variables=variables)) == {
        "variables[1].name": ["Duplicate variable name 'a' (also variables[0])."]
    }


@pytest.mark.parametrize("kind", ["random", None, "PICK"])
def test_unknown_variable_type(kind):
    variables = [{"name": "a", "type": kind, "value": {"values": ["x"]}}]

    assert errors_of(data(variables=variables)) == {
        "variables[0].type": [
            f"Unknown variable type {kind!r}: expected 'pick' or 'weighted_pick'."
        ]
    }


def test_unknown_value_type():
    variables = [{"name": "a", "type": "pick", "value_type": "audio", "value": {"values": ["x"]}}]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value_type": [
            "Unknown value_type 'audio': expected one of strings, images, text, video, live_artifact, integers."
        ]
    }


@pytest.mark.parametrize(
    "value_type", ["strings", "images", "text", "video", "live_artifact", "integers"]
)
def test_every_listed_value_type_is_valid(value_type):
    variables = [
        {"name": "a", "type": "pick", "value_type": value_type, "value": {"values": ["x"]}}
    ]

    assert (
        validate(data(variables=variables), node_form=node_form)["variables"][0]["value_type"]
        == value_type
    )


def test_value_must_be_an_object_with_a_values_list():
    variables = [
        {"name": "a", "type": "pick", "value": ["x"]},
        {"name": "b", "type": "pick", "value": {"values": "x"}},
    ]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value": ["Expected an object with a `values` list."],
        "variables[1].value.values": ["Expected a list of strings."],
    }


def test_non_string_values_other_than_numbers_are_rejected():
    variables = [
        {"name": "a", "type": "pick", "value": {"values": ["ok", True, None, {"x": 1}, [1]]}}
    ]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value.values": [
            "values[1] must be a string, got a boolean.",
            "values[2] must be a string, got null.",
            "values[3] must be a string, got an object.",
            "values[4] must be a string, got a list.",
        ]
    }


def test_lock_value_must_be_boolean():
    variables = [{"name": "a", "type": "pick", "lock_value": "yes", "value": {"values": ["x"]}}]

    assert errors_of(data(variables=variables)) == {
        "variables[0].lock_value": ["Expected true or false."]
    }


def test_weighted_pick_needs_weights():
    variables = [{"name": "a", "type": "weighted_pick", "value": {"values": ["x", "y"]}}]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value.weights": [
            "A weighted_pick variable needs a list of weights, one per value."
        ]
    }


def test_weights_length_must_match_values():
    variables = [
        {"name": "a", "type": "weighted_pick", "value": {"values": ["x", "y"], "weights": [1]}}
    ]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value.weights": ["Expected 2 weights (one per value), got 1."]
    }


def test_weights_must_be_non_negative_numbers():
    variables = [
        {
            "name": "a",
            "type": "weighted_pick",
            "value": {"values": ["x", "y", "z", "w"], "weights": ["heavy", -1, True, 2]},
        }
    ]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value.weights": [
            "weights[0] must be a non-negative number, got 'heavy'.",
            "weights[1] must be a non-negative number, got -1.",
            "weights[2] must be a non-negative number, got True.",
        ]
    }


def test_weights_must_not_all_be_zero():
    variables = [{"name": "a", "type": "weighted_pick", "value": {"values": ["x"], "weights": [0]}}]

    assert errors_of(data(variables=variables)) == {
        "variables[0].value.weights": ["At least one weight must be positive."]
    }


def test_pick_variable_weights_are_not_checked():
    variables = [{"name": "a", "type": "pick", "value": {"values": ["x"], "weights": ["?"]}}]

    assert validate(data(variables=variables), node_form=node_form)["variables"][0]["value"][
        "weights"
    ] == ["?"]


# --- generations


def test_generations_not_an_object():
    assert errors_of(data() | {"generations": [1]}) == {
        "generations": ["Expected an object with hashes, generations and use_custom_hashes."]
    }


def test_hashes_must_be_strings():
    generations = {"hashes": ["oo1", 5, ""], "generations": 1, "use_custom_hashes": False}

    assert errors_of(data(generations=generations)) == {
        "generations.hashes": [
            "hashes[1] must be a non-empty string.",
            "hashes[2] must be a non-empty string.",
        ]
    }


def test_hashes_must_be_a_list():
    generations = {"hashes": "oo1", "generations": 1, "use_custom_hashes": False}

    assert errors_of(data(generations=generations)) == {
        "generations.hashes": ["Expected a list of hash strings."]
    }


@pytest.mark.parametrize("count", [-1, 1.5, "many", True])
def test_generations_count_must_be_a_whole_number(count):
    generations = {"hashes": [], "generations": count, "use_custom_hashes": False}

    assert errors_of(data(generations=generations)) == {
        "generations.generations": ["Expected a whole number of generations, 0 or more."]
    }


def test_generations_count_from_digit_string_and_partial_object():
    result = validate(data(generations={"generations": "3"}), node_form=node_form)

    assert result["generations"] == {"hashes": [], "generations": 3, "use_custom_hashes": False}


def test_custom_hashes_flag_needs_hashes():
    generations = {"hashes": [], "generations": 1, "use_custom_hashes": True}

    assert errors_of(data(generations=generations)) == {
        "generations.hashes": ["use_custom_hashes is set, so at least one hash is needed."]
    }


def test_use_custom_hashes_must_be_boolean():
    generations = {"hashes": ["a"], "generations": 1, "use_custom_hashes": "yes"}

    assert errors_of(data(generations=generations)) == {
        "generations.use_custom_hashes": ["Expected true or false."]
    }


def test_all_errors_are_reported_together():
    bad = {
        "version": "v2",
        "steps": [{"id": 1, "nodeName": "nope"}],
        "variables": [{"name": "", "type": "x"}],
        "generations": {"generations": -2},
    }

    assert set(errors_of(bad)) == {
        "steps[0].nodeName",
        "variables[0].name",
        "variables[0].type",
        "generations.generations",
    }


def test_error_message_summarises_first_problem():
    with pytest.raises(
        GenerationInputError, match=r"Invalid GenerationInput: version: Unsupported"
    ):
        validate({"version": "v3"}, node_form=node_form)


# --- renumber


def test_renumber_rewrites_ids_refs_and_mentions():
    steps = [
        {"id": 953, "nodeName": "variables", "nodePayload": {}},
        {
            "id": 10,
            "nodeName": "prompt",
            "nodePayload": {"prompt": "a $color cat #953"},
            "testValue": {"src": "x"},
        },
        {
            "id": 20,
            "nodeName": "txt2img",
            "nodePayload": {
                "prompt": doc({"text": "after #10 "}, comp(10)),
                "image": {"$ref": 30, "path": ".src"},
                "caption": "#10 stays: not a prompt",
            },
            "fromId": 1,
        },
        {"id": 30, "nodeName": "txt2img", "nodePayload": {"prompt": "#10 and #20 and #77"}},
    ]
    original = data(steps, VALID_VARIABLES)
    snapshot = copy.deepcopy(original)

    result = renumber(original, itertools.count(1000000))

    assert original == snapshot
    assert [(s["id"], s.get("fromId")) for s in result["steps"]] == [
        (953, None),
        (1000000, 10),
        (1000001, 20),
        (1000002, 30),
    ]
    assert all("testValue" not in s for s in result["steps"])
    assert result["steps"][1]["nodePayload"]["prompt"] == "a $color cat #953"
    payload = result["steps"][2]["nodePayload"]
    assert json.loads(payload["prompt"]) == json.loads(
        doc({"text": "after #1000000 "}, comp(1000000))
    )
    assert payload["image"] == {"$ref": 1000002, "path": ".src"}
    assert payload["caption"] == "#10 stays: not a prompt"
    assert result["steps"][3]["nodePayload"]["prompt"] == "#1000000 and #1000001 and #77"
    assert result["variables"] == original["variables"]
    assert result["generations"] == original["generations"]


def test_renumber_rewrites_prompt_fields_given_by_callback():
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {}},
        {"id": 2, "nodeName": "txt2img", "nodePayload": {"prompt": "x", "negative": "no #1"}},
    ]

    result = renumber(data(steps), iter([100, 200]), prompt_keys=lambda name: {"negative"})

    assert result["steps"][1]["nodePayload"]["negative"] == "no #100"


def test_renumbered_input_stays_valid():
    result = renumber(
        validate(data(VALID_STEPS, VALID_VARIABLES), node_form=node_form), itertools.count(5000)
    )

    assert [s["id"] for s in validate(result, node_form=node_form)["steps"]] == [5000, 5001, 5002]


def test_renumber_without_steps():
    assert renumber(empty_generation_input(), iter([])) == empty_generation_input()


# --- generations count and hashes


def test_count_generations():
    assert count_generations(empty_generation_input()) == 1
    assert (
        count_generations(
            data(generations={"hashes": [], "generations": 4, "use_custom_hashes": False})
        )
        == 4
    )
    assert (
        count_generations(
            data(generations={"hashes": ["a", "b"], "generations": 9, "use_custom_hashes": False})
        )
        == 2
    )
    assert (
        count_generations(
            data(generations={"hashes": ["a"], "generations": 9, "use_custom_hashes": True})
        )
        == 1
    )
    assert count_generations({}) == 1


def test_generation_hashes_explicit_hashes_win():
    stored = data(generations={"hashes": ["stored"], "generations": 3, "use_custom_hashes": True})

    assert generation_hashes(stored, count=5, hashes=["h1", "h2"]) == ["h1", "h2"]


def test_generation_hashes_a_count_next_then_stored_hashes():
    made = iter(f"h{i}" for i in range(100))
    stored = data(
        generations={"hashes": ["s1", "s2", ""], "generations": 3, "use_custom_hashes": False}
    )

    assert generation_hashes(stored, count=3, make_hash=lambda: next(made)) == ["h0", "h1", "h2"]
    assert generation_hashes(stored) == ["s1", "s2"]


def test_generation_hashes_fresh_from_count_or_generations():
    made = iter(f"h{i}" for i in range(100))
    plain = data(generations={"hashes": [], "generations": 3, "use_custom_hashes": False})

    assert generation_hashes(plain, count=2, make_hash=lambda: next(made)) == ["h0", "h1"]
    assert generation_hashes(plain, make_hash=lambda: next(made)) == ["h2", "h3", "h4"]
    assert generation_hashes(plain, count=0) == []


def test_generation_hashes_default_maker_makes_platform_hashes():
    hashes = generation_hashes(empty_generation_input(), count=3)

    assert len(set(hashes)) == 3
    assert all(len(h) == 51 and h.startswith("oo") and set(h[2:]) <= set(ALPHABET) for h in hashes)


def test_new_hash_uses_alphabet():
    assert set(new_hash()[2:]) <= set(ALPHABET)
    assert set("0OIl").isdisjoint(ALPHABET)
