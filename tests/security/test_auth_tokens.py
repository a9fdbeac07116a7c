"""Credentials that must not authenticate (emprops/authentication.py), beyond the basics in
tests/emprops/test_api_foundation.py: unsigned and expired JWTs, algorithm confusion, missing
claims, and API keys that are revoked, expired or belong to a deactivated user, on both headers.
Every refusal is a 401 that provisions nobody."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta

import jwt
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from collections_app.models import Project
from emprops.accounts.models import User, UserApiKey
from emprops.accounts.services import api_key_create


def _b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _assert_refused(header: dict[str, str], users_before: int) -> None:
    response = APIClient().get("/api/me", **header)

    assert response.status_code == 401
    assert response.json()["data"] is None
    assert User.objects.count() == users_before


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_alg_none_token_is_401(db, alg):
    token = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64({'sub': 'mallory', 'exp': int(time.time()) + 60})}."
    users = User.objects.count()

    _assert_refused({"HTTP_AUTHORIZATION": f"Bearer {token}"}, users)
    assert not User.objects.filter(external_sub="mallory").exists()


def test_an_expired_token_is_401_even_for_a_known_user(alice, settings):
    token = jwt.encode({"sub": str(alice.id), "exp": int(time.time()) - 5},
                       settings.JWT_SIGNING_KEY, algorithm="HS256")

    response = APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 401
    assert response.json()["error"] == "Token expired."


def test_a_token_without_exp_is_401(db, settings):
    token = jwt.encode({"sub": "forever"}, settings.JWT_SIGNING_KEY, algorithm="HS256")

    _assert_refused({"HTTP_AUTHORIZATION": f"Bearer {token}"}, User.objects.count())
    assert not User.objects.filter(external_sub="forever").exists()


def test_an_hs256_token_keyed_with_the_rs256_public_key_is_401(db, settings):
    # algorithm confusion: the public key is public, so it must never serve as an HMAC secret
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    settings.JWT_PUBLIC_KEY = public_pem.decode()
    payload = {"sub": "confused", "exp": int(time.time()) + 60}
    header = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(payload)
    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, header.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()

    _assert_refused({"HTTP_AUTHORIZATION": f"Bearer {header}.{signature}"}, User.objects.count())
    assert not User.objects.filter(external_sub="confused").exists()


def test_an_rs256_token_is_401_when_no_public_key_is_configured(db, settings):
    from cryptography.hazmat.primitives.asymmetric import rsa

    settings.JWT_PUBLIC_KEY = ""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "rs-user", "exp": int(time.time()) + 60}, private,
                       algorithm="RS256")

    _assert_refused({"HTTP_AUTHORIZATION": f"Bearer {token}"}, User.objects.count())


def test_a_tampered_payload_is_401(alice, settings):
    token = jwt.encode({"sub": str(alice.id), "exp": int(time.time()) + 60},
                       settings.JWT_SIGNING_KEY, algorithm="HS256")
    header, _payload, signature = token.split(".")
    forged = f"{header}.{_b64({'sub': 'someone-else', 'exp': int(time.time()) + 60})}.{signature}"

    _assert_refused({"HTTP_AUTHORIZATION": f"Bearer {forged}"}, User.objects.count())


@pytest.mark.parametrize("how", ["X-API-Key", "Bearer"])
@pytest.mark.parametrize("state", ["revoked", "expired", "user deactivated"])
def test_an_unusable_api_key_is_401_on_either_header(alice, how, state):
    key, raw = api_key_create(user=alice, name="k")
    if state == "revoked":
        UserApiKey.objects.filter(pk=key.pk).update(is_active=False)
    elif state == "expired":
        UserApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        User.objects.filter(pk=alice.pk).update(is_active=False)
    header = {"HTTP_X_API_KEY": raw} if how == "X-API-Key" else {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    _assert_refused(header, User.objects.count())
    key.refresh_from_db()
    assert key.last_used_at is None


def test_a_revoked_key_is_refused_on_a_write_and_nothing_is_created(alice):
    key, raw = api_key_create(user=alice, name="k")
    UserApiKey.objects.filter(pk=key.pk).update(is_active=False)

    response = APIClient().post("/api/projects", {"name": "sneaky"}, format="json",
                                HTTP_X_API_KEY=raw)

    assert response.status_code == 401
    assert not Project.objects.filter(user=alice).exists()
