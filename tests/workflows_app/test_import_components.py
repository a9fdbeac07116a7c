"""The component-library folder importer: types from files, broken folders skipped, idempotent."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from io import StringIO

import pytest
from django.core.management import call_command

from emprops.errors import PayloadTooLarge, ValidationFailed
from workflows_app.models import FormConfig, Workflow
from workflows_app.services import components_import, components_import_zip
from workflows_app.services.components import ZIP_MAX_BYTES, components_zip_extract

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
    report = components_import(root=library)

    assert report["created"] == ["openai_image", "prompt", "sdxl", "upscaler_job"]
    assert report["updated"] == report["unchanged"] == []
    assert report["form_configs"] == {"created": ["samplers"], "updated": [], "unchanged": []}
    assert report["changes"] == {}
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
    components_import(root=library)
    sdxl = Workflow.objects.get(name="sdxl")
    sdxl.data = {**sdxl.data, "output_node_id": "9"}  # set by staff in admin
    sdxl.display = False
    sdxl.save()

    again = components_import(root=library)
    (library / "sdxl" / "test.json").write_text(json.dumps({"prompt": "changed"}))
    changed = components_import(root=library)

    assert again["created"] == again["updated"] == []
    assert again["unchanged"] == ["openai_image", "prompt", "sdxl", "upscaler_job"]
    assert again["form_configs"]["unchanged"] == ["samplers"]
    assert changed["updated"] == ["sdxl"]
    assert changed["changes"] == {"sdxl": ["data.test"]}
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


def test_command_dry_run_writes_nothing(db, library):
    out = StringIO()

    call_command("import_components", str(library), "--dry-run", stdout=out, stderr=StringIO())

    assert out.getvalue().splitlines()[:2] == [
        "dry run: nothing written", "created: 4 (openai_image, prompt, sdxl, upscaler_job)"]
    assert Workflow.objects.count() == 0


def test_command_refuses_a_missing_folder(db, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is not a folder"):
        call_command("import_components", str(tmp_path / "nope"))
    assert Workflow.objects.count() == 0


# ---- dry run and zipped libraries --------------------------------------------------------------


def _zip(entries, *, folder=""):
    """A zip of `{path: text or JSON}`, optionally under one top folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            text = content if isinstance(content, str) else json.dumps(content)
            zf.writestr(f"{folder}{name}", text)
    buffer.seek(0)
    return buffer


def _zip_of(root, *, folder=""):
    entries = {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
               if p.is_file()}
    return _zip(entries, folder=folder)


def test_a_dry_run_reports_the_import_and_writes_nothing(db, library):
    report = components_import(root=library, dry_run=True)

    assert report["dry_run"] is True
    assert report["created"] == ["openai_image", "prompt", "sdxl", "upscaler_job"]
    assert report["form_configs"]["created"] == ["samplers"]
    assert [s["name"] for s in report["skipped"]] == ["broken", "no_type"]
    assert Workflow.objects.count() == 0
    assert FormConfig.objects.count() == 0


def test_a_dry_run_after_an_import_lists_what_would_change_by_name(db, library):
    components_import(root=library)
    (library / "sdxl" / "credits.js").write_text("function computeCost(){ return 3 }")
    (library / "prompt" / "form.json").write_text(json.dumps(FORM))  # now fits no type
    (library / "_form_confs" / "samplers.json").write_text("[]")
    before = Workflow.objects.get(name="sdxl").data

    report = components_import(root=library, dry_run=True)

    assert report["updated"] == ["sdxl"]
    assert report["changes"] == {"sdxl": ["data.credits_script"]}
    assert report["unchanged"] == ["openai_image", "upscaler_job"]
    assert report["form_configs"]["updated"] == ["samplers"]
    assert {s["name"]: s["reason"].split(" (")[0] for s in report["skipped"]} == {
        "broken": "form.json is not valid JSON", "no_type": "fits no component type",
        "prompt": "fits no component type"}
    assert Workflow.objects.get(name="sdxl").data == before
    assert FormConfig.objects.get(name="samplers").data == [{"name": "Euler", "value": "euler"}]


def test_a_zipped_library_folder_imports_and_a_second_import_changes_nothing(db, library):
    content = _zip_of(library, folder="Components/").getvalue()

    preview = components_import_zip(archive=io.BytesIO(content), dry_run=True)
    assert Workflow.objects.count() == 0
    first = components_import_zip(archive=io.BytesIO(content))
    second = components_import_zip(archive=io.BytesIO(content))

    assert preview["created"] == first["created"] == ["openai_image", "prompt", "sdxl",
                                                      "upscaler_job"]
    assert [s["name"] for s in first["skipped"]] == ["broken", "no_type"]
    assert second["created"] == second["updated"] == []
    assert second["unchanged"] == ["openai_image", "prompt", "sdxl", "upscaler_job"]
    assert second["form_configs"] == {"created": [], "updated": [], "unchanged": ["samplers"]}
    assert Workflow.objects.get(name="sdxl").data["credits_script"] == CREDITS


def test_a_zip_of_the_components_themselves_imports_too(db):
    archive = _zip({"prompt/credits.js": CREDITS, "solo/form.json": FORM,
                    "solo/workflow.json": {"1": {}}})

    report = components_import_zip(archive=archive)

    assert report["created"] == ["prompt", "solo"]


def test_a_zip_holding_a_single_component_folder_is_that_component(db):
    report = components_import_zip(archive=_zip({"sdxl/form.json": FORM,
                                                  "sdxl/workflow.json": {"1": {}}}))

    assert report["created"] == ["sdxl"]


@pytest.mark.parametrize("name", ["../evil/form.json", "lib/../../evil.json", "/etc/evil.json",
                                  "C:/evil.json", "lib\\..\\evil.json"])
def test_zip_slip_is_refused_before_anything_is_written(db, tmp_path, name):
    archive = _zip({"ok/credits.js": CREDITS, name: "{}"})
    dest = tmp_path / "out"
    dest.mkdir()

    with pytest.raises(ValidationFailed) as exc:
        components_zip_extract(archive=archive, dest=dest)

    assert exc.value.details["entry"] == [name]
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil.json").exists()
    with pytest.raises(ValidationFailed):
        components_import_zip(archive=_zip({"ok/credits.js": CREDITS, name: "{}"}))
    assert Workflow.objects.count() == 0


def test_a_symlink_entry_is_refused(db, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("lib/form.json")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    buffer.seek(0)

    with pytest.raises(ValidationFailed, match="symbolic link"):
        components_zip_extract(archive=buffer, dest=tmp_path)


def test_a_zip_bomb_is_refused_by_its_uncompressed_size(db, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lib/credits.js", CREDITS)
        zf.writestr("lib/bomb.json", b"0" * 4_000_000)
    assert buffer.tell() < 10_000
    buffer.seek(0)

    with pytest.raises(PayloadTooLarge, match="unpacks to 4000049 bytes; the limit is 1000000"):
        components_zip_extract(archive=buffer, dest=tmp_path, max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []
    assert ZIP_MAX_BYTES == 64 * 1024 * 1024  # what uploads get


def test_too_many_entries_are_refused(db, tmp_path):
    archive = _zip({f"c{i}/credits.js": CREDITS for i in range(11)})

    with pytest.raises(PayloadTooLarge, match="11 entries; the limit is 10"):
        components_zip_extract(archive=archive, dest=tmp_path, max_files=10)
    assert list(tmp_path.iterdir()) == []


def test_what_is_not_a_zip_is_a_clear_400(db):
    with pytest.raises(ValidationFailed, match="not a zip archive"):
        components_import_zip(archive=io.BytesIO(b"PK\x03\x04 not really"))
