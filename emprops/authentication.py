"""Credentials: JWT (HS256 by JWT_SIGNING_KEY, RS256 by JWT_PUBLIC_KEY) and `ek_` API keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import jwt
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from emprops.accounts.models import User
from emprops.accounts.services import API_KEY_PREFIX, api_key_authenticate, user_for_sub
from emprops.api import WWW_AUTHENTICATE, FailedAuthThrottle


def issue_tokens(*, user: User) -> dict[str, Any]:
    """An access and a refresh token whose `sub` is the user id (local accounts, HS256)."""
    now = datetime.now(UTC)
    access_exp = now + settings.JWT_ACCESS_LIFETIME
    base = {"sub": str(user.pk), "iat": int(now.timestamp())}
    access = jwt.encode({**base, "type": "access", "exp": access_exp, "jti": uuid.uuid4().hex},
                        settings.JWT_SIGNING_KEY, algorithm="HS256")
    refresh = jwt.encode({**base, "type": "refresh", "exp": now + settings.JWT_REFRESH_LIFETIME,
                          "jti": uuid.uuid4().hex}, settings.JWT_SIGNING_KEY, algorithm="HS256")
    return {"access": access, "refresh": refresh, "token_type": "Bearer",
            "expires_in": int(settings.JWT_ACCESS_LIFETIME.total_seconds())}


def decode_token(token: str, *, expected_type: str | None = "access") -> dict[str, Any]:
    """The claims of a validly signed, unexpired token, or AuthenticationFailed."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise exceptions.AuthenticationFailed("Invalid token.") from None
    alg = header.get("alg")
    if alg == "RS256" and settings.JWT_PUBLIC_KEY:
        key, algorithms = settings.JWT_PUBLIC_KEY, ["RS256"]
    elif alg == "HS256":
        key, algorithms = settings.JWT_SIGNING_KEY, ["HS256"]
    else:
        raise exceptions.AuthenticationFailed("Unsupported token algorithm.")
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=algorithms,
                                            options={"require": ["sub", "exp"],
                                                     "verify_aud": False})
    except jwt.ExpiredSignatureError:
        raise exceptions.AuthenticationFailed("Token expired.") from None
    except jwt.PyJWTError:
        raise exceptions.AuthenticationFailed("Invalid token.") from None
    _check_sub(claims.get("sub"))
    token_type = claims.get("type")
    if expected_type == "access" and token_type not in (None, "access"):
        raise exceptions.AuthenticationFailed("Not an access token.")
    if expected_type == "refresh" and token_type != "refresh":
        raise exceptions.AuthenticationFailed("Not a refresh token.")
    return claims


# The longest `sub` a user row can hold (User.external_sub); longer ones could never match a user.
MAX_SUB_LENGTH = 255


def _check_sub(sub: Any) -> None:
    """Refuse a `sub` that cannot name one user: empty, too long, or holding control characters.

    An empty `sub` would provision one user shared by every such token; a NUL or an over-long
    value cannot be stored, so it must be a 401 here rather than a database error later.
    """
    if not isinstance(sub, str) or not sub.strip():
        raise exceptions.AuthenticationFailed("Invalid token: `sub` must be a non-empty string.")
    if len(sub) > MAX_SUB_LENGTH:
        raise exceptions.AuthenticationFailed(
            f"Invalid token: `sub` is longer than {MAX_SUB_LENGTH} characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in sub):
        raise exceptions.AuthenticationFailed("Invalid token: `sub` contains control characters.")


class AuthFailuresThrottled(exceptions.Throttled, exceptions.AuthenticationFailed):
    """429 with Retry-After: too many failed credential checks from this client address.

    Also an AuthenticationFailed, so a caller that authenticates outside DRF's views (the events
    stream catches only that) refuses it like a bad credential instead of failing with a 500.
    """

    default_detail = "Too many failed authentication attempts from this address."


@contextmanager
def failed_auth_limit(request: Any, *, guessable: bool = True) -> Iterator[None]:
    """Run a credential check under the per-address limit RATE_LIMIT_AUTH_FAIL.

    Over the limit, the address gets AuthFailuresThrottled before its credential is looked at, a
    correct one included: were a right guess still admitted, the answer would tell it apart and
    the limit would stop nothing. Any exception with status 401 counts (AuthenticationFailed, a
    401 DomainError), so a view that checks a password or a refresh token runs under it too.

    A `guessable` credential (a password, a refresh token) is counted before it is checked, so
    guesses in flight together cannot all slip under the limit, and given back unless it ends in
    a 401. API keys (256 random bits) and signed JWTs are counted only when they fail, and a
    failure counted over the limit answers 429 instead of its 401: failures are limited exactly
    as before, while a client's valid requests in flight together never count against it
    (counting them first made 30 concurrent valid requests from one address a 429).
    """
    throttle = FailedAuthThrottle()
    allowed = throttle.allow_request(request, None) if guessable else throttle.peek(request)
    if not allowed:
        raise AuthFailuresThrottled(wait=throttle.wait())
    try:
        yield
    except Exception as exc:
        if getattr(exc, "status_code", None) != 401:
            if guessable:
                throttle.refund()
            raise
        if not guessable and not throttle.allow_request(request, None):
            raise AuthFailuresThrottled(wait=throttle.wait()) from exc
        raise
    else:
        if guessable:
            throttle.refund()


class ApiAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <JWT | ek_ key>` or `X-API-Key: ek_...`.

    It is the first authentication class, so its `WWW-Authenticate` makes DRF answer 401.
    """

    def authenticate(self, request: Request) -> tuple[User, str] | None:
        if not request.headers.get("X-API-Key") and not request.headers.get("Authorization"):
            return None  # anonymous: no credential, nothing to guess
        with failed_auth_limit(request, guessable=False):
            return self._authenticate_credentials(request)

    def _authenticate_credentials(self, request: Request) -> tuple[User, str] | None:
        raw_key = request.headers.get("X-API-Key")
        header = request.headers.get("Authorization", "")
        if not raw_key and header:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
            credential = credential.strip()
            if credential.startswith(API_KEY_PREFIX):
                raw_key = credential
            else:
                claims = decode_token(credential)
                user: User | None = user_for_sub(sub=str(claims["sub"]))
                assert user is not None
                if not user.is_active:
                    raise exceptions.AuthenticationFailed("User inactive.")
                return user, "jwt"
        if raw_key:
            user = api_key_authenticate(raw=raw_key)
            if user is None:
                raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
            return user, "api_key"
        return None

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class ApiAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "emprops.authentication.ApiAuthentication"
    name = ["ApiKey", "Bearer"]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or ek_ API key"},
        ]
