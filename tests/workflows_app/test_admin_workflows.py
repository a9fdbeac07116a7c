"""Staff tooling in admin: the workflow's form previewed, a zipped component library uploaded
(dry-run diff, then apply), ComfyUI servers checked."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from django.contrib.messages import get_messages

from tests.peers.comfyui_server import ComfyTestServer
from workflows_app.models import FormConfig, Server, Workflow

CREDITS = "function computeCost(context){ return {cost: 2} }"
FORM = {"config": {"componentGroup": "image"}, "fields": [
    {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "default": "a red fox",
     "is_required": True},
    {"id": "steps", "name": "Steps", "type": "slider", "default": 20,
     "constraints": {"min": 1, "max": 60, "step": 1}},
    {"id": "sampler", "name": "Sampler", "type": "select", "conf_file": "samplers.json",
     "default": "dpmpp"},
    {"id": "ratio", "name": "Ratio", "type": "aspect_ratio",
     "options": [{"option": "1:1"}, {"option": "16:9"}], "default": "16:9"},
    {"id": "negative", "name": "Negative", "type": "optional_input", "placeholder": "none"},
    {"id": "seed", "name": "Seed", "type": "input", "input_type": "number", "default": 7},
    {"id": "image", "name": "Image", "type": "image_loader"},
    {"id": "hires", "name": "Hires fix", "type": "checkbox", "default": True},
    {"id": "tint", "name": "Tint", "type": "color_picker", "default": "#ff8800"},
    {"id": "odd", "name": "Odd", "type": "knob"},
]}


@pytest.fixture
def sdxl(db):
    FormConfig.objects.create(name="samplers", data=[{"name": "Euler", "value": "euler"},
                                                     {"name": "DPM++", "value": "dpmpp"}])
    return Workflow.objects.create(name="sdxl", type="comfy_workflow",
                                   output_mime_type="image/png",
                                   data={"form": FORM, "workflow": {"3": {"inputs": {}}}})


def _preview(content):
    return content.split('id="workflow-form-preview"', 1)[1].split("</fieldset>", 1)[0]


def test_the_change_page_previews_each_field_type_as_its_control(client, staff, sdxl):
    client.force_login(staff)

    response = client.get(f"/admin/workflows_app/workflow/{sdxl.id}/change/")

    assert response.status_code == 200
    preview = _preview(response.content.decode())
    assert '<textarea disabled rows="3" placeholder="">a red fox</textarea>' in preview
    assert '<input type="range" disabled min="1" max="60" step="1" value="20">' in preview
    assert ('<select disabled>\n        <option value="euler">Euler</option>'
            '<option value="dpmpp" selected>DPM++</option>') in preview
    assert '<option value="16:9" selected>16:9</option>' in preview
    assert '<input type="text" disabled value="" placeholder="none">' in preview
    assert '<input type="number" disabled min="" max="" step="any" value="7"' in preview
    assert '<input type="file" accept="image/*" disabled>' in preview
    assert '<input type="checkbox" disabled checked>' in preview
    assert '<input type="color" disabled value="#ff8800">' in preview
    assert "unknown field type &ldquo;knob&rdquo;" in preview
    assert re.findall(r'data-field-id="([^"]+)"', preview) == [f["id"] for f in FORM["fields"]]
    assert " name=" not in preview  # nothing of the preview is submitted with the change form


def test_a_conf_file_that_names_no_form_config_is_shown_as_such(client, staff, sdxl):
    FormConfig.objects.all().delete()
    client.force_login(staff)

    preview = _preview(client.get(f"/admin/workflows_app/workflow/{sdxl.id}/change/")
                       .content.decode())

    assert "conf_file &ldquo;samplers.json&rdquo; names no form config" in preview


def test_non_staff_get_the_login_page_for_workflow_admin_pages(client, alice, sdxl):
    client.force_login(alice)

    pages = [f"/admin/workflows_app/workflow/{sdxl.id}/change/",
             "/admin/workflows_app/workflow/import/", "/admin/workflows_app/server/"]
    responses = [client.get(page) for page in pages]
    upload = client.post("/admin/workflows_app/workflow/import/",
                         {"file": _library_zip()})

    for response in [*responses, upload]:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert list(Workflow.objects.values_list("name", flat=True)) == ["sdxl"]


# ---- the component-library upload --------------------------------------------------------------


def _library_zip(**extra):
    buffer = io.BytesIO()
    files = {"Components/prompt/credits.js": CREDITS,
             "Components/flux/form.json": json.dumps({"fields": []}),
             "Components/flux/workflow.json": json.dumps({"1": {}}),
             "Components/broken/form.json": "{not json",
             "Components/broken/workflow.json": "{}",
             "Components/_form_confs/samplers.json": json.dumps([{"value": "euler"}]), **extra}
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    buffer.seek(0)
    buffer.name = "components.zip"
    return buffer


def _rows(content, kind):
    report = content.split('id="components-report"', 1)[1].split("</table>", 1)[0]
    return re.findall(rf'<tr class="component-{kind}"><td>([^<]+)</td>', report)


def test_upload_shows_a_dry_run_diff_then_applies_idempotently(client, staff, db):
    client.force_login(staff)
    assert client.get("/admin/workflows_app/workflow/import/").status_code == 200

    diff = client.post("/admin/workflows_app/workflow/import/", {"file": _library_zip()})

    assert diff.status_code == 200
    content = diff.content.decode()
    assert 'data-dry-run="true"' in content
    assert (_rows(content, "created"), _rows(content, "error")) == (["flux", "prompt"],
                                                                     ["broken"])
    assert "form.json is not valid JSON" in content
    assert Workflow.objects.count() == 0  # nothing written by the preview
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', content).group(1)

    applied = client.post("/admin/workflows_app/workflow/import/", {"digest": digest,
                                                                    "apply": "1"})
    again = client.post("/admin/workflows_app/workflow/import/", {"digest": digest,
                                                                  "apply": "1"})

    assert 'data-dry-run="false"' in applied.content.decode()
    assert _rows(applied.content.decode(), "created") == ["flux", "prompt"]
    assert sorted(Workflow.objects.values_list("name", "type")) == [
        ("flux", "comfy_workflow"), ("prompt", "basic")]
    assert FormConfig.objects.get(name="samplers").data == [{"value": "euler"}]
    assert _rows(again.content.decode(), "created") == []
    assert _rows(again.content.decode(), "unchanged") == ["flux", "prompt"]
    assert Workflow.objects.count() == 2


def test_an_unsafe_zip_is_refused_with_a_message_and_nothing_changes(client, staff, db):
    client.force_login(staff)

    response = client.post("/admin/workflows_app/workflow/import/",
                           {"file": _library_zip(**{"../../evil.json": "{}"})})

    assert response.status_code == 200
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "The zip holds a path that leaves its folder (`..`)."]
    assert 'id="components-report"' not in response.content.decode()
    assert Workflow.objects.count() == 0


def test_apply_of_an_unknown_upload_asks_for_the_zip_again(client, staff, db):
    client.force_login(staff)

    response = client.post("/admin/workflows_app/workflow/import/",
                           {"digest": "0" * 64, "apply": "1"})

    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "That upload has expired; upload the zip again."]
    assert Workflow.objects.count() == 0


# ---- servers ----------------------------------------------------------------------------------


def test_the_check_action_shows_version_and_devices_or_the_error(client, staff, db):
    client.force_login(staff)
    with ComfyTestServer() as comfy:
        up = Server.objects.create(name="gpu-1", url=comfy.url)
        down = Server.objects.create(name="gpu-2", url="http://127.0.0.1:1")

        response = client.post("/admin/workflows_app/server/", {
            "action": "check_servers", "_selected_action": [str(up.pk), str(down.pk)]})

    assert response.status_code == 302
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown[0].startswith("gpu-1: ComfyUI 0.3.64, cpu (8.0 GiB of 16.0 GiB free); "
                               "answered in ")
    assert shown[1].startswith("gpu-2: Could not connect")


def test_admin_refuses_a_server_url_that_is_not_http(client, staff, db):
    client.force_login(staff)

    response = client.post("/admin/workflows_app/server/add/",
                           {"name": "gpu-1", "url": "file:///etc/passwd"})

    assert response.status_code == 200
    assert "Must start with http:// or https://." in response.content.decode()
    assert Server.objects.count() == 0
