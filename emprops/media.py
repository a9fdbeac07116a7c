"""`/media/` on the platform's own origin: never user content, only a way to it.

With a user-content origin configured (`USER_CONTENT_ORIGIN`, as `make run` does) this redirects
there, so links stored before the origin existed keep working. Without one (tests, or a
deployment that forgot it) files are still served, but in a CSP sandbox without scripts, and
active types (HTML, SVG, XML) as downloads: nothing a user made runs next to admin sessions.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.static import serve

ACTIVE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml",
                "application/xml", "application/javascript", "text/javascript")


def media(request: HttpRequest, path: str) -> HttpResponse | FileResponse:
    origin = settings.USER_CONTENT_ORIGIN.rstrip("/")
    if origin:
        return HttpResponseRedirect(f"{origin}{settings.MEDIA_URL}{quote(path)}")
    response: HttpResponse | FileResponse = serve(request, path,
                                                  document_root=str(settings.MEDIA_ROOT))
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type in ACTIVE_TYPES:
        response["Content-Disposition"] = "attachment"
    return response
