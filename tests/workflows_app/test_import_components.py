"""The component-library folder importer: types from files, broken folders skipped, idempotent."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from workflows_app.models import FormConfig, Workflow
from workflows_app.services import components_import

CREDITS = "function computeCost(context){ return {cost: 2} }"
FORM = {"config": {"componentGroup": "image"},
        "fields": [{"id": "prompt", "name": "Prompt", "type": "input"}]}


def _write(folder, files):
    folder.mkdir(parents=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / name).write_text(text)


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "Components"
    _write(root / "sdxl", {"form.json": FORM, "workflow.json": {"3": {"class_type": "KSampler"}},
                           "inputs.json": {"prompt": "3.text"}, "test.json": {"prompt": "t"},
                           "credits.js": CREDITS,
                           "required_models.json": {"static": {"checkpoints": ["sdxl.safetensors"]}}})
    _write(root / "openai_image", {"form.json": FORM, "api.json": {"url": "https://x.test"},
                                   "body.json": {"model": "gpt-image-1"}})
    _write(root / "upscaler_job", {"form.json": FORM, "job.json": {"service_required": "gpu"}})
    _write(root / "prompt", {"credits.js": CREDITS})
    _write(root / "broken", {"form.json": "{not json", "workflow.json": {}})
    _write(root / "no_type", {"inputs.json": {}, "test.json": {}})
    _write(root / "_draft" / "wip", {"form.json": FORM, "workflow.json": {}})
    _write(root / ".git", {"config.json": {}})
    _write(root / "_form_confs", {"samplers.json": [{"name": "Euler", "value": "euler"}]})
    return root


def test_import_creates_workflows_by_type_and_skips_broken_folders(db, library):
    report = components_import(library)

    assert report["created"] == ["openai_image", "prompt", "sdxl", "upscaler_job"]
    assert report["updated"] == report["unchanged"] == []
    assert report["form_configs"] == ["samplers"]
    assert [s["name"] for s in report["skipped"]] == ["broken", "no_type"]
    assert "form.json is not valid JSON" in report["skipped"][0]["reason"]
    assert "fits no component type" in report["skipped"][1]["reason"]
    types = dict(Workflow.objects.values_list("name", "type"))
    assert types == {"sdxl": "comfy_workflow", "openai_image": "fetch_api",
                     "upscaler_job": "direct_job", "prompt": "basic"}
    sdxl = Workflow.objects.get(name="sdxl")
    assert sdxl.data == {
        "form": FORM, "workflow": {"3": {"class_type": "KSampler"}},
        "inputs": {"prompt": "3.text"}, "test": {"prompt": "t"}, "credits_script": CREDITS,
        "models": {"static": {"checkpoints": ["sdxl.safetensors"]}}}
    assert sdxl.output_mime_type == "image/png"
    assert Workflow.objects.get(name="openai_image").data["body"] == {"model": "gpt-image-1"}
    assert Workflow.objects.get(name="prompt").output_mime_type is None
    assert FormConfig.objects.get(name="samplers").data == [{"name": "Euler", "value": "euler"}]


def test_import_is_idempotent_and_updates_by_name(db, library):
    components_import(library)
    sdxl = Workflow.objects.get(name="sdxl")
    sdxl.data = {**sdxl.data, "output_node_id": "9"}  # set by staff in admin
    sdxl.display = False
    sdxl.save()

    again = components_import(library)
    (library / "sdxl" / "test.json").write_text(json.dumps({"prompt": "changed"}))
    changed = components_import(library)

    assert again["created"] == again["updated"] == []
    assert again["unchanged"] == ["openai_image", "prompt", "sdxl", "upscaler_job"]
    assert changed["updated"] == ["sdxl"]
    assert Workflow.objects.count() == 4
    sdxl.refresh_from_db()
    assert (sdxl.data["test"], sdxl.data["output_node_id"], sdxl.display) == (
        {"prompt": "changed"}, "9", False)
    assert FormConfig.objects.count() == 1


def test_command_prints_the_report(db, library):
    out, err = StringIO(), StringIO()

    call_command("import_components", str(library), stdout=out, stderr=err)

    assert "created: 4 (openai_image, prompt, sdxl, upscaler_job)" in out.getvalue()
    assert "skipped broken: form.json is not valid JSON" in err.getvalue()
    assert "skipped no_type:" in err.getvalue()


def test_command_refuses_a_missing_folder(db, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is not a folder"):
        call_command("import_components", str(tmp_path / "nope"))
    assert Workflow.objects.count() == 0
