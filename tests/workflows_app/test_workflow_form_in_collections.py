"""A step naming a workflow is validated against its form when the collection is created and
again when it is generated (400 before any job), and a deleted workflow makes it 422."""

from __future__ import annotations

from collections_app.models import Collection
from jobs_app.models import Job
from workflows_app.models import Server, Workflow


def _workflow():
    server = Server.objects.create(name="s", url="http://127.0.0.1:9")
    return Workflow.objects.create(
        name="txt2img", type="comfy_workflow", output_mime_type="image/png", server=server,
        data={"workflow": {}, "inputs": {},
              "form": {"fields": [
                  {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
                  {"id": "steps", "name": "Steps", "type": "slider",
                   "constraints": {"min": 1, "max": 50}}]}})


def test_missing_required_field_and_out_of_range_value_are_400(api_for, alice):
    _workflow()
    data = {"steps": [{"id": 1, "nodeName": "txt2img", "nodePayload": {"steps": "80"}}]}

    response = api_for(alice).post("/api/projects/collections", {"data": data}, format="json")

    assert response.status_code == 400
    details = response.json()["details"]
    assert "steps[0].nodePayload.prompt" in details
    assert "steps[0].nodePayload.steps" in details
    assert Collection.objects.count() == 0


def test_numbers_held_as_strings_are_coerced_by_the_form(api_for, alice):
    _workflow()
    data = {"steps": [{"id": 1, "nodeName": "txt2img",
                       "nodePayload": {"prompt": "a cat", "steps": "10"}}]}

    response = api_for(alice).post("/api/projects/collections", {"data": data}, format="json")

    assert response.status_code == 201
    assert response.json()["data"]["data"]["steps"][0]["nodePayload"]["steps"] == 10


def test_generating_after_the_workflow_was_deleted_is_422_and_creates_no_job(api_for, alice):
    wf = _workflow()
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "txt2img", "nodePayload": {"prompt": "a cat"}}]}
    collection = client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]
    wf.delete()

    response = client.post(f"/api/collections/{collection['id']}/generations", {}, format="json")

    assert response.status_code == 422
    assert "no longer exists" in response.json()["error"]
    assert response.json()["data"] is None
    assert Job.objects.count() == 0


def test_workflow_without_output_mime_type_is_422(api_for, alice):
    wf = _workflow()
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "txt2img", "nodePayload": {"prompt": "a cat"}}]}
    collection = client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]
    Workflow.objects.filter(pk=wf.pk).update(output_mime_type=None)

    response = client.post(f"/api/collections/{collection['id']}/generations", {}, format="json")

    assert response.status_code == 422
    assert "output_mime_type" in response.json()["error"]
    assert Job.objects.count() == 0
