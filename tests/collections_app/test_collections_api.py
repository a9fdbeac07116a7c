"""Projects and collections through the API: create, re-number, update, publish, history, access."""

from __future__ import annotations

import json

from collections_app.models import (
    Collection,
    CollectionHistory,
    CollectionPreview,
    Component,
    Project,
)


def _doc(*children):
    return json.dumps([{"type": "paragraph", "children": list(children)}])


def _data():
    return {
        "version": "v2",
        "steps": [
            {"id": 1, "nodeName": "prompt", "alias": "Subject",
             "nodePayload": {"prompt": _doc({"text": "a "}, {"type": "variable", "variable": {"name": "animal"}})},
             "testValue": {"src": "x", "data": "y", "mimeType": "text/plain"}},
            {"id": 2, "nodeName": "prompt",
             "nodePayload": {"prompt": _doc({"text": "portrait of "}, {"type": "component", "component": {"id": 1}})}},
            {"id": 3, "nodeName": "prompt",
             "nodePayload": {"prompt": "plain", "extra": {"$ref": 2, "path": ".data"}}},
        ],
        "generations": {"hashes": [], "generations": 2, "use_custom_hashes": False},
        "variables": [{"name": "animal", "type": "pick", "value_type": "strings",
                       "value": {"values": ["cat", "dog"]}}],
    }


def test_create_renumbers_steps_and_rewrites_references(api_for, alice):
    response = api_for(alice).post("/api/projects/collections", {"title": "Zoo", "data": _data()},
                                   format="json")

    assert response.status_code == 201
    body = response.json()["data"]
    steps = body["data"]["steps"]
    ids = [s["id"] for s in steps]
    assert all(i >= 1_000_000 for i in ids)
    assert [s["fromId"] for s in steps] == [1, 2, 3]
    assert "testValue" not in steps[0]
    assert f'"id": {ids[0]}' in steps[1]["nodePayload"]["prompt"].replace('"id":', '"id": ').replace("  ", " ")
    assert steps[2]["nodePayload"]["extra"] == {"$ref": ids[1], "path": ".data"}
    assert sorted(Component.objects.filter(collection_id=body["id"]).values_list("id", flat=True)) == ids
    project = Project.objects.get(pk=body["project_id"])
    assert (project.is_default, project.name, project.user_id) == (True, "Default", alice.id)
    assert CollectionHistory.objects.filter(collection_id=body["id"], action="created").count() == 1


def test_create_without_data_gets_an_empty_v2_input(api_for, alice):
    response = api_for(alice).post("/api/projects/collections", {"title": "Empty"}, format="json")

    assert response.status_code == 201
    assert response.json()["data"]["data"] == {
        "version": "v2", "steps": [],
        "generations": {"hashes": [], "generations": 1, "use_custom_hashes": False},
        "variables": []}


def test_invalid_input_is_400_naming_step_and_field_and_creates_nothing(api_for, alice):
    data = _data()
    data["steps"][2]["nodePayload"]["extra"] = {"$ref": 99, "path": ".data"}
    data["steps"].append({"id": 4, "nodeName": "no_such_node", "nodePayload": {}})
    data["variables"][0]["type"] = "shuffle"

    response = api_for(alice).post("/api/projects/collections", {"data": data}, format="json")

    assert response.status_code == 400
    details = response.json()["details"]
    assert any(k.startswith("steps[2]") for k in details)
    assert any(k.startswith("steps[3]") for k in details)
    assert any(k.startswith("variables[0]") for k in details)
    assert Collection.objects.count() == 0
    assert Component.objects.count() == 0
    assert Project.objects.count() == 0


def test_ref_cycle_is_400(api_for, alice):
    data = {"steps": [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "x", "a": {"$ref": 2, "path": ".src"}}},
        {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "y", "b": {"$ref": 1, "path": ".src"}}},
    ]}

    response = api_for(alice).post("/api/projects/collections", {"data": data}, format="json")

    assert response.status_code == 400
    assert "cycle" in json.dumps(response.json()).lower()


def test_update_keeps_known_ids_and_numbers_new_steps(api_for, alice):
    client = api_for(alice)
    created = client.post("/api/projects/collections", {"data": _data()}, format="json").json()["data"]
    data = json.loads(json.dumps(created["data"]))
    data["steps"].append({"id": 7, "nodeName": "prompt",
                          "nodePayload": {"prompt": _doc({"type": "component", "component": {"id": data["steps"][0]["id"]}})}})

    response = client.put(f"/api/projects/{created['project_id']}/collections/{created['id']}",
                          {"title": "New title", "data": data}, format="json")

    assert response.status_code == 200
    steps = response.json()["data"]["data"]["steps"]
    assert [s["id"] for s in steps[:3]] == [s["id"] for s in created["data"]["steps"]]
    assert steps[3]["id"] >= 1_000_000 and steps[3]["fromId"] == 7
    history = client.get(f"/api/collections/{created['id']}/history").json()["data"]
    assert [h["action"] for h in history["items"]] == ["created", "updated"]
    assert set(history["items"][1]["changed_fields"]) == {"title", "data"}
    assert history["items"][1]["data_before"] == created["data"]


def test_publish_shows_in_public_list(api_for, alice, bob):
    client = api_for(alice)
    created = client.post("/api/projects/collections", {"title": "Shown", "data": _data()},
                          format="json").json()["data"]
    client.post("/api/projects/collections", {"title": "Hidden"}, format="json")

    published = client.post(f"/api/collections/{created['id']}/publish")
    public = api_for(None).get("/api/collections").json()["data"]
    one = api_for(None).get(f"/api/collections/{created['id']}/public")

    assert published.status_code == 200
    assert published.json()["data"]["status"] == "published"
    assert [c["title"] for c in public["items"]] == ["Shown"]
    assert one.status_code == 200


def test_bob_gets_404_on_alices_collection_and_changes_nothing(api_for, alice, bob):
    created = api_for(alice).post("/api/projects/collections", {"title": "Mine", "data": _data()},
                                  format="json").json()["data"]
    cid, pid = created["id"], created["project_id"]
    client = api_for(bob)
    before_history = CollectionHistory.objects.count()

    responses = [
        client.get(f"/api/collections/{cid}"),
        client.put(f"/api/projects/{pid}/collections/{cid}", {"title": "pwned"}, format="json"),
        client.delete(f"/api/projects/{pid}/collections/{cid}"),
        client.post(f"/api/collections/{cid}/publish"),
        client.post(f"/api/collections/{cid}/archive"),
        client.get(f"/api/collections/{cid}/history"),
        client.get(f"/api/collections/{cid}/files"),
        client.get(f"/api/collections/{cid}/preview"),
        client.put(f"/api/collections/{cid}/preview", {"enabled": True}, format="json"),
        client.post(f"/api/collections/{cid}/remix"),
        client.get(f"/api/collections/{cid}/public"),
        client.get(f"/api/projects/{pid}/collections"),
        client.get(f"/api/projects/{pid}"),
        client.post(f"/api/projects/collections?project_id={pid}", {"title": "into alice's"}, format="json"),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert all(r.json()["data"] is None for r in responses)
    collection = Collection.objects.get(pk=cid)
    assert (collection.title, collection.status, collection.archived) == ("Mine", "draft", False)
    assert CollectionHistory.objects.count() == before_history
    assert Collection.objects.count() == 1


def test_me_collections_lists_all_of_yours(api_for, alice, bob):
    client = api_for(alice)
    project = client.post("/api/projects", {"name": "Second"}, format="json").json()["data"]
    client.post("/api/projects/collections", {"title": "A"}, format="json")
    client.post(f"/api/projects/collections?project_id={project['id']}", {"title": "B"}, format="json")
    api_for(bob).post("/api/projects/collections", {"title": "C"}, format="json")

    mine = client.get("/api/me/collections").json()["data"]

    assert sorted(c["title"] for c in mine["items"]) == ["A", "B"]
    assert mine["total"] == 2


def test_preview_put_snapshots_versions(api_for, alice):
    client = api_for(alice)
    created = client.post("/api/projects/collections", {"data": _data()}, format="json").json()["data"]

    first = client.put(f"/api/collections/{created['id']}/preview",
                       {"enabled": True, "is_remixable": True}, format="json").json()["data"]
    same = client.put(f"/api/collections/{created['id']}/preview", {"max_generations": 5},
                      format="json").json()["data"]

    assert first["version"] == 1
    assert same["version"] == 1  # data unchanged: no new snapshot
    assert same["max_generations"] == 5


def test_preview_get_makes_the_default_settings_once_and_bobs_makes_none(api_for, alice, bob):
    client = api_for(alice)
    created = client.post("/api/projects/collections", {"data": _data()}, format="json").json()["data"]
    url = f"/api/collections/{created['id']}/preview"

    denied = api_for(bob).get(url)
    made_by_bob = CollectionPreview.objects.count()
    first = client.get(url)
    second = client.get(url)

    assert denied.status_code == 404 and made_by_bob == 0
    assert first.status_code == second.status_code == 200
    assert first.json()["data"] == second.json()["data"]
    assert first.json()["data"]["collection_id"] == created["id"]
    assert first.json()["data"]["version"] is None
    assert CollectionPreview.objects.filter(collection_id=created["id"]).count() == 1


def test_remix_of_public_remixable_collection_gets_fresh_ids(api_for, alice, bob):
    client = api_for(alice)
    created = client.post("/api/projects/collections", {"title": "Orig", "data": _data()},
                          format="json").json()["data"]
    client.put(f"/api/collections/{created['id']}/preview", {"is_remixable": True}, format="json")
    client.post(f"/api/collections/{created['id']}/publish")

    remix = api_for(bob).post(f"/api/collections/{created['id']}/remix")

    assert remix.status_code == 201
    steps = remix.json()["data"]["data"]["steps"]
    orig_ids = [s["id"] for s in created["data"]["steps"]]
    assert [s["fromId"] for s in steps] == orig_ids
    assert not set(s["id"] for s in steps) & set(orig_ids)
    assert steps[2]["nodePayload"]["extra"]["$ref"] == steps[1]["id"]


def test_archive_hides_from_public_list(api_for, alice):
    client = api_for(alice)
    created = client.post("/api/projects/collections", {"title": "Gone"}, format="json").json()["data"]
    client.post(f"/api/collections/{created['id']}/publish")

    client.post(f"/api/collections/{created['id']}/archive", {"archived": True}, format="json")

    assert api_for(None).get("/api/collections").json()["data"]["total"] == 0


def test_wrong_types_in_collection_fields_are_400(api_for, alice):
    response = api_for(alice).post("/api/projects/collections", {"editions": "many", "data": []},
                                   format="json")

    assert response.status_code == 400
    assert Collection.objects.count() == 0
