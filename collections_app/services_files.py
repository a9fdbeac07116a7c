"""Users' input uploads (`POST /api/files`): size limit, content sniffed from the bytes, stored
under `uploads/{user_id}/{uuid}.{ext}` with a flat_file row."""

from __future__ import annotations

import io
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction

from collections_app.models import FlatFile
from emprops import storage
from emprops.errors import PayloadTooLarge, UnsupportedFileType, ValidationFailed

# (mime type, extension); only formats an `image_loader` or a text field can use
_IMAGE_TYPES = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"),
                "GIF": ("image/gif", "gif"), "WEBP": ("image/webp", "webp")}
_TEXT_SNIFF_BYTES = 64 * 1024


def sniff_mime(head: bytes, *, whole: bytes) -> tuple[str, str] | None:
    """`(mime type, extension)` from the content itself (never the client's claim), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "PNG"
    elif head.startswith(b"\xff\xd8\xff"):
        kind = "JPEG"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        kind = "GIF"
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WEBP"
    elif head[4:8] == b"ftyp":
        return ("video/quicktime", "mov") if head[8:10] == b"qt" else ("video/mp4", "mp4")
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm", "webm"
    elif head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav", "wav"
    elif head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg", "mp3"
    else:
        return _sniff_text(whole)
    return _verified_image(kind, whole)


def _verified_image(kind: str, content: bytes) -> tuple[str, str] | None:
    """The image type when Pillow agrees the bytes are a readable image of that kind."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as img:
            fmt = img.format
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return _IMAGE_TYPES.get(kind) if fmt == kind else None


def _sniff_text(content: bytes) -> tuple[str, str] | None:
    sample = content[:_TEXT_SNIFF_BYTES]
    if not sample or b"\x00" in sample:
        return None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the sample may cut a multi-byte character at its end
        if len(content) <= _TEXT_SNIFF_BYTES or exc.start < len(sample) - 4:
            return None
    return "text/plain", "txt"


def _clean_name(name: str | None, ext: str) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = "".join(ch for ch in base if ch.isprintable())[:200]
    return base or f"upload.{ext}"


def file_upload(*, user: Any, upload: Any) -> FlatFile:
    """Store an uploaded file for the user: 413 over MAX_UPLOAD_BYTES, 415 for content that is
    not an image, video, audio or plain text (judged from the bytes)."""
    limit = settings.MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"File too large: {upload.size} bytes, the limit is {limit} bytes.",
                              details={"file": [f"At most {limit} bytes."], "limit": limit})
    content = upload.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"File too large: the limit is {limit} bytes.",
                              details={"file": [f"At most {limit} bytes."], "limit": limit})
    if not content:
        raise ValidationFailed("The file is empty.", details={"file": ["The file is empty."]})
    sniffed = sniff_mime(content[:64], whole=content)
    if sniffed is None:
        raise UnsupportedFileType(
            "Unsupported file type: upload PNG, JPEG, GIF, WEBP, MP4, WEBM, MP3, WAV or text.",
            details={"file": ["Unsupported or unreadable file content."]})
    mime, ext = sniffed
    key = f"uploads/{user.pk}/{uuid.uuid4().hex}.{ext}"
    # storage may be remote: write before the transaction, and remove the object if no row
    storage.save_overwrite(key, content)
    try:
        with transaction.atomic():
            return FlatFile.objects.create(
                user=user, name=_clean_name(getattr(upload, "name", None), ext),
                storage_key=key, mime_type=mime, rel_type="upload",
                tags=[])
    except Exception:
        from django.core.files.storage import default_storage

        default_storage.delete(key)
        raise


