"""Form values -> ComfyUI API graph (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from generation_app.nodes.base import NodeError
from generation_app.nodes.comfy.graph import build_prompt_graph

pytestmark = pytest.mark.timeout(60)

WORKFLOW: dict[str, Any] = {
    "workflow": {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 1, "steps": 20, "cfg": 7.0, "denoise": 1.0, "model": ["4", 0]},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "9": {"class_type": "OpenAIImage", "inputs": {"api_key": "", "tiled": False}},
    },
    "inputs": {
        "3": {
            "seed": {"value": "seed"},
            "steps": {"value": "steps", "default": 30},
            "cfg": {"value": "cfg", "is_required": True},
        },
        "6": {"text": {"value": "prompt", "is_required": True}},
        "7": {"text": {"value": "negative"}},
        "9": {
            "api_key": {"value": "OPENAI_API_KEY", "type": "api_key"},
            "tiled": {"value": "tiled"},
        },
    },
    "form": {
        "fields": [
            {"id": "prompt", "name": "Prompt", "type": "prompt_editor"},
            {"id": "negative", "name": "Negative", "type": "input"},
            {"id": "steps", "name": "Steps", "type": "slider"},
            {"id": "cfg", "name": "CFG", "type": "slider"},
            {"id": "seed", "name": "Seed", "type": "input"},
            {"id": "tiled", "name": "Tiled", "type": "checkbox"},
        ]
    },
}


def build(values: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "seed": 2160853444,
        "render_prompt": lambda text: text.replace("$animal", "fox"),
        "user_secret": "sk-user",
        "environ": {},
    }
    options.update(kwargs)
    return build_prompt_graph(data=WORKFLOW, values=values, **options)


def test_values_are_written_rendered_and_coerced() -> None:
    before = copy.deepcopy(WORKFLOW)

    graph = build(
        {"prompt": "a $animal", "steps": "10", "cfg": "4.5", "seed": "42", "negative": "x"}
    )

    assert graph["3"]["inputs"] == {
        "seed": 42,
        "steps": 10,
        "cfg": 4.5,
        "denoise": 1.0,
        "model": ["4", 0],
    }
    assert graph["6"]["inputs"]["text"] == "a fox"
    assert graph["7"]["inputs"]["text"] == "x"
    assert WORKFLOW == before  # the stored workflow is never modified


def test_missing_required_fields_are_all_listed() -> None:
    with pytest.raises(NodeError) as caught:
        build({"steps": "10"}, user_secret=None)

    assert caught.value.message == "Missing required fields: CFG, Prompt, OPENAI_API_KEY"
    assert caught.value.retryable is False
    assert caught.value.failure_type == "VALIDATION_ERROR"


def test_a_falsy_value_takes_the_default() -> None:
    graph = build({"prompt": "p", "cfg": 3, "steps": ""})
    zero = build({"prompt": "p", "cfg": 3, "steps": 0})

    assert graph["3"]["inputs"]["steps"] == 30
    assert zero["3"]["inputs"]["steps"] == 30


def test_an_unset_optional_value_keeps_the_graphs_own() -> None:
    graph = build({"prompt": "p", "cfg": 3})

    assert graph["7"]["inputs"]["text"] == "blurry"
    assert graph["9"]["inputs"]["tiled"] is False


def test_checkbox_strings_become_booleans() -> None:
    graph = build({"prompt": "p", "cfg": 3, "tiled": "true"})

    assert graph["9"]["inputs"]["tiled"] is True


def test_seed_falls_back_to_the_generation_seed() -> None:
    missing = build({"prompt": "p", "cfg": 3})
    empty = build({"prompt": "p", "cfg": 3, "seed": ""})
    given = build({"prompt": "p", "cfg": 3, "seed": 7})

    assert missing["3"]["inputs"]["seed"] == 2160853444
    assert empty["3"]["inputs"]["seed"] == 2160853444
    assert given["3"]["inputs"]["seed"] == 7


def test_api_key_comes_from_the_users_secret_then_the_environment() -> None:
    from_secret = build({"prompt": "p", "cfg": 3}, environ={"OPENAI_API_KEY": "sk-env"})
    from_env = build(
        {"prompt": "p", "cfg": 3}, user_secret=None, environ={"OPENAI_API_KEY": "sk-env"}
    )

    assert from_secret["9"]["inputs"]["api_key"] == "sk-user"
    assert from_env["9"]["inputs"]["api_key"] == "sk-env"


def test_a_non_number_for_a_number_input_is_a_validation_error() -> None:
    with pytest.raises(NodeError, match="Field Steps: expected a number, got 'ten'"):
        build({"prompt": "p", "cfg": 3, "steps": "ten"})


def test_an_input_mapping_to_a_missing_node_is_an_error() -> None:
    data = {**WORKFLOW, "inputs": {"99": {"text": {"value": "prompt"}}}}

    with pytest.raises(NodeError, match="ComfyUI node 99"):
        build_prompt_graph(data=data, values={}, seed=1, render_prompt=str)


def test_strip_png_text_drops_text_chunks_and_keeps_pixels():
    import io

    from PIL import Image, PngImagePlugin

    from generation_app.nodes.comfy.node import strip_png_text

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", '{"9": {"inputs": {"api_key": "sk-secret"}}}')
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, "PNG", pnginfo=info)
    original = buf.getvalue()

    stripped = strip_png_text(original)

    assert b"sk-secret" in original
    assert b"sk-secret" not in stripped
    assert Image.open(io.BytesIO(stripped)).convert("RGB").getpixel((0, 0)) == (1, 2, 3)


def test_strip_png_text_leaves_other_bytes_alone():
    from generation_app.nodes.comfy.node import strip_png_text

    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00tEXt"

    assert strip_png_text(jpeg) == jpeg


COLOR_DATA: dict[str, Any] = {
    "workflow": {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "CustomHexNode", "inputs": {"hex": "#000000"}},
    },
    "inputs": {"1": {"color": {"value": "color"}}, "2": {"hex": {"value": "tint"}}},
    "form": {"fields": [{"id": "color", "name": "Color", "type": "color_picker"},
                        {"id": "tint", "name": "Tint", "type": "color_picker"}]},
}


@pytest.mark.parametrize(("value", "number"), [
    ("#ff8800", 16746496), ("#FF8800", 0xFF8800), ("#f80", 0xFF8800), (" #000001 ", 1),
    ("3368601", 3368601), (3368601, 3368601),
])
def test_a_color_picker_value_becomes_the_integer_of_a_number_input(value, number) -> None:
    graph = build_prompt_graph(data=COLOR_DATA, values={"color": value, "tint": "#ff8800"},
                               seed=1, render_prompt=str)

    assert graph["1"]["inputs"]["color"] == number
    # where the graph holds a string, the color is written as it came
    assert graph["2"]["inputs"]["hex"] == "#ff8800"


@pytest.mark.parametrize("value", ["orange", "#ff880", "#ff88001", "ff8800", "#gg0000", "-1"])
def test_a_color_that_cannot_be_a_number_is_refused_naming_the_field(value) -> None:
    from generation_app.nodes.comfy.graph import form_value_errors

    with pytest.raises(NodeError) as caught:
        build_prompt_graph(data=COLOR_DATA, values={"color": value}, seed=1, render_prompt=str)

    assert caught.value.message == f"Field Color: expected a color like #ff8800, got {value!r}"
    assert form_value_errors(data=COLOR_DATA, values={"color": value, "tint": "red"}) == {
        "color": [f"Expected a color like #ff8800 (this field sets a number), got {value!r}."]}


def test_form_value_errors_judges_defaults_and_skips_refs_and_unset_fields() -> None:
    from generation_app.nodes.comfy.graph import form_value_errors

    data = {**COLOR_DATA, "inputs": {"1": {"color": {"value": "color", "default": "blue"}}}}

    assert form_value_errors(data=COLOR_DATA, values={}) == {}
    assert form_value_errors(data=COLOR_DATA, values={"color": {"$ref": {"id": 1}}}) == {}
    assert form_value_errors(data=COLOR_DATA, values={"color": "#123456"}) == {}
    assert form_value_errors(data=data, values={"color": ""}) == {
        "color": ["Expected a color like #ff8800 (this field sets a number), got 'blue'."]}
