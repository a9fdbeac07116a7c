"""Input uploads: sniffed from the bytes, size-limited, stored per user, readable only by you."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from collections_app.models import FlatFile


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.CDN_URL = "https://cdn.test"


def _png(size=(4, 3)):
    buf = io.BytesIO()
    Image.new("RGB", size, (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _upload(client, content, name="in.bin", content_type="application/octet-stream"):
    return client.post("/api/files", {"file": SimpleUploadedFile(name, content, content_type)},
                       format="multipart")


def test_upload_png_is_stored_under_the_users_folder(api_for, alice):
    content = _png()

    response = _upload(api_for(alice), content, name="photo.dat", content_type="text/plain")

    assert response.status_code == 201
    data = response.json()["data"]
    assert (data["mime_type"], data["name"], data["rel_type"], data["user_id"]) == (
        "image/png", "photo.dat", "upload", str(alice.id))
    row = FlatFile.objects.get(pk=data["id"])
    assert re.fullmatch(rf"uploads/{alice.id}/[0-9a-f]{{32}}\.png", row.storage_key)
    assert data["url"] == f"https://cdn.test/{row.storage_key}"
    with default_storage.open(row.storage_key, "rb") as fh:
        assert fh.read() == content


@pytest.mark.parametrize(("content", "mime"), [
    (b"hello world\n", "text/plain"),
    ("Grüße, 世界".encode(), "text/plain"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "video/webm"),
])
def test_other_kinds_are_sniffed(api_for, alice, content, mime):
    response = _upload(api_for(alice), content)

    assert response.status_code == 201
    assert response.json()["data"]["mime_type"] == mime


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG header over garbage
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00",  # an executable
    b"\x00\x01\x02\x03\xff\xfe",
])
def test_unsupported_or_unreadable_content_is_415_and_stores_nothing(api_for, alice, content):
    response = _upload(api_for(alice), content, name="x.png", content_type="image/png")

    assert response.status_code == 415
    assert response.json()["data"] is None
    assert not FlatFile.objects.exists()
    assert not default_storage.exists(f"uploads/{alice.id}")


def test_file_over_the_limit_is_413_and_stores_nothing(api_for, alice, settings):
    settings.MAX_UPLOAD_BYTES = 1000

    response = _upload(api_for(alice), b"a" * 1001)

    assert response.status_code == 413
    assert response.json()["details"]["limit"] == 1000
    assert not FlatFile.objects.exists()


def test_body_far_over_the_limit_is_refused_before_parsing(api_for, alice, settings):
    settings.MAX_UPLOAD_BYTES = 10

    response = _upload(api_for(alice), b"a" * 200_000)

    assert response.status_code == 413
    assert response.json()["data"] is None
    assert not FlatFile.objects.exists()


def test_missing_file_is_400(api_for, alice):
    response = api_for(alice).post("/api/files", {}, format="multipart")

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["file"]


def test_list_and_detail_show_only_your_files(api_for, alice, bob):
    mine = _upload(api_for(alice), b"mine").json()["data"]
    theirs = _upload(api_for(bob), b"theirs").json()["data"]

    listed = api_for(alice).get("/api/files")
    own = api_for(alice).get(f"/api/files/{mine['id']}")
    other = api_for(alice).get(f"/api/files/{theirs['id']}")

    assert [f["id"] for f in listed.json()["data"]["items"]] == [mine["id"]]
    assert listed.json()["data"]["total"] == 1
    assert own.json()["data"] == mine
    assert other.status_code == 404
    assert other.json()["error"] == "File not found."


def test_anonymous_upload_is_401(client, db):
    response = client.post("/api/files", {"file": SimpleUploadedFile("a.txt", b"hi")})

    assert response.status_code == 401
    assert not FlatFile.objects.exists()
