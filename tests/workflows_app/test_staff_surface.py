"""The staff CLI's surface under /api/staff/<staff key>/: key in the path, full rows, envelope."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
from rest_framework.test import APIClient

from collections_app.services import collection_create
from emprops.accounts.services import api_key_create, api_key_revoke
from tests.peers.comfyui_server import ComfyTestServer
from workflows_app.models import AIModel, CustomNode, FormConfig, Server, Workflow


@pytest.fixture
def staff_key(staff):
    return api_key_create(user=staff, name="ecli")[1]


@pytest.fixture
def cli(staff_key):
    """The tool sends no credentials: only the base URL carries the key."""
    client = APIClient()

    def call(method, path, body=None):
        return getattr(client, method)(f"/api/staff/{staff_key}{path}", body, format="json")

    return call


@pytest.fixture
def sdxl(db):
    return Workflow.objects.create(
        name="sdxl", label="SDXL", type="comfy_workflow", output_mime_type="image/png",
        data={"form": {"fields": []}, "workflow": {"1": {}}, "output_node_id": "9"})


def _assert_plain_404(response, key):
    assert response.status_code == 404
    body = response.json()
    assert (body["data"], body["error"]) == (None, "Not found.")
    assert key not in response.content.decode()


@pytest.mark.parametrize("who", ["unknown", "consumer", "revoked"])
def test_a_key_that_is_not_an_active_staff_key_is_a_plain_404(db, alice, staff, sdxl, who):
    if who == "unknown":
        key = "ek_" + "x" * 43
    elif who == "consumer":
        key = api_key_create(user=alice)[1]
    else:
        row, key = api_key_create(user=staff)
        api_key_revoke(user=staff, key_id=row.id)
    client = APIClient()

    get = client.get(f"/api/staff/{key}/workflows/name/sdxl")
    put = client.put(f"/api/staff/{key}/workflows/{sdxl.id}",
                     {"display": False, "data": {"output_node_id": "1"}}, format="json")
    delete = client.delete(f"/api/staff/{key}/workflows/{sdxl.id}")

    for response in (get, put, delete):
        _assert_plain_404(response, key)
    sdxl.refresh_from_db()
    assert (sdxl.display, sdxl.data["output_node_id"]) == (True, "9")


def test_unknown_paths_under_the_prefix_do_not_echo_the_key(cli, staff_key):
    _assert_plain_404(cli("get", "/no/such/thing"), staff_key)


def test_get_workflow_by_name_is_the_full_row(cli, sdxl):
    response = cli("get", "/workflows/name/sdxl")

    assert response.status_code == 200
    row = response.json()["data"]
    assert row["id"] == str(sdxl.id)
    assert row["data"] == sdxl.data
    assert (row["type"], row["display"], row["server_id"]) == ("comfy_workflow", True, None)


def test_hidden_workflows_are_visible_to_the_tool(cli, sdxl):
    sdxl.display = False
    sdxl.save()

    assert cli("get", "/workflows/name/sdxl").status_code == 200


def test_create_workflow_with_server_by_name(cli, db):
    server = Server.objects.create(name="gpu-1", url="http://127.0.0.1:8188")
    AIModel.objects.create(name="sdxl_base.safetensors")

    response = cli("post", "/workflows", {
        "name": "flux", "label": "Flux", "type": "comfy_workflow", "output_mime_type": "image/png",
        "data": {"form": {"fields": []}}, "server": "gpu-1", "display": False,
        "models": ["sdxl_base.safetensors"]})

    assert response.status_code == 201
    row = response.json()["data"]
    assert (row["name"], row["server_id"], row["server_name"], row["display"]) == (
        "flux", str(server.id), "gpu-1", False)
    assert [m["name"] for m in row["models"]] == ["sdxl_base.safetensors"]
    assert Workflow.objects.get(name="flux").server_id == server.id


def test_create_duplicate_name_is_409_and_changes_nothing(cli, sdxl):
    response = cli("post", "/workflows", {"name": "sdxl", "type": "basic", "data": {"x": 1}})

    assert response.status_code == 409
    sdxl.refresh_from_db()
    assert (sdxl.type, "x" in sdxl.data) == ("comfy_workflow", False)


def test_create_executable_without_output_mime_type_is_400(cli, db):
    response = cli("post", "/workflows", {"name": "flux", "type": "fetch_api"})

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["output_mime_type"]
    assert not Workflow.objects.filter(name="flux").exists()


def test_update_merges_data_key_by_key_and_sets_fields(cli, sdxl):
    server = Server.objects.create(name="gpu-2", url="http://127.0.0.1:8189")

    response = cli("put", f"/workflows/{sdxl.id}", {
        "data": {"workflow": {"2": {"class_type": "SaveImage"}}, "credits_script": "x"},
        "display": False, "label": "SDXL 1.0", "output_mime_type": "image/webp",
        "server": str(server.id)})

    assert response.status_code == 200
    sdxl.refresh_from_db()
    assert sdxl.data == {"form": {"fields": []}, "workflow": {"2": {"class_type": "SaveImage"}},
                         "output_node_id": "9", "credits_script": "x"}
    assert (sdxl.display, sdxl.label, sdxl.output_mime_type, sdxl.server_id) == (
        False, "SDXL 1.0", "image/webp", server.id)
    assert response.json()["data"]["data"] == sdxl.data


def test_update_with_unknown_server_is_400_and_changes_nothing(cli, sdxl):
    response = cli("put", f"/workflows/{sdxl.id}", {"label": "new", "server": "nope"})

    assert response.status_code == 400
    assert response.json()["details"] == {"server": ["No such server."]}
    sdxl.refresh_from_db()
    assert sdxl.label == "SDXL"


def test_delete_workflow(cli, sdxl):
    response = cli("delete", f"/workflows/{sdxl.id}")

    assert response.status_code == 204
    assert not Workflow.objects.filter(pk=sdxl.pk).exists()
    assert cli("delete", f"/workflows/{sdxl.id}").status_code == 404


def test_servers(cli, db):
    Server.objects.create(name="gpu-1", url="http://127.0.0.1:8188")

    response = cli("get", "/servers")

    assert response.status_code == 200
    assert [(s["name"], s["url"]) for s in response.json()["data"]["items"]] == [
        ("gpu-1", "http://127.0.0.1:8188")]


def test_form_configs_crud(cli, db):
    created = cli("post", "/form-configs", {"name": "samplers", "data": [{"value": "euler"}]})
    fc_id = created.json()["data"]["id"]
    by_name = cli("get", "/form-configs/name/samplers")
    updated = cli("put", f"/form-configs/{fc_id}", {"data": [{"value": "dpmpp"}]})
    listed = cli("get", "/form-configs")
    duplicate = cli("post", "/form-configs", {"name": "samplers", "data": []})
    deleted = cli("delete", f"/form-configs/{fc_id}")

    assert created.status_code == 201
    assert by_name.json()["data"]["data"] == [{"value": "euler"}]
    assert updated.json()["data"]["data"] == [{"value": "dpmpp"}]
    assert [f["name"] for f in listed.json()["data"]["items"]] == ["samplers"]
    assert duplicate.status_code == 409
    assert deleted.status_code == 204
    assert not FormConfig.objects.exists()
    assert cli("get", "/form-configs/name/samplers").status_code == 404


def test_models_and_custom_nodes(cli, db):
    model = cli("post", "/models", {"name": "vae/sdxl_vae.safetensors", "save_to": "vae",
                                    "is_auth_req": True})
    node = cli("post", "/custom-nodes", {"name": "ComfyUI-GGUF",
                                         "download_url": "https://example.test/gguf.git"})

    assert (model.status_code, node.status_code) == (201, 201)
    by_name = cli("get", "/models/name/vae/sdxl_vae.safetensors")
    assert by_name.json()["data"]["save_to"] == "vae"
    assert [m["name"] for m in cli("get", "/models").json()["data"]["items"]] == [
        "vae/sdxl_vae.safetensors"]
    assert [n["name"] for n in cli("get", "/custom-nodes").json()["data"]["items"]] == [
        "ComfyUI-GGUF"]
    assert CustomNode.objects.get().download_url == "https://example.test/gguf.git"
    assert cli("get", "/models/name/nothing").status_code == 404


def test_collections_lists_every_users_collections(cli, alice, bob):
    collection_create(user=alice, fields={"title": "A"})
    collection_create(user=bob, fields={"title": "B"})

    response = cli("get", "/collections")

    assert response.status_code == 200
    assert sorted(c["title"] for c in response.json()["data"]["items"]) == ["A", "B"]


def test_collections_refuses_a_consumer_key(alice):
    key = api_key_create(user=alice)[1]

    _assert_plain_404(APIClient().get(f"/api/staff/{key}/collections"), key)


# ---- servers: register and check --------------------------------------------------------------


@pytest.fixture(scope="module")
def comfy():
    with ComfyTestServer() as server:
        yield server


def test_register_a_server(cli, db):
    response = cli("post", "/servers", {"name": "gpu-1", "url": "http://127.0.0.1:8188/"})

    assert response.status_code == 201
    row = response.json()["data"]
    assert (row["name"], row["url"]) == ("gpu-1", "http://127.0.0.1:8188")
    assert Server.objects.get().url == "http://127.0.0.1:8188"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "gpu-1", "url": "ftp://127.0.0.1/"}, "url"),
    ({"name": "gpu-1", "url": "127.0.0.1:8188"}, "url"),
    ({"name": "gpu-1"}, "url"),
    ({"url": "http://127.0.0.1:8188"}, "name"),
])
def test_a_bad_server_is_400_and_nothing_is_registered(cli, db, body, field):
    response = cli("post", "/servers", body)

    assert response.status_code == 400
    assert list(response.json()["details"]) == [field]
    assert Server.objects.count() == 0


def test_a_taken_server_name_is_409_and_changes_nothing(cli, db):
    Server.objects.create(name="gpu-1", url="http://127.0.0.1:8188")

    response = cli("post", "/servers", {"name": "gpu-1", "url": "http://127.0.0.1:9999"})

    assert response.status_code == 409
    assert list(Server.objects.values_list("url", flat=True)) == ["http://127.0.0.1:8188"]


def test_check_a_server_reports_its_version_and_devices(cli, db, comfy):
    Server.objects.create(name="gpu-1", url=comfy.url)

    response = cli("post", "/servers/gpu-1/check")

    assert response.status_code == 200
    result = response.json()["data"]
    assert result["ok"] is True
    assert (result["name"], result["url"], result["comfyui_version"]) == (
        "gpu-1", comfy.url, "0.3.64")
    assert result["devices"] == [{"name": "cpu", "type": "cpu", "vram_total": 16 * 2**30,
                                  "vram_free": 8 * 2**30}]
    assert ("GET", "/system_stats") in comfy.requests


def test_check_a_server_that_does_not_answer_says_why(cli, db):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    Server.objects.create(name="gone", url=f"http://127.0.0.1:{port}")

    response = cli("post", "/servers/gone/check")

    assert response.status_code == 200
    result = response.json()["data"]
    assert (result["ok"], result["error"].split(":")[0]) == (False, "Could not connect")


def test_a_server_redirecting_elsewhere_is_stopped_by_the_ssrf_guard(cli, db, comfy):
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"{comfy.url}/system_stats")
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect) as redirector:
        threading.Thread(target=redirector.serve_forever, daemon=True).start()
        Server.objects.create(name="bouncer", url=f"http://127.0.0.1:{redirector.server_port}")
        before = len(comfy.requests)

        result = cli("post", "/servers/bouncer/check").json()["data"]
        redirector.shutdown()

    assert result["ok"] is False
    assert result["error"].startswith("Refused by the SSRF guard: refused '127.0.0.1'")
    assert len(comfy.requests) == before  # the registered server is trusted, not its redirects


def test_check_an_unknown_server_is_404(cli, db):
    response = cli("post", "/servers/nope/check")

    assert response.status_code == 404
    assert response.json()["error"] == "Server not found."


def test_a_consumer_key_cannot_register_or_check_servers(alice, db):
    Server.objects.create(name="gpu-1", url="http://127.0.0.1:8188")
    key = api_key_create(user=alice)[1]
    client = APIClient()

    created = client.post(f"/api/staff/{key}/servers", {"name": "x", "url": "http://127.0.0.1:1"},
                          format="json")
    checked = client.post(f"/api/staff/{key}/servers/gpu-1/check")

    _assert_plain_404(created, key)
    _assert_plain_404(checked, key)
    assert list(Server.objects.values_list("name", flat=True)) == ["gpu-1"]
