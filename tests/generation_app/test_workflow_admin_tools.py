"""The workflow admin page's engine tools: Validate, Quote and Test-run (staff only)."""

from __future__ import annotations

import copy
import re

import pytest
from django.contrib.messages import get_messages

from emprops.accounts.models import CreditsHold
from generation_app.models import Generation, NodeRun
from generation_app.services.workflow_checks import workflow_check
from jobs_app.models import Job
from workflows_app.models import Server, Workflow

CREDITS = "function computeCost(c){ return {cost: Math.ceil(parseInt(c.steps || 20) / 10)} }"
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "color": 0}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "model": ["4", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
}
DATA = {
    "form": {"config": {"componentGroup": "image"}, "fields": [
        {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
        {"id": "steps", "name": "Steps", "type": "slider", "default": 20,
         "constraints": {"min": 1, "max": 100, "step": 1}},
        {"id": "tint", "name": "Tint", "type": "color_picker", "default": "#000000"},
        {"id": "seed", "name": "Seed", "type": "input"},  # a seed: a number whatever its type
    ]},
    "workflow": GRAPH,
    # a color_picker feeding EmptyImage's INT `color` is fine: "#rrggbb" is converted
    "inputs": {"6": {"text": {"value": "prompt", "is_required": True}},
               "3": {"steps": {"value": "steps"}, "seed": {"value": "seed"}},
               "1": {"color": {"value": "tint"}}},
    "credits_script": CREDITS,
    "test": {"prompt": "a red fox", "steps": 30, "tint": "#ff8800"},
}


@pytest.fixture
def sdxl(db):
    server = Server.objects.create(name="gpu-1", url="http://127.0.0.1:8188")
    return Workflow.objects.create(name="sdxl", label="SDXL", type="comfy_workflow",
                                   output_mime_type="image/png", data=copy.deepcopy(DATA),
                                   server=server)


def _problems(result):
    return [(c["name"], p["where"], p["message"]) for c in result["checks"]
            for p in c["problems"]]


def test_a_sound_workflow_validates_and_prices_its_test_payload(sdxl):
    result = workflow_check(workflow=sdxl)

    assert _problems(result) == []
    assert (result["ok"], result["cost"]) == (True, 3.0)
    assert [c["name"] for c in result["checks"]] == ["form", "graph", "credits", "test"]


def test_validate_names_missing_targets_a_throwing_script_and_a_bad_test_payload(sdxl):
    sdxl.data["inputs"]["9"] = {"text": {"value": "prompt"}}  # no node 9
    sdxl.data["inputs"]["6"]["strength"] = {"value": "steps"}  # CLIPTextEncode has no strength
    sdxl.data["inputs"]["3"]["model"] = {"value": "steps"}  # a link, not a widget
    sdxl.data["inputs"]["1"]["width"] = {"value": "prompt"}  # text into an INT
    sdxl.data["credits_script"] = "function computeCost(c){ throw new Error('no price') }"
    sdxl.data["test"] = {"prompt": "a red fox", "steps": 500, "tint": "#ff8800"}
    sdxl.data["form"]["fields"][1]["constraints"] = {"min": 10, "max": 1}
    sdxl.server = None

    result = workflow_check(workflow=sdxl)

    assert result["ok"] is False
    problems = _problems(result)
    assert ("graph", "data.inputs.9", "Node 9 is not in the graph.") in problems
    assert ("graph", "data.inputs.6.strength",
            "Input 'strength' is not an input of node 6 (CLIPTextEncode).") in problems
    assert ("graph", "data.inputs.3.model",
            "Input 'model' of node 3 (KSampler) is linked to another node's output; a form "
            "value would cut the link.") in problems
    assert ("graph", "data.inputs.1.width",
            "Input 'width' of node 1 (EmptyImage) sets a number, but field 'prompt' is a "
            "prompt_editor text field.") in problems
    assert ("form", "field 'steps'", "constraints.min is greater than constraints.max.") \
        in problems
    assert ("graph", "server", "No ComfyUI server: jobs cannot run.") in problems
    credits = [p for p in problems if p[0] == "credits"]
    assert len(credits) == 1
    assert credits[0][2].startswith("computeCost of the test payload failed (script): ")
    assert "no price" in credits[0][2]
    assert [p[1] for p in problems if p[0] == "test"] == ["data.test.steps"]
    assert len(problems) == 9


def test_validate_flags_a_script_that_returns_no_number_and_a_missing_test(sdxl):
    sdxl.data["credits_script"] = "function computeCost(c){ return 'lots' }"
    del sdxl.data["test"]

    problems = _problems(workflow_check(workflow=sdxl))

    assert problems == [
        ("credits", "data.credits_script",
         'computeCost of the test payload failed (script): computeCost returned "lots", not a '
         "cost (a number from 0 to 1000000000, or {cost: number}); it would cost 1 credit."),
        ("test", "data.test", "No test payload: Test-run and Quote need one.")]


# ---- the admin pages ----------------------------------------------------------------------------


def _url(workflow, tool):
    return f"/admin/workflows_app/workflow/{workflow.id}/{tool}/"


def test_staff_see_the_tools_on_the_change_page(client, staff, sdxl):
    client.force_login(staff)

    content = client.get(f"/admin/workflows_app/workflow/{sdxl.id}/change/").content.decode()

    assert f'<a href="{_url(sdxl, "validate")}" class="historylink" id="workflow-tool-validate">' \
        in content
    assert f'<a href="{_url(sdxl, "quote")}" class="historylink" id="workflow-tool-quote">' \
        in content
    assert f'<form method="post" action="{_url(sdxl, "test-run")}">' in content


def test_the_validate_page_reports_each_problem(client, staff, sdxl):
    sdxl.data["inputs"]["9"] = {"text": {"value": "prompt"}}
    sdxl.save()
    client.force_login(staff)

    response = client.get(_url(sdxl, "validate"))

    assert response.status_code == 200
    content = response.content.decode()
    assert 'data-ok="false"' in content
    assert re.findall(r'<tr class="check-(\w+)" data-check="(\w+)"', content) == [
        ("ok", "form"), ("problem", "graph"), ("ok", "credits"), ("ok", "test")]
    assert "<code>data.inputs.9</code></td><td>Node 9 is not in the graph.</td>" in content


def test_the_quote_page_quotes_the_test_payload(client, staff, sdxl):
    client.force_login(staff)

    content = client.get(_url(sdxl, "quote")).content.decode()

    assert '<td id="quote-per-generation">3.0</td>' in content
    assert '<td id="quote-total">3.0</td>' in content


def test_a_test_payload_the_form_refuses_is_shown_instead_of_a_quote(client, staff, sdxl):
    sdxl.data["test"]["steps"] = 500
    sdxl.save()
    client.force_login(staff)

    content = client.get(_url(sdxl, "quote")).content.decode()

    assert 'id="workflow-quote"' not in content
    assert "<code>inputs.steps</code>: Ensure this value is less than or equal to 100." in content


def test_test_run_starts_a_one_step_job_and_opens_its_live_page(client, staff, sdxl):
    client.force_login(staff)

    response = client.post(_url(sdxl, "test-run"))

    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/jobs_app/job/{job.id}/change/"
    assert (job.user_id, job.job_type, job.name) == (staff.id, "workflow_test",
                                                     "Workflow test: SDXL")
    assert job.input["steps"] == [{"id": 1, "nodeName": "sdxl", "nodePayload": {
        "prompt": "a red fox", "steps": 30, "tint": "#ff8800"}}]
    assert list(Generation.objects.filter(job=job).values_list("gid", flat=True)) == [0]
    assert list(NodeRun.objects.filter(job=job).values_list("node_name", "queue")) == [
        ("sdxl", "io")]
    assert CreditsHold.objects.filter(job_id=job.id).count() == 1
    assert client.get(response["Location"]).status_code == 200


def test_test_run_without_a_test_payload_says_why_and_creates_nothing(client, staff, sdxl):
    del sdxl.data["test"]
    sdxl.save()
    client.force_login(staff)

    response = client.post(_url(sdxl, "test-run"))

    assert response.status_code == 302
    assert response["Location"] == f"/admin/workflows_app/workflow/{sdxl.id}/change/"
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Test-run refused: This workflow has no test payload. "
        "(data.test: Missing: set a sample payload first.)"]
    assert Job.objects.count() == 0


def test_test_run_is_post_only(client, staff, sdxl):
    client.force_login(staff)

    assert client.get(_url(sdxl, "test-run")).status_code == 405
    assert Job.objects.count() == 0


def test_non_staff_get_the_login_page_and_nothing_runs(client, alice, sdxl):
    client.force_login(alice)

    responses = [client.get(_url(sdxl, "validate")), client.get(_url(sdxl, "quote")),
                 client.post(_url(sdxl, "test-run"))]

    for response in responses:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert Job.objects.count() == 0
    assert CreditsHold.objects.count() == 0


def test_staff_without_change_permission_cannot_test_run(client, make_user, sdxl):
    viewer = make_user("viewer")
    viewer.is_staff = True  # staff, but neither superuser nor granted workflow permissions
    viewer.save()
    client.force_login(viewer)

    responses = [client.post(_url(sdxl, "test-run")), client.get(_url(sdxl, "validate"))]

    assert [r.status_code for r in responses] == [403, 403]
    assert Job.objects.count() == 0


def test_the_changelist_validate_action_sums_up_each_workflow(client, staff, sdxl):
    broken = Workflow.objects.create(name="broken", type="comfy_workflow",
                                     output_mime_type="image/png",
                                     data={**copy.deepcopy(DATA), "workflow": {}})
    client.force_login(staff)

    response = client.post("/admin/workflows_app/workflow/", {
        "action": "validate_workflows", "_selected_action": [str(sdxl.pk), str(broken.pk)]})

    assert response.status_code == 302
    assert sorted(str(m) for m in get_messages(response.wsgi_request)) == [
        "broken: data.workflow: No ComfyUI API-format graph. (+1 more)", "sdxl: no problems."]


def test_data_that_is_not_an_object_is_reported_not_a_500(client, staff, sdxl):
    sdxl.data = ["not", "an", "object"]
    sdxl.save()
    client.force_login(staff)

    pages = [client.get(f"/admin/workflows_app/workflow/{sdxl.id}/change/"),
             client.get(_url(sdxl, "validate")), client.get(_url(sdxl, "quote"))]
    run = client.post(_url(sdxl, "test-run"))

    assert [p.status_code for p in pages] == [200, 200, 200]
    assert "<code>data</code></td><td>Must be an object.</td>" in pages[1].content.decode()
    assert run.status_code == 302
    assert Job.objects.count() == 0
