"""The collector's gallery page: a shell whose script signs in with the browser's wallet and
reads the collector API with the collector token (no session: collectors have no password)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from generation_app.gallery.views import gallery_view


@require_safe
@gallery_view
def collector_page(request: HttpRequest) -> HttpResponse:
    return render(request, "gallery/collector.html")
