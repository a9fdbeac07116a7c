"""Signed gallery links: `/c/<collection id>?g=<token>` shows a collection as its owner sees it
(read-only) to whoever holds the link, until it expires (GALLERY_LINK_SECONDS, 7 days).

They are for people who hold only an API key or an outside JWT and so have no session here.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.core import signing
from django.urls import reverse

GALLERY_LINK_SALT = "emprops.gallery-link"


class BadGalleryLink(Exception):
    """A forged, altered or expired link."""


def gallery_token(*, user_id: Any, collection_id: Any) -> str:
    return signing.dumps({"u": str(user_id), "c": str(collection_id)}, salt=GALLERY_LINK_SALT)


def gallery_token_viewer(token: str, *, collection_id: UUID | str) -> str | None:
    """The user a valid link was made for, None when it names another collection; BadGalleryLink
    when it is not ours or has expired."""
    try:
        claims = signing.loads(token, salt=GALLERY_LINK_SALT,
                               max_age=settings.GALLERY_LINK_SECONDS)
    except signing.BadSignature:  # SignatureExpired is one too
        raise BadGalleryLink from None
    if not isinstance(claims, dict) or claims.get("c") != str(collection_id):
        return None
    user_id = claims.get("u")
    return user_id if isinstance(user_id, str) else None


def gallery_path(*, user_id: Any, collection_id: Any) -> str:
    """The signed link's path (absolute it with the request's origin)."""
    token = gallery_token(user_id=user_id, collection_id=collection_id)
    return f"{reverse('gallery-collection', kwargs={'collection_id': collection_id})}?g={token}"
