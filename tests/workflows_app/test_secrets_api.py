"""Users' third-party keys: encrypted at rest, write-only, per user."""

from __future__ import annotations

import pytest

from workflows_app import secrets
from workflows_app.models import UserApiSecret, Workflow

VALUE = "sk-live-very-secret-value-123"


@pytest.fixture
def openai(db):
    return Workflow.objects.create(name="openai_image", type="fetch_api",
                                   output_mime_type="image/png")


def test_put_stores_the_value_encrypted_and_never_returns_it(api_for, alice, openai):
    response = api_for(alice).put("/api/secrets/openai_image", {"value": VALUE}, format="json")

    assert response.status_code == 200
    assert set(response.json()["data"]) == {"workflow_name", "created_at", "updated_at"}
    assert response.json()["data"]["workflow_name"] == "openai_image"
    assert VALUE not in response.content.decode()
    row = UserApiSecret.objects.get(user=alice)
    assert VALUE not in row.encrypted_value
    assert secrets.decrypt(row.encrypted_value) == VALUE


def test_list_gives_names_only(api_for, alice, openai):
    client = api_for(alice)
    client.put("/api/secrets/openai_image", {"value": VALUE}, format="json")

    response = client.get("/api/secrets")

    assert response.status_code == 200
    assert [s["workflow_name"] for s in response.json()["data"]["items"]] == ["openai_image"]
    assert set(response.json()["data"]["items"][0]) == {"workflow_name", "created_at", "updated_at"}
    assert VALUE not in response.content.decode()


def test_put_again_replaces_the_value(api_for, alice, openai):
    client = api_for(alice)
    client.put("/api/secrets/openai_image", {"value": VALUE}, format="json")

    response = client.put("/api/secrets/openai_image", {"value": "second"}, format="json")

    assert response.status_code == 200
    assert UserApiSecret.objects.count() == 1
    assert secrets.decrypt(UserApiSecret.objects.get().encrypted_value) == "second"


def test_delete_then_404(api_for, alice, openai):
    client = api_for(alice)
    client.put("/api/secrets/openai_image", {"value": VALUE}, format="json")

    first = client.delete("/api/secrets/openai_image")
    second = client.delete("/api/secrets/openai_image")

    assert first.status_code == 204
    assert second.status_code == 404
    assert second.json()["error"] == "Secret not found."
    assert not UserApiSecret.objects.exists()


def test_others_cannot_see_or_delete_your_secret(api_for, alice, bob, openai):
    api_for(alice).put("/api/secrets/openai_image", {"value": VALUE}, format="json")

    listed = api_for(bob).get("/api/secrets")
    deleted = api_for(bob).delete("/api/secrets/openai_image")

    assert listed.json()["data"]["items"] == []
    assert deleted.status_code == 404
    row = UserApiSecret.objects.get()
    assert (row.user_id, secrets.decrypt(row.encrypted_value)) == (alice.id, VALUE)


def test_unknown_or_hidden_workflow_is_404_and_stores_nothing(api_for, alice, openai):
    openai.display = False
    openai.save()

    hidden = api_for(alice).put("/api/secrets/openai_image", {"value": VALUE}, format="json")
    unknown = api_for(alice).put("/api/secrets/nope", {"value": VALUE}, format="json")

    assert (hidden.status_code, unknown.status_code) == (404, 404)
    assert VALUE not in hidden.content.decode() + unknown.content.decode()
    assert not UserApiSecret.objects.exists()


def test_empty_value_is_400_and_the_error_does_not_echo_input(api_for, alice, openai):
    response = api_for(alice).put("/api/secrets/openai_image", {"value": ""}, format="json")

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["value"]
    assert not UserApiSecret.objects.exists()


def test_anonymous_is_401(client, openai):
    response = client.put("/api/secrets/openai_image", {"value": VALUE},
                          content_type="application/json")

    assert response.status_code == 401
    assert not UserApiSecret.objects.exists()
