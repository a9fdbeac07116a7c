"""The envelope, statuses, auth (API keys and JWTs), /api/me, API keys and rate limits."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from emprops.accounts.models import CreditsHistory, User, UserApiKey
from emprops.accounts.services import api_key_create, hash_key
from emprops.authentication import issue_tokens


def test_unknown_api_path_is_an_enveloped_404(db):
    response = APIClient().get("/api/no/such/thing")

    assert response.status_code == 404
    body = response.json()
    assert body["data"] is None
    assert body["error"].startswith("Not found")
    assert body["request_id"] == response["X-Request-ID"]


def test_no_credentials_is_401_with_www_authenticate(db):
    response = APIClient().get("/api/me")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["data"] is None


def test_revoked_key_is_401(alice):
    key, raw = api_key_create(user=alice)
    UserApiKey.objects.filter(pk=key.pk).update(is_active=False)

    response = APIClient().get("/api/me", HTTP_X_API_KEY=raw)

    assert response.status_code == 401


def test_expired_key_is_401(alice):
    _, raw = api_key_create(user=alice, expires_at=timezone.now() - timedelta(seconds=1))

    assert APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_me_shows_free_credits_granted_through_the_ledger(api_for, alice):
    response = api_for(alice).get("/api/me")

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == str(alice.id)
    assert data["balances"] == {"rental": "0.0000", "permanent": "10.0000"}
    assert data["held"] == "0"
    history = CreditsHistory.objects.get(user=alice)
    assert (history.flow, history.amount, history.credit_type) == ("in", 10, "permanent")


def test_api_key_is_shown_once_and_stored_as_sha256(api_for, alice):
    client = api_for(alice)

    created = client.post("/api/api-keys", {"name": "ci"}, format="json")

    assert created.status_code == 201
    raw = created.json()["data"]["key"]
    assert raw.startswith("ek_")
    stored = UserApiKey.objects.get(pk=created.json()["data"]["id"])
    assert stored.key_hash == hash_key(raw)
    listed = client.get("/api/api-keys").json()["data"]
    assert listed["total"] == 2
    assert all("key" not in item for item in listed["items"])
    revoked = client.delete(f"/api/api-keys/{stored.id}")
    assert revoked.status_code == 200
    assert APIClient().get("/api/me", HTTP_X_API_KEY=raw).status_code == 401


def test_bob_cannot_revoke_alices_key(api_for, alice, bob):
    key, _ = api_key_create(user=alice)

    response = api_for(bob).delete(f"/api/api-keys/{key.id}")

    assert response.status_code == 404
    key.refresh_from_db()
    assert key.is_active


def test_hs256_token_with_unknown_sub_provisions_a_user_with_free_credits(db, settings):
    token = jwt.encode({"sub": "auth0|12345", "exp": int(time.time()) + 60},
                       settings.JWT_SIGNING_KEY, algorithm="HS256")
    client = APIClient()

    first = client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    second = client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert first.status_code == 200
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    user = User.objects.get(external_sub="auth0|12345")
    assert first.json()["data"]["balances"]["permanent"] == "10.0000"
    assert CreditsHistory.objects.filter(user=user).count() == 1


def test_token_signed_with_another_key_is_401(db):
    token = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "not-the-key-but-long-enough-for-hs256-0123456789", algorithm="HS256")

    response = APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 401
    assert not User.objects.filter(external_sub="x").exists()


def test_rs256_token_is_accepted_with_the_public_key(db, settings):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings.JWT_PUBLIC_KEY = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    token = jwt.encode({"sub": "idp-user", "exp": int(time.time()) + 60}, private, algorithm="RS256")

    response = APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    assert User.objects.filter(external_sub="idp-user").exists()


def test_password_login_issues_tokens_whose_sub_is_the_user_id(alice):
    alice.set_password("s3cret-pw")
    alice.save()
    client = APIClient()

    tokens = client.post("/api/auth/token", {"username": "alice", "password": "s3cret-pw"},
                         format="json").json()["data"]
    me = client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    refreshed = client.post("/api/auth/token/refresh", {"refresh": tokens["refresh"]},
                            format="json")

    assert me.json()["data"]["id"] == str(alice.id)
    assert refreshed.status_code == 200
    assert client.post("/api/auth/token", {"username": "alice", "password": "nope"},
                       format="json").status_code == 401
    # a refresh token is not an access token
    assert client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {tokens['refresh']}").status_code == 401


@pytest.mark.parametrize("sub", ["idp-user", "12345", "00000000-0000-0000-0000-000000000000"])
def test_a_refresh_token_whose_sub_names_no_local_user_is_401(db, settings, sub):
    # given: a validly signed refresh token for something that is not a local account's id
    token = jwt.encode({"sub": sub, "type": "refresh", "exp": int(time.time()) + 60},
                       settings.JWT_SIGNING_KEY, algorithm="HS256")
    users = User.objects.count()

    response = APIClient().post("/api/auth/token/refresh", {"refresh": token}, format="json")

    assert response.status_code == 401
    assert response.json()["error"] == "Unknown user."
    assert User.objects.count() == users


def test_an_inactive_users_refresh_token_is_401(alice):
    tokens = issue_tokens(user=alice)
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    response = APIClient().post("/api/auth/token/refresh", {"refresh": tokens["refresh"]},
                                format="json")

    assert response.status_code == 401
    assert response.json()["error"] == "Unknown user."


def test_malformed_json_is_an_enveloped_400(api_for, alice):
    response = api_for(alice).generic("POST", "/api/projects", "{not json",
                                      content_type="application/json")

    assert response.status_code == 400
    assert response.json()["data"] is None
    assert "JSON" in response.json()["error"]


def test_oversized_body_is_an_enveloped_413_before_parsing(api_for, alice, settings):
    settings.MAX_BODY_BYTES = 1000

    response = api_for(alice).generic("POST", "/api/projects", "x" * 2000,
                                      content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"].startswith("Request body too large")


def test_rate_limit_answers_429_with_retry_after(api_for, alice):
    rates = {"user": "3/min", "anon": "3/min"}
    with override_settings(REST_FRAMEWORK={**__import__("django.conf").conf.settings.REST_FRAMEWORK,
                                           "DEFAULT_THROTTLE_RATES": rates}):
        from rest_framework.settings import api_settings
        from rest_framework.throttling import SimpleRateThrottle

        api_settings.reload()
        SimpleRateThrottle.THROTTLE_RATES = rates
        try:
            client = api_for(alice)
            statuses = [client.get("/api/me").status_code for _ in range(4)]
            last = client.get("/api/me")
        finally:
            SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    api_settings.reload()
    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES

    assert statuses == [200, 200, 200, 429]
    assert last.status_code == 429
    assert int(last["Retry-After"]) >= 1
    assert last.json()["data"] is None


def test_staff_grant_is_a_ledger_row_and_never_goes_below_zero(api_for, staff, alice):
    client = api_for(staff)

    granted = client.post("/api/credits/grants", {"user_id": str(alice.id), "amount": "5",
                                                  "credit_type": "rental", "comment": "promo"},
                          format="json")
    too_much = client.post("/api/credits/grants", {"user_id": str(alice.id), "amount": "-6",
                                                   "credit_type": "rental"}, format="json")

    assert granted.status_code == 201
    assert too_much.status_code == 400
    me = api_for(alice).get("/api/me").json()["data"]
    assert me["balances"] == {"rental": "5.0000", "permanent": "10.0000"}


def test_non_staff_cannot_grant(api_for, alice):
    response = api_for(alice).post("/api/credits/grants", {"user_id": str(alice.id),
                                                           "amount": "5"}, format="json")

    assert response.status_code == 403
    assert CreditsHistory.objects.filter(user=alice).count() == 1


def test_schema_and_docs_are_served(db):
    client = APIClient()

    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = client.get("/api/docs")

    assert schema.status_code == 200
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.parametrize("path", ["/api/me", "/api/projects"])
def test_request_id_is_echoed(api_for, alice, path):
    response = api_for(alice).get(path, HTTP_X_REQUEST_ID="abc-123")

    assert response["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ("x" * 256, "longer than 255"),
        ("a\x00b", "control characters"),
        ("", "non-empty string"),
        ("   ", "non-empty string"),
    ],
)
@pytest.mark.parametrize("path", ["/api/me", "/api/jobs", "/api/collections/generate"])
def test_a_signed_token_with_an_unusable_sub_is_401_and_provisions_nobody(db, settings, sub,
                                                                          message, path):
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, settings.JWT_SIGNING_KEY,
                       algorithm="HS256")
    users_before = User.objects.count()

    response = Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 401
    assert message in response.content.decode()
    assert User.objects.count() == users_before
