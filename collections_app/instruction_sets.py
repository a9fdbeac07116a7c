"""Instruction sets of the existing platform: v1 -> v2 conversion and the linter.

An instruction set is a collection's generation data. v1 (the platform's first format) is one
Stable Diffusion request with optional p5 and upscaler stages:

    {"variables": [{"name", "type", "value_type" | "valueType", "value": {"values", "weights",
                    "display_names"}, "is_feature", "feature_name", "use_display_name"}, ...],
     "hashes": [...], "generations": n, "use_custom_hashes": bool,
     "stable_diffusion_input": {"prompt", "negative_prompt" (with {{variable}} placeholders),
                                "width", "height", "seed", "steps", "cfg_scale", "sampler_name",
                                "override_settings": {"sd_model_checkpoint", "enable_pnginfo"},
                                "img2img_enabled", "img2img_source": "fixed" | "variable" | "p5",
                                "image", "image_variable", "denoising_strength",
                                "seed_enabled", "seed_source", "seed_variable"},
     "p5_input": {"enabled", "code"}, "upscaler_input": {"enabled", "upscaler_1",
                                                         "upscaling_resize", ...}}

v2 is the GenerationInput of `generation_input.py`. `convert_v1_to_v2` follows the existing
platform's conversion (its node names, model, sampler and upscaler mappings); `lint` gives the
existing linter's rules, ids, levels and messages for v1, and checks of its own for v2.

Pure: no Django, no database.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

from collections_app import generation_input as gi
from workflows_app.node_types import VARIABLES_STEP_ID

Level = Literal["warn", "error"]


class InstructionSetError(ValueError):
    """The instruction set cannot be converted or linted (not an object, unsupported version,
    an unknown model). `path` names the offending part."""

    def __init__(self, message: str, *, path: str = "request") -> None:
        super().__init__(message)
        self.path = path


# --- v1 -> v2 ----------------------------------------------------------------------------------

_V1_CHECKPOINT_TO_V2: Final = {
    "v1-5-pruned.ckpt [e1441589a6]": "v1-5-pruned.safetensors",
    "v1-5-pruned.safetensors [1a189f0be6]": "v1-5-pruned.safetensors",
    "v2-1_768-ema-pruned.ckpt [ad2a33c361]": "v2-1_768-ema-pruned.safetensors",
    "v2-1_768-ema-pruned.safetensors [dcd690123c]": "v2-1_768-ema-pruned.safetensors",
    "sd_xl_base_1.0.safetensors [31e35c80fc]": "sd_xl_base_1.0_0.9vae.safetensors",
    "sd_xl_base_1.0_0.9vae.safetensors [e6bb9ea85b]": "sd_xl_base_1.0_0.9vae.safetensors",
    "juggernautXL_v8Rundiffusion.safetensors [aeb7e9e689]":
        "juggernautXL_v8Rundiffusion.safetensors",
    "epiCPhotoGasm.safetensors [62bb78983a]": "epicphotogasm_v1.safetensors",
}
DEFAULT_CHECKPOINT: Final = "sd_xl_base_1.0_0.9vae.safetensors"  # any other v1 checkpoint
NO_SD_CHECKPOINT: Final = "v1-5-pruned.safetensors"  # a v1 set without a Stable Diffusion input

_V1_UPSCALER_TO_V2: Final = {
    "ESRGAN_4x": "4x-ESRGAN.pth",
    "R-ESRGAN 4x+": "RealESRGAN_x4plus.pth",
    "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B.pth",
    "None": "4x-UltraSharp.pth",
    "Lanczos": "4x-UltraSharp.pth",
    "Nearest": "4x-UltraSharp.pth",
    "ScuNET": "4x-UltraSharp.pth",
    "ScuNET PSNR": "4x-UltraSharp.pth",
    "4x-UltraSharp": "4x-UltraSharp.pth",
}

_V1_SAMPLER_TO_V2: Final = {
    "Euler": "euler",
    "Euler a": "euler_ancestral",
    "LMS": "lms",
    "Heun": "heun",
    "DPM2": "dpm_2",
    "DPM2 a": "dpm_2_ancestral",
    "DPM2 Karras": "dpm_2",
    "DPM2 a Karras": "dpm_2_ancestral",
    "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ 2S a Karras": "dpmpp_2s_ancestral",
    "DPM++ SDE": "dpmpp_sde",
    "DPM++ SDE Karras": "dpmpp_sde",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M Karras": "dpmpp_2m",
    "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 2M SDE Karras": "dpmpp_2m_sde",
    "DPM++ 2M SDE Exponential": "dpmpp_2m_sde_gpu",
    "DPM++ 2M SDE Heun": "dpmpp_2m_sde_gpu",
    "DPM++ 2M SDE Heun Karras": "dpmpp_2m_sde_gpu",
    "DPM++ 2M SDE Heun Exponential": "dpmpp_2m_sde_gpu",
    "DPM++ 3M SDE": "dpmpp_3m_sde",
    "DPM++ 3M SDE Karras": "dpmpp_3m_sde",
    "DPM++ 3M SDE Exponential": "dpmpp_3m_sde_gpu",
    "DPM fast": "dpm_fast",
    "DPM adaptive": "dpm_adaptive",
    "LMS Karras": "lms",
    "Restart": "ddpm",
    "DDIM": "ddim",
    "PLMS": "ddpm",
    "UniPC": "uni_pc",
}

TXT2IMG: Final = "txt2img-comfy"
IMG2IMG: Final = "img2img-comfy"
UPSCALER: Final = "upscaler-comfy"
SEED_MAX: Final = 4_294_967_295
_PLACEHOLDER_RE: Final = re.compile(r"({{.*?}})")
_JQ_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def convert_v1_to_v2(v1: Any, *, ids: Iterator[int] | None = None) -> dict[str, Any]:
    """Return the v2 GenerationInput of a v1 instruction set, or InstructionSetError.

    Steps, as the existing conversion makes them: a `txt2img-comfy` step (or `img2img-comfy` when
    img2img is enabled), preceded by a `p5` step whose output is the image when the img2img source
    is an enabled p5 sketch, and followed by an `upscaler-comfy` step reading it when the upscaler
    is enabled. Prompts become rich-text documents whose `{{name}}` placeholders are variable
    nodes; a placeholder naming no variable stays as text (rather than vanishing), so the linter
    shows it. Variables keep every key (`is_feature`, `display_names`, ...), gain `value_type`
    from `valueType`, and an unfilled (null) value becomes "". A seed that is not an unsigned
    32-bit integer (A1111's -1 "random", none) becomes 0, which runs with the generation's own
    seed. Step ids come from `ids` (default 1, 2, ... skipping 953 and every number a prompt
    writes as `#<n>`, so no text reads as a mention); creating a collection from the result gives
    them component ids.
    """
    if not isinstance(v1, Mapping):
        raise InstructionSetError("An instruction set must be a JSON object.")
    version = v1.get("version")
    if version not in (None, "v1"):
        raise InstructionSetError(f"Only v1 instruction sets are converted, got version "
                                  f"{version!r}.", path="version")
    raw_variables = v1.get("variables")
    variables = [v for v in raw_variables if isinstance(v, Mapping)] if isinstance(
        raw_variables, list) else []
    sd = _mapping(v1.get("stable_diffusion_input"))
    p5 = _mapping(v1.get("p5_input"))
    upscaler = _mapping(v1.get("upscaler_input"))
    next_id = ids if ids is not None else _free_ids(sd)

    def prompt(text: Any) -> str:
        return _convert_prompt(text, variables)

    sd_id = next(next_id)
    steps: list[dict[str, Any]] = []
    if not v1.get("stable_diffusion_input"):
        steps.append(_step(sd_id, TXT2IMG, "txt2img", {
            "prompt": prompt(""), "negative_prompt": prompt(""), "width": 512, "height": 512,
            "seed": 0, "steps": 20, "cfg": 0.7, "sampler": "euler", "scheduler": "normal",
            "model": NO_SD_CHECKPOINT}))
    else:
        payload: dict[str, Any] = {
            "prompt": prompt(sd.get("prompt")),
            "negative_prompt": prompt(sd.get("negative_prompt")),
            "width": sd.get("width"), "height": sd.get("height"), "seed": _seed(sd.get("seed")),
            "steps": sd.get("steps"), "cfg": sd.get("cfg_scale"),
            "sampler": _sampler(sd.get("sampler_name")),
            "scheduler": "normal",
            "model": _checkpoint(sd),
        }
        if not _truthy(sd.get("img2img_enabled")):
            steps.append(_step(sd_id, TXT2IMG, "txt2img", payload))
        else:
            payload["image"] = sd.get("image")
            payload["denoising"] = sd.get("denoising_strength")
            source = sd.get("img2img_source")
            if source == "variable":
                name = sd.get("image_variable")
                payload["image"] = ({"tag": "vars", "$ref": VARIABLES_STEP_ID,
                                     "path": _data_path(name)}
                                    if isinstance(name, str) and name else "")
            elif source == "p5" and _truthy(p5.get("enabled")):
                p5_id = next(next_id)
                steps.append(_step(p5_id, "p5", "p5", {"code": p5.get("code")}))
                payload["image"] = {"$ref": p5_id, "path": ".src"}
            steps.append(_step(sd_id, IMG2IMG, "img2img", payload))
    if _truthy(upscaler.get("enabled")):
        steps.append(_step(next(next_id), UPSCALER, "upscaler", {
            "image": {"$ref": sd_id, "path": ".src"},
            "model": _upscaler_model(upscaler.get("upscaler_1")),
            "scaleBy": upscaler.get("upscaling_resize"),
        }))
    hashes = v1.get("hashes")
    return {
        "version": gi.VERSION,
        "steps": steps,
        "generations": {
            "hashes": list(hashes) if isinstance(hashes, list) else [],
            "generations": v1.get("generations") or 1,
            "use_custom_hashes": v1.get("use_custom_hashes") or False,
        },
        "variables": [_convert_variable(v) for v in variables],
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _step(step_id: int, node_name: str, alias: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"id": step_id, "nodeName": node_name, "alias": alias, "nodePayload": payload}


def _free_ids(sd: Mapping[str, Any]) -> Iterator[int]:
    taken = {VARIABLES_STEP_ID}
    for key in ("prompt", "negative_prompt"):
        text = sd.get(key)
        if isinstance(text, str):
            taken.update(int(m) for m in gi.MENTION_RE.findall(text))
    candidate = 1
    while True:
        if candidate not in taken:
            yield candidate
        candidate += 1


def _convert_variable(variable: Mapping[str, Any]) -> dict[str, Any]:
    converted = copy.deepcopy(dict(variable))
    value_type = variable.get("value_type") or variable.get("valueType")
    if value_type:
        converted["value_type"] = value_type
    value = converted.get("value")
    if isinstance(value, dict) and isinstance(value.get("values"), list):
        # an unfilled slot (an image not chosen yet) is null in v1 and "" in v2: the slot and
        # its weight stay, and the linter's empty_var_value still points at it
        value["values"] = ["" if item is None else item for item in value["values"]]
    return converted


def _convert_prompt(text: Any, variables: list[Mapping[str, Any]]) -> str:
    """A v1 prompt as a one-paragraph document: `{{name}}` of a known variable -> a variable node
    (carrying the variable, as the existing conversion does), other text as text."""
    text = text if isinstance(text, str) else ""
    by_name = {v["name"]: v for v in variables if isinstance(v.get("name"), str)}
    children: list[dict[str, Any]] = []
    for part in _PLACEHOLDER_RE.split(text):
        if not part:
            continue
        variable = by_name.get(part[2:-2].strip()) if _PLACEHOLDER_RE.fullmatch(part) else None
        if variable is not None:
            children.append({"type": "variable", "variable": copy.deepcopy(dict(variable)),
                             "children": [{"text": ""}]})
        elif children and "text" in children[-1] and "type" not in children[-1]:
            children[-1]["text"] += part
        else:
            children.append({"text": part})
    if not children:
        children.append({"text": ""})
    return json.dumps([{"type": "paragraph", "children": children}], separators=(",", ":"),
                      ensure_ascii=False)


def _seed(raw: Any) -> int:
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return raw if isinstance(raw, int) and 0 <= raw <= SEED_MAX else 0


def _sampler(name: Any) -> str | None:
    """The ComfyUI sampler of an A1111 sampler name; None (null) for one the mapping lacks."""
    return _V1_SAMPLER_TO_V2.get(name) if isinstance(name, str) else None


def _checkpoint(sd: Mapping[str, Any]) -> str:
    name = _mapping(sd.get("override_settings")).get("sd_model_checkpoint")
    return _V1_CHECKPOINT_TO_V2.get(name, DEFAULT_CHECKPOINT) if isinstance(name, str) else (
        DEFAULT_CHECKPOINT)


def _upscaler_model(name: Any) -> str:
    if isinstance(name, str) and name in _V1_UPSCALER_TO_V2:
        return _V1_UPSCALER_TO_V2[name]
    known = ", ".join(_V1_UPSCALER_TO_V2)
    raise InstructionSetError(f"Upscaler model not found: {name!r} (known: {known}).",
                              path="upscaler_input.upscaler_1")


def _data_path(name: str) -> str:
    """The jq path of a variable in the variables step's output (`.data.name`, or
    `.data["my name"]` for a name jq would not read bare)."""
    return f".data.{name}" if _JQ_NAME_RE.fullmatch(name) else f".data[{json.dumps(name)}]"


# --- the linter ---------------------------------------------------------------------------------


def lint_report(instruction_set: Any, *, level: str = "all",
                max_generations: int = 10) -> dict[str, Any]:
    """The existing linter endpoint's answer: `{"status": "passed" | "failed", "rules": [{"id",
    "messages", "level"}], "error": null}`; `failed` when any rule at level "error" applies
    (whatever `level` shows)."""
    results = lint(instruction_set, max_generations=max_generations)
    status = "failed" if any(r["level"] == "error" for r in results) else "passed"
    shown = [r for r in results if level == "all" or r["level"] == level]
    return {"status": status, "rules": shown, "error": None}


def lint(instruction_set: Any, *, max_generations: int = 10) -> list[dict[str, Any]]:
    """The rules that apply, in rule order, each `{"id", "messages", "level"}`.

    The version is `version`, else "v1" (as the existing linter reads it), except that a set
    without a version that has `steps` and no `stable_diffusion_input` is read as v2. v1 runs the
    existing platform's rules with their ids, levels and messages; v2 runs `V2_RULES`.
    `max_generations` is the v2 per-request generation limit.
    """
    if not isinstance(instruction_set, Mapping):
        raise InstructionSetError("An instruction set must be a JSON object.")
    version = instruction_set.get("version")
    if version is None:
        looks_v2 = "steps" in instruction_set and "stable_diffusion_input" not in instruction_set
        version = "v2" if looks_v2 else "v1"
    if version == "v1":
        rules = V1_RULES
    elif version == "v2":
        rules = V2_RULES
    else:
        raise InstructionSetError(f"Unsupported version: {version}", path="version")
    results = []
    for rule_id, rule_level, apply in rules:
        messages = apply(instruction_set, max_generations)
        if messages:
            results.append({"id": rule_id, "messages": messages, "level": rule_level})
    return results


Rule = tuple[str, Level, Callable[[Mapping[str, Any], int], list[str]]]


# v1: the existing linter, rule by rule. JavaScript truthiness and strict equality are kept where
# they decide whether a rule applies; where the original would throw on a missing part, the part
# counts as empty instead.

_UNDEFINED: Final = object()


def _truthy(value: Any) -> bool:
    """JavaScript's truthiness: null, false, 0, NaN and "" are false; [] and {} are true."""
    if value is None or value is False or value is _UNDEFINED:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def _js_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is _UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, (int, float)) else json.dumps(value)


def _v1_variables(inset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    variables = inset.get("variables")
    return [v for v in variables if isinstance(v, Mapping)] if isinstance(variables, list) else []


def _placeholders(text: Any) -> list[str]:
    """`{{name}}` placeholders of a v1 text, trimmed (the existing getVariablesInText)."""
    if not isinstance(text, str) or not text:
        return []
    return [m.strip() for m in re.findall(r"{{([^{}]+)}}", text)]


_P5_VARIABLE_RE: Final = re.compile(
    r"""variables\.(\w+)|variables\['(\w+)'\]|variables\["(\w+)"\]""", re.ASCII)


def _p5_variables(code: Any) -> list[str]:
    """Variables a p5 sketch reads as `variables.name` or `variables['name']`."""
    if not isinstance(code, str) or not code:
        return []
    return [next(g for g in groups if g) for groups in _P5_VARIABLE_RE.findall(code)]


def _unused_char_str_var(inset: Mapping[str, Any], _limit: int) -> list[str]:
    sd = _mapping(inset.get("stable_diffusion_input"))
    p5 = _mapping(inset.get("p5_input"))
    used = set(_p5_variables(p5.get("code")) if _truthy(p5.get("enabled")) else [])
    used.update(_placeholders(sd.get("prompt")))
    used.update(_placeholders(sd.get("negative_prompt")))
    return [f"Character string variable {{{{{_js_text(v.get('name', _UNDEFINED))}}}}} is not "
            "being used." for v in _v1_variables(inset)
            if not _named_in(v, used) and v.get("value_type") == "strings"]


def _named_in(variable: Mapping[str, Any], names: set[str]) -> bool:
    name = variable.get("name")
    return isinstance(name, str) and name in names


def _unused_images_var(inset: Mapping[str, Any], _limit: int) -> list[str]:
    image_variable = _mapping(inset.get("stable_diffusion_input")).get("image_variable")
    return [f"Images variable {{{{{_js_text(v.get('name', _UNDEFINED))}}}}} is not being used."
            for v in _v1_variables(inset)
            if v.get("name") != image_variable and v.get("value_type") == "images"]


def _no_img2img(source: str, needs: str, message: str) -> Callable[[Mapping[str, Any], int],
                                                                     list[str]]:
    def apply(inset: Mapping[str, Any], _limit: int) -> list[str]:
        sd = _mapping(inset.get("stable_diffusion_input"))
        p5 = _mapping(inset.get("p5_input"))
        applies = (_truthy(sd.get("img2img_enabled")) and not _truthy(p5.get("enabled"))
                   and sd.get("img2img_source") == source and not _truthy(sd.get(needs)))
        return [message] if applies else []

    return apply


def _empty_var_value(inset: Mapping[str, Any], _limit: int) -> list[str]:
    messages = []
    for v in _v1_variables(inset):
        values = _mapping(v.get("value")).get("values")
        values = values if isinstance(values, list) else []
        if v.get("value_type") == "images" and any(not _truthy(x) for x in values):
            messages.append(f"Variable {{{{{_js_text(v.get('name', _UNDEFINED))}}}}} has an "
                            "empty value.")
    return messages


def _strict_equal(a: Any, b: Any) -> bool:
    """JavaScript's `===` for the JSON values a set holds."""
    if a is _UNDEFINED or b is _UNDEFINED or a is None or b is None:
        return a is b
    a_number = isinstance(a, (int, float)) and not isinstance(a, bool)
    b_number = isinstance(b, (int, float)) and not isinstance(b, bool)
    if a_number or b_number:
        return a_number and b_number and a == b
    return type(a) is type(b) and a == b and isinstance(a, (str, bool))


def _greater_than(value: Any, bound: int) -> bool:
    """JavaScript's `value > bound` for a number or a numeric string."""
    if isinstance(value, bool):
        return int(value) > bound
    if isinstance(value, (int, float)):
        return value > bound
    if isinstance(value, str):
        try:
            return float(value.strip() or "0") > bound
        except ValueError:
            return False
    return False


def _generation_limit(inset: Mapping[str, Any], _limit: int) -> list[str]:
    hashes = inset.get("hashes", _UNDEFINED)
    generations = inset.get("generations", _UNDEFINED)
    length = len(hashes) if isinstance(hashes, (list, str)) else _UNDEFINED
    messages = []
    if not _truthy(generations):
        messages.append("Cannot generate 0 images.")
    if not _strict_equal(length, generations):
        messages.append("hashes and generation must match.")
    if _truthy(generations) and _greater_than(generations, 10):
        messages.append("You can't generate more than 10 images.")
    return messages


def _png_info_enabled(inset: Mapping[str, Any], _limit: int) -> list[str]:
    settings = _mapping(_mapping(inset.get("stable_diffusion_input")).get("override_settings"))
    if _truthy(settings.get("enable_pnginfo")):
        return ["PNG info is enabled and will leak your sketchbook settings."]
    return []


def _no_p5_code(inset: Mapping[str, Any], _limit: int) -> list[str]:
    p5 = _mapping(inset.get("p5_input"))
    if _truthy(p5.get("enabled")) and not _truthy(p5.get("code")):
        return ["There's no P5.js code to execute."]
    return []


def _no_seed_value(inset: Mapping[str, Any], _limit: int) -> list[str]:
    sd = _mapping(inset.get("stable_diffusion_input"))
    if (_truthy(sd.get("seed_enabled")) and sd.get("seed_source") == "variable"
            and not _truthy(sd.get("seed_variable"))):
        return ["Seed variable is not selected."]
    return []


V1_RULES: Final[tuple[Rule, ...]] = (
    ("unused_char_str_var", "warn", _unused_char_str_var),
    ("unused_images_var", "warn", _unused_images_var),
    ("no_img2img_var", "error", _no_img2img(
        "variable", "image_variable", "No image have been selected for img2img (var)")),
    ("no_img2img_const", "error", _no_img2img(
        "fixed", "image", "No image have been selected for img2img (const)")),
    ("empty_var_value", "error", _empty_var_value),
    ("generation_limit", "error", _generation_limit),
    ("png_info_enabled", "warn", _png_info_enabled),
    ("no_p5_code", "warn", _no_p5_code),
    ("no_seed_value", "error", _no_seed_value),
)


# v2: the same concerns over steps, plus what only v2 data can get wrong.

def _v2_steps(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = data.get("steps")
    return [s for s in steps if isinstance(s, Mapping)] if isinstance(steps, list) else []


def _step_label(step: Mapping[str, Any]) -> str:
    name = step.get("alias") or step.get("nodeName")
    return f"{_js_text(name)} (step {_js_text(step.get('id', _UNDEFINED))})"


def _strings(value: Any) -> Iterator[str]:
    """Every string in a payload value, nested lists and objects included (without recursion:
    a body may nest as deep as the JSON parser allows)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            pending.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            pending.extend(reversed(item))


def _texts(value: str) -> Iterator[str]:
    """The text of a payload string: its text nodes when it holds a document, else itself."""
    document = gi.parse_document(value)
    if document is None:
        yield value
        return
    for node in gi.iter_nodes(document):
        text = node.get("text")
        if isinstance(text, str):
            yield text


def _variable_nodes(value: str) -> Iterator[str]:
    document = gi.parse_document(value)
    for node in gi.iter_nodes(document or []):
        variable = node.get("variable") if node.get("type") == "variable" else None
        name = variable.get("name") if isinstance(variable, Mapping) else None
        if isinstance(name, str):
            yield name


def _uses(step: Mapping[str, Any], name: str) -> bool:
    """Whether a step reads the variable: a variable node or `$name` in its text, a sketch's
    `variables.name` / `getVariable("name")`, or a `$ref` into the variables step's output."""
    payload = _mapping(step.get("nodePayload"))
    dollar = re.compile(rf"\${re.escape(name)}(?!\w)")
    code = re.compile(
        rf"""variables\.{re.escape(name)}(?!\w)|variables\[\s*['"`]{re.escape(name)}['"`]\s*\]"""
        rf"""|getVariable\(\s*['"`]{re.escape(name)}['"`]\s*\)""")
    for value in payload.values():
        if gi.ref_target(value) == VARIABLES_STEP_ID:
            path = value.get("path")
            if isinstance(path, str) and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", path):
                return True
        for text in _strings(value):
            if name in _variable_nodes(text) or code.search(text):
                return True
            if any(dollar.search(t) for t in _texts(text)):
                return True
    return False


def _v2_variables(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    variables = data.get("variables")
    return [v for v in variables if isinstance(v, Mapping) and isinstance(v.get("name"), str)] \
        if isinstance(variables, list) else []


def _v2_unused_var(data: Mapping[str, Any], _limit: int) -> list[str]:
    steps = _v2_steps(data)
    return [f"Variable ${v['name']} is not being used." for v in _v2_variables(data)
            if not any(_uses(step, v["name"]) for step in steps)]


def _v2_unconverted_placeholder(data: Mapping[str, Any], _limit: int) -> list[str]:
    messages: list[str] = []
    for step in _v2_steps(data):
        for key, value in _mapping(step.get("nodePayload")).items():
            if not isinstance(value, str):
                continue
            if "prompt" not in key.lower() and gi.parse_document(value) is None:
                continue
            found = dict.fromkeys(p for t in _texts(value) for p in _placeholders(t))
            messages.extend(
                f"{_step_label(step)}: `{key}` still has {{{{{name}}}}}, which v2 does not fill "
                f"in; insert the variable as ${name}." for name in found)
    return messages


def _v2_duplicate_hashes(data: Mapping[str, Any], _limit: int) -> list[str]:
    generations = _mapping(data.get("generations"))
    hashes = generations.get("hashes")
    repeated = gi.repeated_hashes(hashes if isinstance(hashes, list) else [])
    return [f"Hash {h} is used {n} times: each generation needs its own hash (a repeated hash "
            "makes the same output again and is charged again)." for h, n in repeated.items()]


def _v2_empty_var_value(data: Mapping[str, Any], _limit: int) -> list[str]:
    messages = []
    for v in _v2_variables(data):
        values = _mapping(v.get("value")).get("values")
        values = values if isinstance(values, list) else []
        if v.get("value_type") == "images" and any(not _truthy(x) for x in values):
            messages.append(f"Variable ${v['name']} has an empty value.")
    return messages


def _v2_generation_limit(data: Mapping[str, Any], limit: int) -> list[str]:
    # as a request counts them: one per stored hash, else `generations` (at least one)
    if gi.count_generations(data) > limit:
        return [f"You can't generate more than {limit} images."]
    return []


def _v2_no_p5_code(data: Mapping[str, Any], _limit: int) -> list[str]:
    return [f"{_step_label(step)}: There's no P5.js code to execute."
            for step in _v2_steps(data) if step.get("nodeName") in ("p5", "p52vid")
            and not _truthy(_mapping(step.get("nodePayload")).get("code"))]


V2_RULES: Final[tuple[Rule, ...]] = (
    ("unused_var", "warn", _v2_unused_var),
    ("unconverted_var_placeholder", "warn", _v2_unconverted_placeholder),
    ("empty_var_value", "error", _v2_empty_var_value),
    ("duplicate_hashes", "error", _v2_duplicate_hashes),
    ("generation_limit", "error", _v2_generation_limit),
    ("no_p5_code", "warn", _v2_no_p5_code),
)

RULE_IDS: Final = tuple(dict.fromkeys(r[0] for r in (*V1_RULES, *V2_RULES)))
