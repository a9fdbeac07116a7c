"""A color_picker value that feeds a ComfyUI number input (EmptyImage's `color`) must be a color:
anything else is a 400 naming the field before a job exists or a credit is held, on every path
that starts generations (the unified API, a collection's generations) and on quotes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from emprops.accounts.models import CreditsBalance, CreditsHold
from generation_app.models import Generation, NodeRun
from jobs_app.models import Job
from tests.peers.comfyui_server import invert_graph
from workflows_app.models import Server, Workflow

MESSAGE = "Expected a color like #ff8800 (this field sets a number), got 'orange'."


@pytest.fixture
def tinted(db: Any) -> Workflow:
    server = Server.objects.create(name="local-comfy", url="http://127.0.0.1:9")
    return Workflow.objects.create(
        name="tinted", label="Tinted", type="comfy_workflow", output_mime_type="image/png",
        server=server,
        data={"workflow": invert_graph(prefix="emprops"),
              "inputs": {"1": {"color": {"value": "color", "default": "#336699"}}},
              "form": {"fields": [{"id": "color", "name": "Color", "type": "color_picker"}]},
              "output_node_id": "3",
              "credits_script": "function computeCost(c){ return {cost: 2} }"})


def _nothing_held(user: Any) -> dict[str, Any]:
    return {"jobs": Job.objects.count(), "generations": Generation.objects.count(),
            "runs": NodeRun.objects.count(), "holds": CreditsHold.objects.count(),
            "balance": CreditsBalance.objects.get(user=user, credit_type="permanent").balance}


def test_the_unified_api_refuses_a_bad_color_before_holding_credits(api_for, alice, tinted):
    before = _nothing_held(alice)

    response = api_for(alice).post("/api/collections/generate",
                                   {"workflow_name": "tinted", "inputs": {"color": "orange"}},
                                   format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["details"] == {"inputs.color": [MESSAGE]}
    assert _nothing_held(alice) == before == {**before, "jobs": 0, "holds": 0}


def test_a_collections_generations_refuse_a_bad_color_before_holding_credits(api_for, alice,
                                                                             tinted):
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "tinted", "nodePayload": {"color": "orange"}}]}
    collection = client.post("/api/projects/collections", {"title": "Tint", "data": data},
                             format="json").json()["data"]
    before = _nothing_held(alice)

    response = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                           format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["details"] == {"steps[0].nodePayload.color": [MESSAGE]}
    assert _nothing_held(alice) == before == {**before, "jobs": 0, "holds": 0}


def test_a_quote_refuses_a_bad_color(api_for, alice, tinted):
    response = api_for(alice).post(f"/api/workflows/{tinted.id}/quote",
                                   {"inputs": {"color": "orange"}}, format="json")

    assert response.status_code == 400
    assert response.json()["details"] == {"inputs.color": [MESSAGE]}


def test_a_hex_color_is_accepted_and_credits_are_held(api_for, alice, tinted):
    response = api_for(alice).post("/api/collections/generate",
                                   {"workflow_name": "tinted", "inputs": {"color": "#ff8800"}},
                                   format="json")

    assert response.status_code == 202, response.json()
    job = Job.objects.get()
    assert job.input["steps"][0]["nodePayload"] == {"color": "#ff8800"}
    assert CreditsHold.objects.get(job_id=job.id).amount == Decimal(2)
