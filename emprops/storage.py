"""Where outputs live: one function derives every public URL from a storage key (SPEC section 8)."""

from __future__ import annotations

from urllib.parse import unquote

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def public_url(key: str) -> str:
    """`CDN_URL + key` when a CDN base is set, else the storage's own URL.

    Local files are served from the user-content origin when one is set, never next to admin.
    """
    if settings.CDN_URL:
        return settings.CDN_URL.rstrip("/") + "/" + key.lstrip("/")
    url = default_storage.url(key)
    if url.startswith("/"):
        base = settings.USER_CONTENT_ORIGIN or settings.PUBLIC_BASE_URL
        if base:
            return base.rstrip("/") + url
    return url


def save_overwrite(key: str, content: bytes) -> str:
    """Store bytes at exactly `key`, replacing what is there (a retried run writes the same key)."""
    # Free the name only where the storage would otherwise pick another one (local files); with
    # S3's file_overwrite the PUT itself replaces the object, with no moment where it is missing.
    if default_storage.get_available_name(key) != key:
        default_storage.delete(key)
    saved = default_storage.save(key, ContentFile(content))
    if saved != key:  # a racing writer took the name between delete and save
        default_storage.delete(saved)
        raise OSError(f"could not store {key}: the storage renamed it to {saved}")
    return key


def read(key: str) -> bytes:
    with default_storage.open(key, "rb") as fh:
        data: bytes = fh.read()
    return data


def delete(key: str) -> None:
    default_storage.delete(key)


def key_for_url(url: str) -> str | None:
    """The storage key behind one of our own public URLs, or None for anything else."""
    prefixes = []
    if settings.CDN_URL:
        prefixes.append(settings.CDN_URL.rstrip("/") + "/")
    base = _storage_url_base()
    prefixes.append(base)
    if base.startswith("/"):
        for origin in (settings.USER_CONTENT_ORIGIN, settings.PUBLIC_BASE_URL):
            if origin:
                prefixes.append(origin.rstrip("/") + base)
    for prefix in prefixes:
        if prefix and url.startswith(prefix):
            return unquote(url[len(prefix) :].split("?", 1)[0])
    return None


_PROBE_KEY = "emprops-probe-key"


def _storage_url_base() -> str:
    # S3 refuses `url("")` (an empty Key), so take the URL of a probe key and cut the key off;
    # a signed URL's query string differs per call and is not part of the base.
    url = default_storage.url(_PROBE_KEY).split("?", 1)[0]
    return url[: url.rfind(_PROBE_KEY)]
