"""Caps on the size of a GenerationInput (MAX_STEPS_PER_COLLECTION, MAX_VARIABLES,
MAX_VARIABLE_VALUES): checked first on every path that takes one (collections, generations, the
unified API and its batches), a 400 naming the limit, and nothing created or held."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from collections_app.generation_input import GenerationInputError, Limits, check_limits
from collections_app.models import Collection, CollectionHistory, Component, Project
from emprops.accounts.models import CreditsHistory, CreditsHold
from jobs_app.models import Job

LIMITS = Limits(steps=3, variables=2, values=4)
CREATE = "/api/projects/collections"


def _steps(n: int) -> list[dict]:
    return [{"id": i, "nodeName": "prompt", "nodePayload": {"prompt": f"step {i}"}}
            for i in range(1, n + 1)]


def _variable(name: str, n: int, **value: list) -> dict:
    return {"name": name, "type": "pick", "value": {"values": [f"v{i}" for i in range(n)],
                                                     **value}}


def _counts() -> dict[str, int]:
    return {"projects": Project.objects.count(), "collections": Collection.objects.count(),
            "components": Component.objects.count(), "history": CollectionHistory.objects.count(),
            "jobs": Job.objects.count(), "holds": CreditsHold.objects.count(),
            "credits": CreditsHistory.objects.count()}


# ---- the check itself (pure) --------------------------------------------------------------------

def test_lists_at_their_caps_pass():
    check_limits({"steps": _steps(3), "variables": [_variable("a", 4), _variable("b", 4)]},
                 LIMITS)


def test_every_list_over_its_cap_is_named_with_the_limit():
    data = {"steps": _steps(4),
            "variables": [_variable("a", 5), _variable("b", 1, weights=[1] * 5),
                          _variable("c", 1)]}

    with pytest.raises(GenerationInputError) as caught:
        check_limits(data, LIMITS)

    assert caught.value.details == {
        "steps": ["At most 3 steps per collection, got 4."],
        "variables": ["At most 2 variables, got 3."],
        "variables[0].value.values": ["At most 4 values per variable, got 5."],
        "variables[1].value.weights": ["At most 4 weights per variable, got 5."],
    }
    assert str(caught.value) == (
        "Invalid GenerationInput: steps: At most 3 steps per collection, got 4.")


def test_shapes_that_are_not_lists_are_left_to_validation():
    check_limits({"steps": "many", "variables": [None, {"value": []}]}, LIMITS)
    check_limits(["not", "an", "object"], LIMITS)


# ---- collections --------------------------------------------------------------------------------

def test_twenty_thousand_steps_are_refused_before_any_per_step_work(api_for, alice):
    client = api_for(alice)
    before = _counts()

    with CaptureQueriesContext(connection) as queries:
        response = client.post(CREATE, {"title": "Huge", "data": {"steps": _steps(20_000)}},
                               format="json")

    assert response.status_code == 400, response.json()
    # neither the workflow lookup of the steps' node names nor any component row
    assert not [q["sql"] for q in queries.captured_queries
                if '"workflow' in q["sql"] or '"component' in q["sql"]]
    body = response.json()
    assert body["data"] is None
    assert body["error"] == (
        "Invalid GenerationInput: steps: At most 200 steps per collection, got 20000.")
    assert body["details"] == {"steps": ["At most 200 steps per collection, got 20000."]}
    assert _counts() == before


def test_the_caps_come_from_settings(api_for, alice, settings):
    settings.MAX_STEPS_PER_COLLECTION = 2
    settings.MAX_VARIABLES = 1
    settings.MAX_VARIABLE_VALUES = 3
    client = api_for(alice)
    before = _counts()

    steps = client.post(CREATE, {"data": {"steps": _steps(3)}}, format="json")
    variables = client.post(CREATE, {"data": {"variables": [_variable("a", 1),
                                                            _variable("b", 1)]}}, format="json")
    values = client.post(CREATE, {"data": {"variables": [_variable("a", 4)]}}, format="json")
    fits = client.post(CREATE, {"data": {"steps": _steps(2),
                                         "variables": [_variable("a", 3)]}}, format="json")

    assert steps.json()["details"] == {"steps": ["At most 2 steps per collection, got 3."]}
    assert variables.json()["details"] == {"variables": ["At most 1 variables, got 2."]}
    assert values.json()["details"] == {
        "variables[0].value.values": ["At most 3 values per variable, got 4."]}
    assert [steps.status_code, variables.status_code, values.status_code] == [400, 400, 400]
    assert fits.status_code == 201, fits.json()
    assert _counts()["collections"] == before["collections"] + 1


def test_an_update_over_a_cap_is_refused_and_changes_nothing(api_for, alice, settings):
    client = api_for(alice)
    created = client.post(CREATE, {"title": "Small", "data": {"steps": _steps(1)}},
                          format="json").json()["data"]
    settings.MAX_STEPS_PER_COLLECTION = 2
    before = _counts()

    response = client.put(f"/api/projects/{created['project_id']}/collections/{created['id']}",
                          {"title": "Grown", "data": {"steps": _steps(3)}}, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["details"] == {"steps": ["At most 2 steps per collection, got 3."]}
    collection = Collection.objects.get(pk=created["id"])
    assert (collection.title, collection.data) == ("Small", created["data"])
    assert _counts() == before


def test_generating_a_stored_collection_over_a_lowered_cap_holds_no_credits(api_for, alice,
                                                                             settings):
    client = api_for(alice)
    created = client.post(CREATE, {"title": "Three", "data": {"steps": _steps(3)}},
                          format="json").json()["data"]
    settings.MAX_STEPS_PER_COLLECTION = 2
    before = _counts()

    response = client.post(f"/api/collections/{created['id']}/generations", {"count": 1},
                           format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["details"] == {"steps": ["At most 2 steps per collection, got 3."]}
    assert _counts() == before


# ---- the unified API and its batches ------------------------------------------------------------

def test_a_unified_request_over_a_cap_is_refused_and_creates_nothing(api_for, alice, settings):
    settings.MAX_VARIABLES = 2
    before = _counts()

    response = api_for(alice).post("/api/collections/generate", {
        "workflow_name": "prompt", "inputs": {"prompt": "a $v0"},
        "variables": [_variable(f"v{i}", 1) for i in range(3)]}, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["details"] == {"variables": ["At most 2 variables, got 3."]}
    assert _counts() == before


def test_a_batch_with_one_item_over_a_cap_creates_nothing(api_for, alice, settings):
    settings.MAX_VARIABLE_VALUES = 2
    ok = {"workflow_name": "prompt", "inputs": {"prompt": "a $v"}, "variables": [_variable("v", 2)]}
    too_many = {**ok, "variables": [_variable("v", 3)]}
    before = _counts()

    response = api_for(alice).post("/api/collections/generate/batch",
                                   {"items": [ok, too_many]}, format="json")

    assert response.status_code == 400, response.json()
    items = response.json()["details"]["items"]
    assert items[0]["ok"] is True
    assert items[1]["status"] == 400
    assert items[1]["details"] == {
        "variables[0].value.values": ["At most 2 values per variable, got 3."]}
    assert _counts() == before
