"""The gallery's pages: plain Django views and templates (autoescaped), a little plain JS.

A collection page answers its owner (session) or the holder of a signed gallery link, which is
read-only: spending credits (generate, reproduce) takes the owner's session and a CSRF token.
Every gallery response carries a Content-Security-Policy that allows only our own scripts, so
nothing a user wrote can run here even if it slipped through escaping.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from emprops.errors import DomainError, Forbidden, NotFound
from emprops.middleware import envelope_error
from generation_app.gallery import selectors
from generation_app.gallery.links import BadGalleryLink, gallery_token_viewer
from generation_app.selectors import WaitInfo, job_wait_info, wait_info_json
from generation_app.services.requests import generation_request
from jobs_app.events import EVENTS_TOKEN_MAX_AGE, EVENTS_TOKEN_SALT
from jobs_app.models import Job

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src * data:; media-src *; "
       "frame-src *; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
MAX_COUNT = 100  # the generation request refuses more than a collection's limit anyway


def gallery_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Domain errors become a plain page with their status (never another user's existence:
    theirs are NotFound like missing ones); every response gets the gallery's CSP."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except DomainError as exc:
            response = render(request, "gallery/error.html", {"message": exc.message},
                              status=exc.status_code)
        response["Content-Security-Policy"] = CSP
        return response

    return wrapped


def wait_text(info: WaitInfo) -> str:
    """One line for people: where a waiting job stands."""
    about = f", about {info['estimate_seconds']:.0f} s" \
        if info["estimate_seconds"] is not None else ""
    if info["state"] == "waiting_for_slot":
        return (f"waiting for a slot: {info['position']} of your generations ahead{about}")
    if info["state"] == "queued":
        return f"queued: position {info['position']}{about}"
    if info["state"] == "scheduled" and info["run_at"] is not None:
        return f"scheduled for {info['run_at']:%Y-%m-%d %H:%M:%S %Z}{about}"
    if info["state"] == "retrying" and info["retry_at"] is not None:
        return f"retrying at {info['retry_at']:%H:%M:%S %Z}{about}"
    return ""


class _LoginNeeded(Exception):
    pass


def _viewer(request: HttpRequest, collection_id: UUID) -> tuple[Any, str | None]:
    """Who the page is for (the collection's owner) and the gallery link it was opened with."""
    token = request.GET.get("g")
    if token:
        try:
            user_id = gallery_token_viewer(token, collection_id=collection_id)
        except BadGalleryLink:
            raise Forbidden("This gallery link is invalid or has expired.") from None
        if user_id is None:
            raise NotFound("Collection not found.")
        return user_id, token
    if not request.user.is_authenticated:
        raise _LoginNeeded
    return request.user.pk, None


def _job_id(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


@require_safe
@gallery_view
def home(request: HttpRequest) -> HttpResponse:
    viewer = request.user if request.user.is_authenticated else None
    mine, public = selectors.home_cards(viewer=viewer)
    return render(request, "gallery/home.html", {"mine": mine, "public": public})


@require_safe
@gallery_view
def collection_page(request: HttpRequest, collection_id: UUID) -> HttpResponse:
    try:
        viewer_id, link = _viewer(request, collection_id)
    except _LoginNeeded:
        return redirect_to_login(request.get_full_path())
    collection = selectors.collection_get(viewer_id=viewer_id, collection_id=collection_id)
    live = selectors.collection_live_jobs(collection=collection,
                                          also=_job_id(request.GET.get("job")))
    live_urls = {}
    for entry in live:
        job_id = entry.job.pk
        live_url = reverse("gallery-job-live", kwargs={"collection_id": collection.pk,
                                                       "job_id": job_id})
        live_urls[job_id] = {"events": _events_url(entry.job.user_id, job_id),
                             "live": f"{live_url}?g={link}" if link else live_url}
    return render(request, "gallery/collection.html", {
        "collection": collection, "owner": link is None,
        "live": [(entry, live_urls[entry.job.pk], wait_text(entry.waiting)) for entry in live],
        "items": selectors.collection_items(collection=collection),
        "max_count": MAX_COUNT, "finished": ",".join(Job.FINISHED),
    })


def _events_url(user_id: Any, job_id: Any) -> str:
    token = signing.dumps({"u": str(user_id), "j": str(job_id)}, salt=EVENTS_TOKEN_SALT)
    return f"{reverse('job-events', kwargs={'job_id': job_id})}?token={token}"


@require_safe
def job_live(request: HttpRequest, collection_id: UUID, job_id: UUID) -> HttpResponse:
    """A fresh events URL (the page's token expires) and where the job stands now, as JSON."""
    try:
        viewer_id, _ = _viewer(request, collection_id)
        collection = selectors.collection_get(viewer_id=viewer_id, collection_id=collection_id)
        job = selectors.collection_job_get(collection=collection, job_id=job_id)
    except _LoginNeeded:
        return envelope_error("Job not found.", 404, request=request)
    except DomainError as exc:
        return envelope_error(exc.message, exc.status_code, request=request)
    info = job_wait_info(job)
    return JsonResponse({"data": {"url": _events_url(job.user_id, job.pk),
                                  "expires_in": EVENTS_TOKEN_MAX_AGE,
                                  "status": job.status, "waiting": wait_info_json(info),
                                  "waiting_text": wait_text(info)}, "error": None})


@require_POST
@gallery_view
def collection_generate(request: HttpRequest, collection_id: UUID) -> HttpResponse:
    """`generate N` (count) or `reproduce` (hash) for the owner, signed in; then the page follows
    the new job."""
    if not request.user.is_authenticated:
        return redirect_to_login(reverse("gallery-collection",
                                         kwargs={"collection_id": collection_id}))
    hash_value = request.POST.get("hash", "").strip()
    count: int | None = None
    if not hash_value:
        try:
            count = int(request.POST.get("count", ""))
        except ValueError:
            count = None
        if count is None or not 1 <= count <= MAX_COUNT:
            raise DomainError(f"Give a number of generations from 1 to {MAX_COUNT}.")
    job = generation_request(user=request.user, collection_id=collection_id, variables=None,
                             count=count, hashes=[hash_value] if hash_value else None)
    target = reverse("gallery-collection", kwargs={"collection_id": collection_id})
    return redirect(f"{target}?job={job.pk}")


@require_safe
@gallery_view
def public_page(request: HttpRequest, collection_id: UUID) -> HttpResponse:
    page = selectors.public_page(collection_id=collection_id)
    return render(request, "gallery/public.html", {"page": page})
