"""Quotes without running (workflow quote, instruction-set credits) and staff test runs."""

from __future__ import annotations

import pytest

from emprops.accounts.models import CreditsHold
from generation_app.models import NodeRun
from jobs_app.models import Job
from workflows_app.models import Workflow

CREDITS = "function computeCost(context){ return {cost: Math.ceil(parseInt(context.steps||20)/10)} }"


def _form():
    return {"config": {"componentGroup": "image"}, "fields": [
        {"id": "prompt", "name": "Prompt", "type": "input", "is_required": True,
         "default": "a cat"},
        {"id": "steps", "name": "Steps", "type": "slider", "default": 20,
         "constraints": {"min": 1, "max": 100}},
    ]}


@pytest.fixture
def sdxl(db):
    return Workflow.objects.create(
        name="sdxl", type="fetch_api", output_mime_type="image/png",
        data={"form": _form(), "credits_script": CREDITS, "api": {"url": "http://127.0.0.1:9/x"},
              "test": {"prompt": "test", "steps": "30"}})


def test_quote_runs_the_credits_script_on_the_inputs_times_count(api_for, alice, sdxl):
    response = api_for(alice).post(f"/api/workflows/{sdxl.id}/quote",
                                   {"inputs": {"steps": "45"}, "count": 3}, format="json")

    assert response.status_code == 200
    assert response.json()["data"] == {
        "per_generation": 5.0, "total_cost": 15.0, "generations": 3,
        "breakdown": [{"nodeName": "sdxl", "stepId": 1, "cost": 5.0}]}


def test_quote_uses_form_defaults_for_missing_inputs(api_for, alice, sdxl):
    response = api_for(alice).post(f"/api/workflows/{sdxl.id}/quote", {}, format="json")

    assert response.status_code == 200
    assert response.json()["data"]["per_generation"] == 2.0
    assert response.json()["data"]["total_cost"] == 2.0


def test_a_failing_script_costs_one(api_for, alice, sdxl):
    sdxl.data = {**sdxl.data, "credits_script": "function computeCost(c){ throw new Error('x') }"}
    sdxl.save()

    response = api_for(alice).post(f"/api/workflows/{sdxl.id}/quote",
                                   {"inputs": {"steps": 90}, "count": 2}, format="json")

    assert response.status_code == 200
    assert response.json()["data"]["per_generation"] == 1.0
    assert response.json()["data"]["total_cost"] == 2.0


def test_inputs_that_fail_the_form_are_400_naming_the_field(api_for, alice, sdxl):
    response = api_for(alice).post(f"/api/workflows/{sdxl.id}/quote",
                                   {"inputs": {"steps": 500, "prompt": ""}}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["data"] is None
    assert body["details"] == {
        "inputs.prompt": ["This field is required."],
        "inputs.steps": ["Ensure this value is less than or equal to 100."]}


def test_bad_count_is_400(api_for, alice, sdxl):
    response = api_for(alice).post(f"/api/workflows/{sdxl.id}/quote", {"count": 0}, format="json")

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["count"]


def test_quote_of_a_hidden_workflow_is_404_for_consumers(api_for, alice, staff, sdxl):
    sdxl.display = False
    sdxl.save()

    assert api_for(alice).post(f"/api/workflows/{sdxl.id}/quote", {}, format="json").status_code == 404
    assert api_for(staff).post(f"/api/workflows/{sdxl.id}/quote", {}, format="json").status_code == 200


def test_instruction_set_credits_quotes_all_steps_times_generations(api_for, alice, sdxl):
    request = {
        "version": "v2",
        "steps": [
            {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a dog"}},
            {"id": 2, "nodeName": "sdxl", "nodePayload": {"prompt": "x", "steps": "61"}},
        ],
        "generations": {"hashes": [], "generations": 4, "use_custom_hashes": False},
        "variables": [],
    }

    response = api_for(alice).post("/api/instruction-sets/credits", {"request": request},
                                   format="json")

    assert response.status_code == 200
    assert response.json()["data"] == {
        "per_generation": 8.0, "total_cost": 32.0, "generations": 4,
        "breakdown": [{"nodeName": "prompt", "stepId": 1, "cost": 1.0},
                      {"nodeName": "sdxl", "stepId": 2, "cost": 7.0}]}


def test_instruction_set_credits_counts_explicit_hashes(api_for, alice, sdxl):
    request = {"steps": [{"id": 2, "nodeName": "sdxl", "nodePayload": {"prompt": "x"}}],
               "generations": {"hashes": ["oo1", "oo2"], "generations": 9,
                               "use_custom_hashes": True}}

    response = api_for(alice).post("/api/instruction-sets/credits", {"request": request},
                                   format="json")

    assert response.status_code == 200
    assert response.json()["data"]["total_cost"] == 4.0


def test_invalid_instruction_set_is_400(api_for, alice, sdxl):
    request = {"steps": [{"id": 1, "nodeName": "no_such_node", "nodePayload": {}}]}

    response = api_for(alice).post("/api/instruction-sets/credits", {"request": request},
                                   format="json")

    assert response.status_code == 400
    assert any(k.startswith("steps[0]") for k in response.json()["details"])


def test_staff_test_run_starts_a_one_step_job(api_for, staff, sdxl):
    response = api_for(staff).post(f"/api/workflows/{sdxl.id}/test")

    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["data"]["jobId"])
    assert (job.user_id, job.job_type, job.data["collectionId"]) == (staff.id, "workflow_test", None)
    assert job.input["steps"] == [{"id": 1, "nodeName": "sdxl",
                                   "nodePayload": {"prompt": "test", "steps": 30}}]
    assert list(NodeRun.objects.filter(job=job).values_list("node_name", flat=True)) == ["sdxl"]
    assert CreditsHold.objects.filter(job_id=job.id).count() == 1


def test_non_staff_cannot_run_a_test_and_nothing_is_created(api_for, alice, sdxl):
    response = api_for(alice).post(f"/api/workflows/{sdxl.id}/test")

    assert response.status_code == 403
    assert response.json()["data"] is None
    assert Job.objects.count() == 0
    assert CreditsHold.objects.count() == 0


def test_test_run_without_a_test_payload_is_422(api_for, staff, sdxl):
    sdxl.data = {k: v for k, v in sdxl.data.items() if k != "test"}
    sdxl.save()

    response = api_for(staff).post(f"/api/workflows/{sdxl.id}/test")

    assert response.status_code == 422
    assert response.json()["details"] == {"data.test": ["Missing: set a sample payload first."]}
    assert Job.objects.count() == 0
