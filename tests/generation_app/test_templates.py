"""Templates: staff-published and users' own, parameters checked against their JSON Schema and
written at their JSON-pointer targets, collections re-numbered, generation in the same call."""

from __future__ import annotations

from decimal import Decimal

import pytest

from collections_app.models import Collection
from emprops.accounts.services import credits_grant
from generation_app.models import Generation, Template
from jobs_app.models import Job

DATA = {
    "steps": [
        {"id": 7, "nodeName": "prompt", "nodePayload": {"prompt": "a $who"}},
        {"id": 8, "nodeName": "prompt", "nodePayload": {"prompt": "portrait of #7"}},
    ],
    "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                   "value": {"values": ["cat"]}}],
}
PARAMETERS = [
    {"name": "subject", "target": "/steps/0/nodePayload/prompt",
     "schema": {"type": "string", "minLength": 3, "maxLength": 100}},
    {"name": "who", "target": "/variables/0/value/values",
     "schema": {"type": "array", "items": {"enum": ["cat", "dog", "owl"]}, "minItems": 1,
                "default": ["cat"]}},
]


def _template(client, **extra) -> dict:
    body = {"name": "Portraits", "description": "People and pets", "data": DATA,
            "parameters": PARAMETERS, **extra}
    response = client.post("/api/templates", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["data"]


def test_a_collection_from_a_template_takes_the_parameters(api_for, alice, staff):
    # given: a staff-published template
    published = _template(api_for(staff), is_public=True)
    client = api_for(alice)

    # when
    response = client.post(f"/api/templates/{published['id']}/collections", {
        "parameters": {"subject": "a $who in a hat", "who": ["owl"]},
        "overrides": {"title": "Hats", "editions": 5},
    }, format="json")

    # then: the values sit at their targets, steps are re-numbered, refs rewritten
    assert response.status_code == 201, response.json()
    body = response.json()["data"]
    assert body["job"] is None
    collection = body["collection"]
    assert collection["title"] == "Hats" and collection["editions"] == 5
    assert collection["description"] == "People and pets"
    assert collection["user_id"] == str(alice.id)
    first, second = collection["data"]["steps"][:2]
    assert first["nodePayload"]["prompt"] == "a $who in a hat"
    assert (first["fromId"], second["fromId"]) == (7, 8)
    assert first["id"] != 7
    assert second["nodePayload"]["prompt"] == f"portrait of #{first['id']}"
    assert collection["data"]["variables"][0]["value"]["values"] == ["owl"]
    assert published["owner_id"] is None and published["is_public"] is True
    # the template itself is unchanged
    assert Template.objects.get(pk=published["id"]).data["steps"][0]["nodePayload"]["prompt"] \
        == "a $who"


def test_generate_starts_the_job_in_the_same_call(api_for, alice):
    client = api_for(alice)
    template = _template(client)

    response = client.post(f"/api/templates/{template['id']}/collections", {
        "parameters": {"subject": "a $who"}, "generate": {"count": 2}}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()["data"]
    job = Job.objects.get(pk=body["job"]["id"])
    assert job.user_id == alice.id
    assert job.data["collectionId"] == body["collection"]["id"]
    assert Generation.objects.filter(job=job).count() == 2


def test_a_refused_generation_leaves_no_collection(api_for, alice):
    client = api_for(alice)
    template = _template(client)
    credits_grant(user=alice, amount=Decimal(-10), credit_type="permanent", comment="spent")

    response = client.post(f"/api/templates/{template['id']}/collections", {
        "parameters": {"subject": "a $who"}, "generate": {"count": 2}}, format="json")

    assert response.status_code == 402
    assert not Collection.objects.filter(project__user=alice).exists()
    assert not Job.objects.exists()


@pytest.mark.parametrize("parameters, field", [
    ({"subject": "ab"}, "parameters.subject"),  # minLength
    ({"subject": 5}, "parameters.subject"),  # type
    ({}, "parameters.subject"),  # required: no default
    ({"subject": "a cat", "who": ["cow"]}, "parameters.who"),  # enum
    ({"subject": "a cat", "colour": "red"}, "parameters.colour"),  # unknown
])
def test_bad_parameter_values_are_400_and_create_nothing(api_for, alice, parameters, field):
    client = api_for(alice)
    template = _template(client)

    response = client.post(f"/api/templates/{template['id']}/collections",
                           {"parameters": parameters}, format="json")

    assert response.status_code == 400, response.json()
    assert list(response.json()["details"]) == [field]
    assert not Collection.objects.exists()


@pytest.mark.parametrize("parameters, field", [
    ([{"name": "x", "target": "/steps/5/nodePayload/prompt", "schema": {}}], "parameters[0].target"),
    ([{"name": "x", "target": "steps", "schema": {}}], "parameters[0].target"),
    ([{"name": "x", "target": "/steps/0/x", "schema": {"type": "nope"}}], "parameters[0].schema"),
    ([{"name": "x", "target": "/steps/0/x", "schema": {"$ref": "http://169.254.169.254/"}}],
     "parameters[0].schema"),
    ([{"name": "x", "target": "/a", "schema": {}}, {"name": "x", "target": "/b", "schema": {}}],
     "parameters[1].name"),
])
def test_bad_templates_are_400(api_for, alice, parameters, field):
    response = api_for(alice).post("/api/templates", {"name": "t", "data": DATA,
                                                      "parameters": parameters}, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["details"]
    assert not Template.objects.exists()


def test_a_template_with_a_bad_generation_input_is_400(api_for, alice):
    data = {"steps": [{"id": 1, "nodeName": "no-such-node", "nodePayload": {}}]}

    response = api_for(alice).post("/api/templates", {"name": "t", "data": data}, format="json")

    assert response.status_code == 400
    assert not Template.objects.exists()


def test_only_staff_publish(api_for, alice):
    response = api_for(alice).post("/api/templates", {"name": "t", "data": DATA,
                                                      "is_public": True}, format="json")

    assert response.status_code == 403
    assert not Template.objects.exists()


def test_templates_are_public_or_yours(api_for, alice, bob, staff):
    published = _template(api_for(staff), is_public=True)
    alices = _template(api_for(alice))
    client = api_for(bob)

    listed = client.get("/api/templates").json()["data"]
    get = client.get(f"/api/templates/{alices['id']}")
    use = client.post(f"/api/templates/{alices['id']}/collections",
                      {"parameters": {"subject": "a cat"}}, format="json")
    delete = client.delete(f"/api/templates/{alices['id']}")
    delete_published = client.delete(f"/api/templates/{published['id']}")

    assert [t["id"] for t in listed["items"]] == [published["id"]]
    assert [r.status_code for r in (get, use, delete, delete_published)] == [404] * 4
    assert Template.objects.count() == 2
    assert not Collection.objects.exists()
    assert {t["id"] for t in api_for(alice).get("/api/templates").json()["data"]["items"]} == {
        published["id"], alices["id"]}
    assert api_for(alice).delete(f"/api/templates/{alices['id']}").status_code == 204
    assert api_for(staff).delete(f"/api/templates/{published['id']}").status_code == 204
    assert not Template.objects.exists()
