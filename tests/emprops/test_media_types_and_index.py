"""Honest edges of the JSON API: a body that is not JSON is a 415 on every endpoint (read or not),
bodyless commands and uploads keep working, `/api` answers with an index, `/admin` redirects, and
a workflow's 404 names the built-in nodes."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from collections_app.models import Collection, FlatFile, Project
from emprops.accounts.services import api_key_create
from jobs_app.models import Job, JobHistory
from workflows_app.models import Workflow

BUILTIN_NODES = ["js", "p5", "p52vid", "prompt"]


def _assert_415(response, content_type: str) -> None:
    assert response.status_code == 415, response.content[:300]
    assert response.json() == {
        "data": None,
        "error": f'Unsupported media type "{content_type}" in request: send application/json.',
        "details": {"accepted": ["application/json"]},
        "request_id": response["X-Request-ID"],
    }


@pytest.mark.parametrize(("body", "content_type"), [
    ("title=Hello", "application/x-www-form-urlencoded"),  # curl -d's default
    ('{"title": "Hello"}', "text/plain"),
    ("--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),
])
def test_a_body_that_is_not_json_is_a_415_and_creates_nothing(api_for, alice, body, content_type):
    response = api_for(alice).post("/api/projects/collections", body, content_type=content_type)

    _assert_415(response, content_type.split(";")[0])
    assert not Collection.objects.exists()
    assert not Project.objects.exists()


def test_a_form_body_to_a_command_that_reads_no_body_is_a_415_and_changes_nothing(api_for, alice):
    job = Job.objects.create(user=alice, name="running", status=Job.Status.PROCESSING)

    response = api_for(alice).post(f"/api/jobs/{job.id}/cancel", "reason=bored",
                                   content_type="application/x-www-form-urlencoded")

    _assert_415(response, "application/x-www-form-urlencoded")
    job.refresh_from_db()
    assert job.status == Job.Status.PROCESSING
    assert not JobHistory.objects.filter(job=job).exists()


def test_a_body_without_a_content_type_is_a_415(api_for, alice):
    project = Project.objects.create(user=alice, name="Before")

    response = api_for(alice).generic("PUT", f"/api/projects/{project.id}", b'{"name": "After"}',
                                      content_type="")

    _assert_415(response, "(none)")
    project.refresh_from_db()
    assert project.name == "Before"


def test_the_staff_surface_refuses_a_form_body_too(staff):
    _, key = api_key_create(user=staff)

    response = APIClient().post(f"/api/staff/{key}/workflows", "name=x&type=basic",
                                content_type="application/x-www-form-urlencoded")

    _assert_415(response, "application/x-www-form-urlencoded")
    assert not Workflow.objects.filter(name="x").exists()


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_bodyless_command_still_works_whatever_its_content_type(api_for, alice, content_type):
    job = Job.objects.create(user=alice, name="running", status=Job.Status.PROCESSING)
    extra = {"content_type": content_type} if content_type else {}

    response = api_for(alice).post(f"/api/jobs/{job.id}/cancel", **extra)

    assert response.status_code == 200, response.content[:300]
    assert response.json()["data"]["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_json_bodies_and_multipart_uploads_still_work(api_for, alice, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    client = api_for(alice)

    created = client.post("/api/projects", '{"name": "P"}',
                          content_type="application/json; charset=utf-8")
    uploaded = client.post("/api/files", {"file": SimpleUploadedFile("a.txt", b"hello\n")},
                           format="multipart")
    json_to_the_upload = client.post("/api/files", {"file": "a.txt"}, format="json")

    assert created.status_code == 201
    assert Project.objects.get(user=alice).name == "P"
    assert uploaded.status_code == 201
    assert FlatFile.objects.filter(user=alice).count() == 1
    assert json_to_the_upload.status_code == 415
    assert json_to_the_upload.json()["error"] == \
        'Unsupported media type "application/json" in request.'


@pytest.mark.parametrize("path", ["/api", "/api/"])
def test_the_api_index_links_the_docs_and_schema(db, path):
    response = APIClient().get(path)

    assert response.status_code == 200
    assert response.json() == {"data": {
        "name": "EmProps Collection Generation API", "version": "1.0.0",
        "docs": "http://testserver/api/docs", "schema": "http://testserver/api/schema",
        "admin": "http://testserver/admin/",
    }, "error": None}


def test_the_api_index_is_in_the_schema_once(db):
    paths = APIClient().get("/api/schema", {"format": "json"}).json()["paths"]

    assert "/api" in paths
    assert "/api/" not in paths
    assert set(paths["/api"]) == {"get"}


def test_admin_without_a_slash_redirects_to_admin(db):
    response = APIClient().get("/admin")

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_an_unknown_workflow_by_name_is_a_404_naming_the_built_in_nodes(api_for, alice):
    response = api_for(alice).get("/api/workflows/name/nope")

    assert response.status_code == 404
    assert response.json() == {"data": None, "error": "Workflow not found.",
                               "details": {"name": ["No such workflow."],
                                           "builtin_nodes": BUILTIN_NODES},
                               "request_id": response["X-Request-ID"]}


def test_generating_with_an_unknown_workflow_is_a_404_naming_the_built_in_nodes(api_for, alice):
    response = api_for(alice).post("/api/collections/generate",
                                   {"workflow_name": "nope", "inputs": {}}, format="json")

    assert response.status_code == 404
    assert response.json()["details"] == {"workflow_name": ["No such workflow."],
                                          "builtin_nodes": BUILTIN_NODES}
    assert not Collection.objects.exists()
    assert not Job.objects.exists()
