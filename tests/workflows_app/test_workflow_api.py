"""Workflow discovery: list, search, filters, consumer vs staff rows, hidden ones, models, form."""

from __future__ import annotations

import pytest

from workflows_app.models import AIModel, FormConfig, Workflow, WorkflowModel

CREDITS = "function computeCost(context){ return {cost: Math.ceil(parseInt(context.steps||20)/10)} }"


def _form(group="image", **config):
    return {
        "config": {"groupOrder": ["main"], "componentGroup": group, **config},
        "fields": [
            {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "display": True,
             "group": "main", "is_required": True, "default": "a cat"},
            {"id": "steps", "name": "Steps", "type": "slider", "display": True, "group": "main",
             "default": 20, "constraints": {"min": 1, "max": 100, "step": 1}},
            {"id": "sampler", "name": "Sampler", "type": "select", "display": True,
             "group": "main", "default": "euler", "conf_file": "samplers.json"},
        ],
    }


@pytest.fixture
def library(db):
    FormConfig.objects.create(name="samplers", data=[{"name": "Euler", "value": "euler"},
                                                     {"name": "DPM++", "value": "dpmpp"}])
    sdxl = Workflow.objects.create(
        name="sdxl", label="SDXL", description="Stable diffusion XL images",
        type="comfy_workflow", output_mime_type="image/png", order=2,
        data={"form": _form(), "workflow": {"1": {"class_type": "KSampler"}},
              "credits_script": CREDITS, "test": {"prompt": "test", "steps": 45}})
    WorkflowModel.objects.create(workflow=sdxl, model=AIModel.objects.create(
        name="sdxl_base.safetensors", download_url="https://example.test/sdxl", save_to="checkpoints"))
    Workflow.objects.create(
        name="txt2vid", label="Text to video", description="Animated clips",
        type="fetch_api", output_mime_type="video/mp4", order=1,
        data={"form": _form("video"), "api": {"url": "https://example.test"},
              "credits_script": CREDITS, "models": ["motion_module.ckpt"]})
    Workflow.objects.create(
        name="secret_wip", label="WIP", description="not ready", type="comfy_workflow",
        output_mime_type="image/png", display=False, data={"form": _form()})
    return sdxl


def test_consumers_list_displayed_workflows_without_staff_fields(api_for, alice, library):
    response = api_for(alice).get("/api/workflows")

    assert response.status_code == 200
    body = response.json()
    assert body["error"] is None
    page = body["data"]
    assert (page["total"], page["limit"], page["offset"]) == (2, 50, 0)
    assert [w["name"] for w in page["items"]] == ["txt2vid", "sdxl"]
    sdxl = page["items"][1]
    assert set(sdxl) == {"id", "name", "label", "description", "type", "output_mime_type",
                         "order", "est_gen_time", "form", "models", "cost", "created_at"}
    assert sdxl["cost"] == 5.0  # the test payload's 45 steps
    assert page["items"][0]["cost"] == 2.0  # no test payload: the form default of 20 steps
    assert sdxl["form"]["fields"][2]["options"] == [{"name": "Euler", "value": "euler"},
                                                    {"name": "DPM++", "value": "dpmpp"}]
    assert "conf_file" not in sdxl["form"]["fields"][2]
    assert [m["name"] for m in sdxl["models"]] == ["sdxl_base.safetensors"]
    assert "credits_script" not in response.content.decode()
    assert "KSampler" not in response.content.decode()


def test_staff_list_includes_hidden_workflows_and_full_rows(api_for, staff, library):
    response = api_for(staff).get("/api/workflows?ordering=name")

    assert response.status_code == 200
    items = response.json()["data"]["items"]
    assert [w["name"] for w in items] == ["sdxl", "secret_wip", "txt2vid"]
    assert items[0]["data"]["credits_script"] == CREDITS
    assert items[1]["display"] is False


@pytest.mark.parametrize(("query", "names"), [
    ("search=diffusion", ["sdxl"]),
    ("search=VIDEO", ["txt2vid"]),
    ("type=fetch_api", ["txt2vid"]),
    ("output_mime_type=image/png", ["sdxl"]),
    ("componentGroup=video", ["txt2vid"]),
    ("componentGroup=audio", []),
    ("model=sdxl_base.safetensors", ["sdxl"]),
    ("model=motion_module.ckpt", ["txt2vid"]),
    ("display=false", []),
    ("ordering=-name", ["txt2vid", "sdxl"]),
    ("ordering=created_at&limit=1", ["sdxl"]),
])
def test_list_search_filters_and_ordering(api_for, alice, library, query, names):
    response = api_for(alice).get(f"/api/workflows?{query}")

    assert response.status_code == 200
    assert [w["name"] for w in response.json()["data"]["items"]] == names


def test_staff_can_filter_hidden_workflows(api_for, staff, library):
    response = api_for(staff).get("/api/workflows?display=false")

    assert [w["name"] for w in response.json()["data"]["items"]] == ["secret_wip"]


def test_detail_and_by_name(api_for, alice, library):
    client = api_for(alice)

    by_id = client.get(f"/api/workflows/{library.id}")
    by_name = client.get("/api/workflows/name/sdxl")

    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json()["data"] == by_name.json()["data"]
    assert by_id.json()["data"]["label"] == "SDXL"
    assert "data" not in by_id.json()["data"]


def test_hidden_workflow_is_404_for_consumers_and_visible_to_staff(api_for, alice, staff, library):
    hidden = Workflow.objects.get(name="secret_wip")

    for path in (f"/api/workflows/{hidden.id}", "/api/workflows/name/secret_wip",
                 f"/api/workflows/{hidden.id}/form", f"/api/workflows/{hidden.id}/models"):
        response = api_for(alice).get(path)
        assert response.status_code == 404, path
        assert response.json()["data"] is None
        assert response.json()["error"] == "Workflow not found."
        assert api_for(staff).get(path).status_code == 200, path


def test_unknown_workflow_is_404(api_for, alice, library):
    response = api_for(alice).get("/api/workflows/00000000-0000-0000-0000-000000000000")

    assert response.status_code == 404
    assert response.json()["error"] == "Workflow not found."


def test_models_lists_linked_rows_and_names_in_data(api_for, alice, library):
    txt2vid = Workflow.objects.get(name="txt2vid")

    linked = api_for(alice).get(f"/api/workflows/{library.id}/models").json()["data"]
    named = api_for(alice).get(f"/api/workflows/{txt2vid.id}/models").json()["data"]

    assert linked["total"] == 1
    assert linked["items"][0]["name"] == "sdxl_base.safetensors"
    assert linked["items"][0]["save_to"] == "checkpoints"
    assert linked["items"][0]["is_required"] is True
    assert [m["name"] for m in named["items"]] == ["motion_module.ckpt"]
    assert named["items"][0]["id"] is None


def test_form_gives_json_schema_fields_and_an_example_request(api_for, alice, library):
    response = api_for(alice).get(f"/api/workflows/{library.id}/form")

    assert response.status_code == 200
    form = response.json()["data"]
    assert form["schema"]["type"] == "object"
    assert form["schema"]["required"] == ["prompt"]
    assert form["schema"]["properties"]["steps"] == {
        "title": "Steps", "type": "integer", "minimum": 1, "maximum": 100, "default": 20,
        "x-form-type": "slider"}
    assert form["schema"]["properties"]["sampler"]["enum"] == ["euler", "dpmpp"]
    assert [f["id"] for f in form["fields"]] == ["prompt", "steps", "sampler"]
    assert form["fields"][2]["options"][1] == {"name": "DPM++", "value": "dpmpp"}
    assert form["config"]["componentGroup"] == "image"
    assert form["example"] == {"workflow_id": str(library.id),
                               "inputs": {"prompt": "a cat", "steps": 20, "sampler": "euler"},
                               "count": 1}


def test_anonymous_is_401(client, library):
    response = client.get("/api/workflows")

    assert response.status_code == 401
    assert response.json()["data"] is None


def test_list_query_count_does_not_grow_with_the_page(api_for, alice, library):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = api_for(alice)
    client.get("/api/workflows")  # warms the key's last_used_at and the cost cache
    with CaptureQueriesContext(connection) as small:
        client.get("/api/workflows")
    for i in range(6):
        wf = Workflow.objects.create(name=f"extra{i}", type="basic", data=library.data)
        WorkflowModel.objects.create(workflow=wf, model=AIModel.objects.create(name=f"m{i}"))
    client.get("/api/workflows")
    with CaptureQueriesContext(connection) as large:
        response = client.get("/api/workflows")

    assert response.json()["data"]["total"] == 8
    assert len(large.captured_queries) == len(small.captured_queries) == 6
