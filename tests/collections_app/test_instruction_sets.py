"""v1 -> v2 conversion and the linter, in-process (the module is pure).

The linter cases at the top are the existing platform's `linter.test.ts`, ported. That file
expects ids and messages its own linter no longer produces (`unused_var` "{{animal_name}} not
used", "P5js code not found", ...) and feeds inputs on which `linter.ts` throws (no `p5_input`);
the assertions here are what `linter.ts` itself answers, rule id, level and message text.
"""

from __future__ import annotations

import copy
import json

import pytest

from collections_app import generation_input as gi
from collections_app.instruction_sets import (
    InstructionSetError,
    convert_v1_to_v2,
    lint,
    lint_report,
)

IMAGE = ("https://cdn.emprops.ai/flat-files/88d4bff9-4097-49c6-a6b2-0d4d4c7bd67d/"
         "3cecd8ee-a3f7-49e3-9560-846fe2b46165.png")
H1 = "1TRVQ3UBCfAqP9nvqT6toKYGXCYMvC1cc4ZfrtqUXTHE17FexiA"
H2 = "gGWIQbvBfCsMzz6vQUZvudtbGbWVZ3qO6JM5HFc80EHdugaIcZE"
BOX_PROMPT = ("Generate an image of {{animal_name}} a large, cardboard delivery box on a front "
              "porch, which has a bright, rustic wooden finish.")


def v1_var(name, values, value_type="strings"):
    return {"name": name, "type": "pick", "value_type": value_type,
            "value": {"values": values, "weights": [1], "display_names": [""]},
            "is_feature": False, "feature_name": "", "use_display_name": False}


def full_set(**overrides):
    """The linter.test.ts fixture used by its last four cases."""
    base = {
        "hashes": [H1, H2], "generations": 2, "use_custom_hashes": False,
        "variables": [v1_var("animal_name", ["dog,cat,bird,fish,whale,lion"]),
                      v1_var("box", [IMAGE, None], "images")],
        "stable_diffusion_input": {
            "override_settings": {"enable_pnginfo": False,
                                  "sd_model_checkpoint": "v1-5-pruned.ckpt [e1441589a6]"},
            "prompt": BOX_PROMPT, "negative_prompt": "", "sampler_name": "Euler a", "steps": 20,
            "cfg_scale": 7, "width": 512, "height": 512, "img2img_enabled": True,
            "img2img_source": "fixed", "image": "", "image_variable": "",
            "denoising_strength": 0.75},
        "p5_input": {"enabled": False, "code": ""},
        "upscaler_input": {"enabled": False, "upscaling_resize": 2, "upscaler_1": "None",
                           "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
                           "gfpgan_visibility": 0, "codeformer_visibility": 0,
                           "codeformer_weight": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def rule(results, rule_id):
    found = [r for r in results if r["id"] == rule_id]
    return found[0] if found else None


# --- linter.test.ts, ported ---------------------------------------------------------------------

def test_some_variables_arent_being_used():
    results = lint({
        "variables": [v1_var("animal_name", ["dog,cat,bird,fish,whale,lion"]),
                      v1_var("animals", ["dog,cat,bird,fish,whale,lion"])],
        "stable_diffusion_input": {"prompt": "Generate an image of a large {{animals}}, "
                                             "cardboard delivery box on a front porch."},
    })

    assert rule(results, "unused_char_str_var") == {
        "id": "unused_char_str_var", "level": "warn",
        "messages": ["Character string variable {{animal_name}} is not being used."]}


def test_img2img_enabled_but_no_image_provided():
    results = lint({"stable_diffusion_input": {
        "img2img_enabled": True, "img2img_source": "fixed", "image": "", "image_variable": "",
        "denoising_strength": 0.75}})

    assert rule(results, "no_img2img_const") == {
        "id": "no_img2img_const", "level": "error",
        "messages": ["No image have been selected for img2img (const)"]}
    assert rule(results, "no_img2img_var") is None


def test_image_variables_have_empty_values():
    results = lint(full_set())

    assert rule(results, "empty_var_value") == {
        "id": "empty_var_value", "level": "error",
        "messages": ["Variable {{box}} has an empty value."]}
    assert rule(results, "unused_images_var")["messages"] == [
        "Images variable {{box}} is not being used."]
    assert rule(results, "generation_limit") is None  # 2 hashes, 2 generations


def test_seven_generations_with_seven_hashes_are_within_the_limit():
    # linter.test.ts expects "Generations limit exceeded" here; linter.ts allows up to 10
    results = lint(full_set(hashes=[H1] + [H2] * 6, generations=7))

    assert rule(results, "generation_limit") is None


def test_more_than_ten_generations_and_mismatched_hashes_are_errors():
    results = lint(full_set(hashes=[H1, H2], generations=11))

    assert rule(results, "generation_limit") == {
        "id": "generation_limit", "level": "error",
        "messages": ["hashes and generation must match.",
                     "You can't generate more than 10 images."]}


def test_zero_generations():
    results = lint(full_set(hashes=[], generations=0))

    assert rule(results, "generation_limit")["messages"] == ["Cannot generate 0 images."]


def test_image_includes_information():
    results = lint(full_set(stable_diffusion_input={"override_settings": {
        "enable_pnginfo": True, "sd_model_checkpoint": "v1-5-pruned.ckpt [e1441589a6]"}}))

    assert rule(results, "png_info_enabled") == {
        "id": "png_info_enabled", "level": "warn",
        "messages": ["PNG info is enabled and will leak your sketchbook settings."]}


def test_p5_code_not_provided():
    results = lint(full_set(p5_input={"enabled": True, "code": ""}))

    assert rule(results, "no_p5_code") == {
        "id": "no_p5_code", "level": "warn", "messages": ["There's no P5.js code to execute."]}
    # an enabled sketch is the img2img source, so the missing fixed image is not an error
    assert rule(results, "no_img2img_const") is None


# --- the other v1 rules -------------------------------------------------------------------------

def test_img2img_from_a_variable_without_one_selected():
    results = lint(full_set(stable_diffusion_input={"img2img_source": "variable"}))

    assert rule(results, "no_img2img_var")["messages"] == [
        "No image have been selected for img2img (var)"]


def test_seed_from_a_variable_without_one_selected():
    results = lint(full_set(stable_diffusion_input={"seed_enabled": True,
                                                    "seed_source": "variable",
                                                    "seed_variable": ""}))

    assert rule(results, "no_seed_value") == {
        "id": "no_seed_value", "level": "error", "messages": ["Seed variable is not selected."]}


def test_variables_read_by_an_enabled_sketch_count_as_used():
    code = "let a = variables.animal_name; let b = variables['mood']; let c = variables[\"x\"];"
    results = lint(full_set(variables=[v1_var("animal_name", ["a"]), v1_var("mood", ["b"]),
                                       v1_var("x", ["c"]), v1_var("idle", ["d"])],
                            p5_input={"enabled": True, "code": code},
                            stable_diffusion_input={"prompt": ""}))

    assert rule(results, "unused_char_str_var")["messages"] == [
        "Character string variable {{idle}} is not being used."]


def test_rules_come_in_the_existing_order_and_fail_on_any_error():
    report = lint_report(full_set(stable_diffusion_input={"override_settings": {
        "enable_pnginfo": True}}))

    assert report["status"] == "failed"
    assert report["error"] is None
    assert [r["id"] for r in report["rules"]] == [
        "unused_images_var", "no_img2img_const", "empty_var_value", "png_info_enabled"]
    assert [r["id"] for r in lint_report(full_set(), level="warn")["rules"]] == [
        "unused_images_var"]


def test_a_clean_set_passes():
    clean = full_set(variables=[v1_var("animal_name", ["dog"])],
                     stable_diffusion_input={"img2img_enabled": False})

    assert lint_report(clean) == {"status": "passed", "rules": [], "error": None}


@pytest.mark.parametrize("bad", [[], "x", None])
def test_a_body_that_is_not_an_object_is_refused(bad):
    with pytest.raises(InstructionSetError, match="must be a JSON object"):
        lint(bad)


def test_an_unknown_version_is_refused():
    with pytest.raises(InstructionSetError, match="Unsupported version: v3"):
        lint({"version": "v3"})


# --- v2 rules -----------------------------------------------------------------------------------

def doc(*children):
    return json.dumps([{"type": "paragraph", "children": list(children)}])


def v2(steps, variables=(), hashes=(), generations=1):
    return {"version": "v2", "steps": list(steps), "variables": list(variables),
            "generations": {"hashes": list(hashes), "generations": generations,
                            "use_custom_hashes": bool(hashes)}}


def v2_var(name, values=("a",), value_type="strings"):
    return {"name": name, "type": "pick", "value_type": value_type,
            "value": {"values": list(values)}}


def test_v2_duplicate_hashes_are_an_error():
    results = lint(v2([{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "x"}}],
                      hashes=["a", "b", "a", "a"]))

    assert rule(results, "duplicate_hashes") == {
        "id": "duplicate_hashes", "level": "error",
        "messages": ["Hash a is used 3 times: each generation needs its own hash (a repeated "
                     "hash makes the same output again and is charged again)."]}


def test_v2_placeholders_left_from_v1_are_flagged():
    steps = [{"id": 1, "nodeName": "prompt", "alias": "Subject",
              "nodePayload": {"prompt": doc({"text": "a {{animal}} and {{ mood }}"})}},
             {"id": 2, "nodeName": "txt2img", "nodePayload": {"negative_prompt": "no {{x}}",
                                                              "code": "{{not a prompt}}"}}]

    results = lint(v2(steps))

    assert rule(results, "unconverted_var_placeholder") == {
        "id": "unconverted_var_placeholder", "level": "warn", "messages": [
            "Subject (step 1): `prompt` still has {{animal}}, which v2 does not fill in; insert "
            "the variable as $animal.",
            "Subject (step 1): `prompt` still has {{mood}}, which v2 does not fill in; insert "
            "the variable as $mood.",
            "txt2img (step 2): `negative_prompt` still has {{x}}, which v2 does not fill in; "
            "insert the variable as $x."]}


def test_v2_variables_never_used_are_flagged_and_every_way_of_using_one_counts():
    steps = [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": doc(
            {"text": "a "}, {"type": "variable", "variable": {"name": "node"}})}},
        {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "a $dollar, not $dollars2"}},
        {"id": 3, "nodeName": "p5", "nodePayload": {
            "code": "fill(getVariable('getter')); text(variables.dotted); variables[\"bracket\"]"}},
        {"id": 4, "nodeName": "img2img", "nodePayload": {
            "image": {"$ref": 953, "path": ".data.referenced"}}},
    ]
    names = ["node", "dollar", "getter", "dotted", "bracket", "referenced", "idle", "dollars"]

    results = lint(v2(steps, [v2_var(n) for n in names]))

    assert rule(results, "unused_var") == {
        "id": "unused_var", "level": "warn",
        "messages": ["Variable $idle is not being used.", "Variable $dollars is not being used."]}


def test_v2_generation_limit_empty_images_and_missing_sketch():
    steps = [{"id": 1, "nodeName": "p5", "alias": "Sketch", "nodePayload": {"code": ""}}]

    results = lint(v2(steps, [v2_var("pic", ["https://x/a.png", ""], "images")],
                      generations=11), max_generations=10)

    assert [(r["id"], r["level"], r["messages"]) for r in results] == [
        ("unused_var", "warn", ["Variable $pic is not being used."]),
        ("empty_var_value", "error", ["Variable $pic has an empty value."]),
        ("generation_limit", "error", ["You can't generate more than 10 images."]),
        ("no_p5_code", "warn", ["Sketch (step 1): There's no P5.js code to execute."]),
    ]


def test_a_set_without_version_but_with_steps_is_linted_as_v2():
    results = lint({"steps": [], "generations": {"hashes": ["a", "a"]}})

    assert [r["id"] for r in results] == ["duplicate_hashes"]


# --- conversion ---------------------------------------------------------------------------------

def any_node(name):
    # as on a platform where the component library (txt2img-comfy, ...) is installed
    return None


def test_txt2img_conversion_follows_the_existing_mapping_and_validates():
    source = full_set(stable_diffusion_input={
        "img2img_enabled": False, "seed": 1234, "prompt": "a {{animal_name}} on a {{missing}}",
        "negative_prompt": "blurry", "sampler_name": "DPM++ 2M Karras",
        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors [31e35c80fc]"}})
    source["variables"][0]["valueType"] = source["variables"][0].pop("value_type")
    before = copy.deepcopy(source)

    converted = convert_v1_to_v2(source)

    assert source == before
    assert [s["nodeName"] for s in converted["steps"]] == ["txt2img-comfy"]
    step = converted["steps"][0]
    assert (step["id"], step["alias"]) == (1, "txt2img")
    payload = step["nodePayload"]
    assert {k: v for k, v in payload.items() if "prompt" not in k} == {
        "width": 512, "height": 512, "seed": 1234, "steps": 20, "cfg": 7, "sampler": "dpmpp_2m",
        "scheduler": "normal", "model": "sd_xl_base_1.0_0.9vae.safetensors"}
    prompt = json.loads(payload["prompt"])
    assert prompt == [{"type": "paragraph", "children": [
        {"text": "a "},
        {"type": "variable", "variable": before["variables"][0], "children": [{"text": ""}]},
        {"text": " on a {{missing}}"}]}]
    assert json.loads(payload["negative_prompt"]) == [
        {"type": "paragraph", "children": [{"text": "blurry"}]}]
    assert converted["generations"] == {"hashes": [H1, H2], "generations": 2,
                                        "use_custom_hashes": False}
    animal, box = converted["variables"]
    assert animal["value_type"] == "strings" and animal["is_feature"] is False
    assert box["value"]["values"] == [IMAGE, ""]  # an unfilled v1 slot (null) stays, as ""
    validated = gi.validate(converted, node_form=any_node)
    assert validated["steps"] == converted["steps"]
    # the placeholder naming no variable is kept, and the v2 linter points at it
    assert rule(lint(converted), "unconverted_var_placeholder")["messages"] == [
        "txt2img (step 1): `prompt` still has {{missing}}, which v2 does not fill in; insert "
        "the variable as $missing."]


def test_img2img_from_an_enabled_sketch_puts_the_sketch_first_and_upscales_last():
    source = full_set(stable_diffusion_input={"img2img_source": "p5"},
                      p5_input={"enabled": True, "code": "function setup(){}"},
                      upscaler_input={"enabled": True, "upscaler_1": "R-ESRGAN 4x+",
                                      "upscaling_resize": 2})

    converted = convert_v1_to_v2(source)

    assert [(s["id"], s["nodeName"], s["alias"]) for s in converted["steps"]] == [
        (2, "p5", "p5"), (1, "img2img-comfy", "img2img"), (3, "upscaler-comfy", "upscaler")]
    p5, img2img, upscaler = converted["steps"]
    assert p5["nodePayload"] == {"code": "function setup(){}"}
    assert img2img["nodePayload"]["image"] == {"$ref": 2, "path": ".src"}
    assert img2img["nodePayload"]["denoising"] == 0.75
    assert upscaler["nodePayload"] == {"image": {"$ref": 1, "path": ".src"},
                                       "model": "RealESRGAN_x4plus.pth", "scaleBy": 2}
    assert gi.validate(converted, node_form=any_node)["steps"] == converted["steps"]


@pytest.mark.parametrize(("name", "path"), [("box", ".data.box"),
                                            ("my box", '.data["my box"]')])
def test_img2img_from_an_image_variable_reads_the_variables_step(name, path):
    source = full_set(stable_diffusion_input={"img2img_source": "variable",
                                              "image_variable": name})
    source["variables"][1]["name"] = name

    converted = convert_v1_to_v2(source)

    assert converted["steps"][0]["nodePayload"]["image"] == {"tag": "vars", "$ref": 953,
                                                             "path": path}
    gi.validate(converted, node_form=any_node)


def test_a_set_without_stable_diffusion_gets_the_default_txt2img():
    converted = convert_v1_to_v2({"variables": []})

    assert converted["steps"] == [{"id": 1, "nodeName": "txt2img-comfy", "alias": "txt2img",
                                   "nodePayload": {
        "prompt": '[{"type":"paragraph","children":[{"text":""}]}]',
        "negative_prompt": '[{"type":"paragraph","children":[{"text":""}]}]',
        "width": 512, "height": 512, "seed": 0, "steps": 20, "cfg": 0.7, "sampler": "euler",
        "scheduler": "normal", "model": "v1-5-pruned.safetensors"}}]
    assert converted["generations"] == {"hashes": [], "generations": 1,
                                        "use_custom_hashes": False}


@pytest.mark.parametrize(("seed", "expected"), [(-1, 0), (None, 0), ("42", 42),
                                                (4294967296, 0), (4294967295, 4294967295)])
def test_a_v1_seed_outside_32_bits_runs_with_the_generation_seed(seed, expected):
    converted = convert_v1_to_v2(full_set(stable_diffusion_input={"seed": seed}))

    assert converted["steps"][0]["nodePayload"]["seed"] == expected


def test_step_ids_skip_numbers_a_prompt_mentions():
    converted = convert_v1_to_v2(full_set(stable_diffusion_input={
        "prompt": "poster #1 of #2", "img2img_enabled": False},
        upscaler_input={"enabled": True, "upscaler_1": "None"}))

    assert [s["id"] for s in converted["steps"]] == [3, 4]
    gi.validate(converted, node_form=any_node)  # no mention reads as a dependency (no cycle)


def test_unknown_upscaler_and_v2_input_are_refused():
    with pytest.raises(InstructionSetError, match="Upscaler model not found: 'LDSR'"):
        convert_v1_to_v2(full_set(upscaler_input={"enabled": True, "upscaler_1": "LDSR"}))
    with pytest.raises(InstructionSetError, match="Only v1 instruction sets"):
        convert_v1_to_v2({"version": "v2", "steps": []})


def test_odd_json_where_names_belong_is_linted_and_converted_without_crashing():
    odd = {"variables": [{"name": ["a"], "value_type": "strings"}, {"name": None},
                         "not a variable"],
           "stable_diffusion_input": {"prompt": "{{a}}", "sampler_name": ["Euler"],
                                      "override_settings": {"sd_model_checkpoint": {}}},
           "upscaler_input": {"enabled": False, "upscaler_1": ["None"]}}

    results = lint(odd)
    converted = convert_v1_to_v2(odd)

    assert rule(results, "unused_char_str_var")["messages"] == [
        'Character string variable {{["a"]}} is not being used.']
    assert converted["steps"][0]["nodePayload"]["sampler"] is None
    assert converted["steps"][0]["nodePayload"]["model"] == "sd_xl_base_1.0_0.9vae.safetensors"
