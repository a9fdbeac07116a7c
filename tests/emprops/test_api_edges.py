"""Inputs at the edges of the API (found by tests/test_api_fuzz.py and probes around it): each is
an honest enveloped 4xx, never a 500 or an HTML page, and leaves nothing behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from collections_app.models import Collection, FlatFile, Project
from emprops.accounts.services import api_key_create
from workflows_app.models import UserApiSecret, Workflow


def _assert_enveloped_error(response, status):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["data"] is None
    assert body["error"]
    return body


def test_a_write_to_an_unknown_api_path_is_an_enveloped_404_not_a_csrf_page(db):
    client = APIClient(enforce_csrf_checks=True)

    response = client.post("/api/collections/not-a-uuid/publish", {}, format="json")

    body = _assert_enveloped_error(response, 404)
    assert body["error"] == "Not found: /api/collections/not-a-uuid/publish"


def test_a_204_has_no_body_and_no_content_type(api_for, alice):
    project = api_for(alice).post("/api/projects", {"name": "Gone"}, format="json").json()["data"]

    response = api_for(alice).delete(f"/api/projects/{project['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Type" not in response
    assert not Project.objects.filter(pk=project["id"]).exists()


@pytest.mark.parametrize("path, body", [
    ("/api/auth/token", {"username": "alice", "password": "wrong"}),
    ("/api/auth/token/refresh", {"refresh": "not.a.token"}),
])
def test_bad_credentials_for_a_token_are_a_401_that_names_the_scheme(alice, path, body):
    response = APIClient().post(path, body, format="json")

    _assert_enveloped_error(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("data", [
    {"title": "t", "data": {"steps": [{"id": 1, "nodeName": "prompt",
                                       "nodePayload": {"prompt": "a\u0000b"}}]}},
    {"title": "t", "images": {"\u0000": 1}},
])
def test_a_nul_character_in_a_json_body_is_a_400_and_nothing_is_created(api_for, alice, data):
    response = api_for(alice).post("/api/projects/collections", json.dumps(data),
                                   content_type="application/json")

    body = _assert_enveloped_error(response, 400)
    assert body["error"] == "Text cannot contain NUL (\\u0000) characters."
    assert not Collection.objects.exists()
    assert not Project.objects.exists()


def test_a_nul_character_in_a_multipart_field_is_a_400(api_for, alice):
    upload = SimpleUploadedFile("a.txt", b"hi", "text/plain")

    response = api_for(alice).post("/api/files", {"file": upload, "note": "a\u0000b"},
                                   format="multipart")

    body = _assert_enveloped_error(response, 400)
    assert body["error"] == "Text cannot contain NUL (\\u0000) characters."
    assert not FlatFile.objects.exists()


@pytest.fixture(params=["default", "raised"])
def recursion_limit(request: Any) -> Iterator[int]:
    """The interpreter's recursion limit as it is, and as py_ecc leaves it once imported
    (100,000), where a deep document would overflow the decoder's C stack."""
    import sys

    before = sys.getrecursionlimit()
    if request.param == "raised":
        sys.setrecursionlimit(100_000)
    yield sys.getrecursionlimit()
    sys.setrecursionlimit(before)


def test_json_nested_too_deep_is_a_400_and_nothing_is_created(api_for, alice, recursion_limit):
    deep = "[" * 200_000 + "]" * 200_000
    shallow_enough = {"title": "t", "images": json.loads("[" * 63 + "]" * 63)}

    refused = api_for(alice).post("/api/projects/collections",
                                  '{"title": "t", "images": ' + deep + "}",
                                  content_type="application/json")
    accepted = api_for(alice).post("/api/projects/collections", shallow_enough, format="json")

    body = _assert_enveloped_error(refused, 400)
    assert body["error"] == "JSON nested deeper than 64 levels."
    assert accepted.status_code == 201
    assert Collection.objects.count() == 1


def test_too_many_multipart_fields_is_an_enveloped_400(api_for, alice):
    fields = {f"f{i}": "1" for i in range(1100)}
    fields["file"] = SimpleUploadedFile("a.txt", b"hi", "text/plain")

    response = api_for(alice).post("/api/files", fields, format="multipart")

    _assert_enveloped_error(response, 400)
    assert not FlatFile.objects.exists()


@pytest.mark.parametrize("method, path", [
    ("get", "/api/workflows/name/a%00b"),
    ("put", "/api/secrets/a%00b"),
    ("delete", "/api/secrets/a%00b"),
])
def test_a_nul_in_a_name_in_the_path_is_a_404(api_for, alice, method, path):
    response = getattr(api_for(alice), method)(path, {"value": "sk-x"}, format="json")

    _assert_enveloped_error(response, 404)
    assert not UserApiSecret.objects.exists()


def test_a_nul_in_a_model_name_on_the_staff_surface_is_a_404(staff):
    _, key = api_key_create(user=staff)

    response = APIClient().get(f"/api/staff/{key}/models/name/sdxl%00.safetensors")

    _assert_enveloped_error(response, 404)


def test_an_integer_beyond_the_column_is_a_400_and_changes_nothing(staff):
    _, key = api_key_create(user=staff)
    workflow = Workflow.objects.create(name="sdxl", type="basic", order=3)

    response = APIClient().put(f"/api/staff/{key}/workflows/{workflow.id}",
                               {"order": 2**31, "label": "changed"}, format="json")

    body = _assert_enveloped_error(response, 400)
    assert list(body["details"]) == ["order"]
    workflow.refresh_from_db()
    assert (workflow.order, workflow.label) == (3, "")


def test_a_preview_limit_beyond_the_column_is_a_400(api_for, alice):
    created = api_for(alice).post("/api/projects/collections", {"title": "t"}, format="json")
    collection_id = created.json()["data"]["id"]

    response = api_for(alice).put(f"/api/collections/{collection_id}/preview",
                                  {"max_generations": 2**31}, format="json")

    body = _assert_enveloped_error(response, 400)
    assert list(body["details"]) == ["max_generations"]


@override_settings(ALLOWED_HOSTS=["api.example"])
def test_djangos_own_400_is_enveloped_under_api_only(db):
    api = APIClient().get("/api/me", HTTP_HOST="elsewhere.example")
    admin = APIClient().get("/admin/login/", HTTP_HOST="elsewhere.example")

    _assert_enveloped_error(api, 400)
    assert admin.status_code == 400
    assert admin["Content-Type"].startswith("text/html")
