"""The OpenAPI schema at /api/schema documents the statuses the API really answers, each error
with the Error envelope, and each DELETE with the response it really gives (a 204 without a body,
or a 200 with the enveloped object). tests/test_api_fuzz.py checks the same for fuzzed inputs
(status code conformance); here each status is provoked on purpose."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from emprops.accounts.models import UserApiKey
from emprops.accounts.services import api_key_create

ERROR = {"$ref": "#/components/schemas/Error"}
EVERYWHERE = {"400", "401", "404", "413", "429"}


@pytest.fixture
def schema(db: Any) -> dict[str, Any]:
    response = APIClient().get("/api/schema", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in schema["paths"].items()
            for method, op in item.items() if isinstance(op, dict) and "responses" in op]


def _operation_for(schema: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    for path, item in schema["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$"
        if re.match(pattern, url) and method in item:
            return item[method]
    raise AssertionError(f"{method.upper()} {url} is not in the schema")


def _assert_documented_error(schema: dict[str, Any], method: str, url: str, status: int) -> None:
    documented = _operation_for(schema, method, url)["responses"]
    assert str(status) in documented, f"{method.upper()} {url}: {status} is not documented"
    assert documented[str(status)]["content"]["application/json"]["schema"] == ERROR


def test_every_operation_documents_its_errors_with_the_error_envelope(schema):
    missing = []
    for path, method, op in _operations(schema):
        expected = set(EVERYWHERE)
        if path == "/api/jobs/{job_id}/events":  # a plain stream view: no body, no throttle
            expected -= {"400", "429"}
        if method in ("post", "put", "patch"):
            expected.add("415")
        for code in sorted(expected - set(op["responses"])):
            missing.append(f"{method.upper()} {path}: {code}")
        for code, response in op["responses"].items():
            if code.startswith("4") and response["content"]["application/json"]["schema"] != ERROR:
                missing.append(f"{method.upper()} {path}: {code} without the Error body")
    assert not missing, "\n".join(missing)


def test_staff_and_domain_statuses_are_documented_where_they_are_answered(schema):
    def codes(method: str, path: str) -> set[str]:
        return set(schema["paths"][path][method]["responses"])

    assert "403" in codes("post", "/api/credits/grants")
    assert "403" in codes("post", "/api/workflows/{workflow_id}/test")
    assert "403" in codes("post", "/api/templates")
    assert "403" not in codes("get", "/api/me")
    assert {"402", "409", "422"} <= codes("post", "/api/collections/generate")
    assert {"402", "409", "422"} <= codes("post", "/api/collections/generate/batch")
    assert {"402", "409", "422"} <= codes("post", "/api/collections/{collection_id}/generations")
    assert "409" in codes("post", "/api/jobs/{job_id}/cancel")
    assert {"402", "409"} <= codes("post", "/api/jobs/{job_id}/retry")
    assert "409" in codes("post", "/api/schedules/{schedule_id}/pause")


def test_statuses_provoked_for_real_are_documented(schema, api_for, alice):
    client = api_for(alice)
    project = client.post("/api/projects", {"name": "P"}, format="json").json()["data"]
    cases = [
        ("get", "/api/me", APIClient().get("/api/me")),
        ("get", "/api/me", APIClient().get("/api/me", HTTP_X_API_KEY="ek_not-a-key")),
        ("post", "/api/credits/grants", client.post(
            "/api/credits/grants", {"user_id": str(alice.id), "amount": "5"}, format="json")),
        ("post", "/api/templates", client.post("/api/templates", {
            "name": "t", "data": {}, "is_public": True}, format="json")),
        ("get", f"/api/projects/{alice.id}", client.get(f"/api/projects/{alice.id}")),
        ("post", "/api/projects", client.post("/api/projects", "name=x",
                                              content_type="text/plain")),
        ("put", f"/api/projects/{project['id']}", client.put(
            f"/api/projects/{project['id']}", "<name/>", content_type="application/xml")),
        ("post", "/api/projects", client.post("/api/projects", {"name": "x" * 3_000_000},
                                              format="json")),
        ("post", "/api/projects", client.post("/api/projects", {"name": ""}, format="json")),
    ]

    statuses = [response.status_code for _, _, response in cases]

    assert statuses == [401, 401, 403, 403, 404, 415, 415, 413, 400]
    for (method, url, response) in cases:
        assert response.json()["data"] is None
        _assert_documented_error(schema, method, url, response.status_code)


def test_delete_operations_document_the_response_they_really_give(schema, api_for, alice):
    client = api_for(alice)
    key, _ = api_key_create(user=alice, name="spare")
    project = client.post("/api/projects", {"name": "Gone"}, format="json").json()["data"]

    revoked = client.delete(f"/api/api-keys/{key.id}")
    deleted = client.delete(f"/api/projects/{project['id']}")

    assert revoked.status_code == 200
    assert revoked.json() == {"data": {**revoked.json()["data"], "is_active": False},
                              "error": None}
    assert not UserApiKey.objects.get(pk=key.pk).is_active
    revoke_doc = _operation_for(schema, "delete", f"/api/api-keys/{key.id}")["responses"]
    assert sorted(c for c in revoke_doc if c.startswith("2")) == ["200"]
    body = revoke_doc["200"]["content"]["application/json"]["schema"]
    assert body["required"] == ["data", "error"]
    assert body["properties"]["data"] == {"$ref": "#/components/schemas/ApiKeyOutput"}
    assert deleted.status_code == 204 and deleted.content == b""
    delete_doc = _operation_for(schema, "delete", f"/api/projects/{project['id']}")["responses"]
    assert sorted(c for c in delete_doc if c.startswith("2")) == ["204"]
    assert "content" not in delete_doc["204"]


def test_every_delete_documents_one_success_and_a_body_only_with_200(schema):
    for path, method, op in _operations(schema):
        if method != "delete":
            continue
        successes = [c for c in op["responses"] if c.startswith("2")]
        assert len(successes) == 1, (path, successes)
        documented = op["responses"][successes[0]]
        if successes[0] == "204":
            assert "content" not in documented, path
        else:
            assert documented["content"]["application/json"]["schema"]["required"] == [
                "data", "error"], path
