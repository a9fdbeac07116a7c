"""Admin for ops: jobs watched live, their generations, node runs, history and events read-only.

Jobs, generations and node runs change only through the engine (claims, leases, history rows
and events written together), so the admin never edits them; a hand-edited status would leave
the event stream and the credits ledger out of step with the rows.

A "cancel selected jobs" action is deliberately absent: cancelling lives in generation_app, and
jobs_app imports no other app.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.contrib import admin
from django.contrib.admin.utils import display_for_value
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from jobs_app.events import EVENTS_TOKEN_MAX_AGE, EVENTS_TOKEN_SALT
from jobs_app.models import Job, JobEvent, JobHistory


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by staff with the view permission; written only by the engine."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _pretty_json(value: Any) -> str:
    return format_html("<pre class=\"job-json\">{}</pre>",
                       json.dumps(value, indent=2, sort_keys=True, default=str))


def _safe_url(url: Any) -> str | None:
    """Only http(s) and same-site URLs become src/href (never `javascript:` or `data:`)."""
    if not isinstance(url, str) or not url:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https") or (not scheme and url.startswith("/")):
        return url
    return None


# Active documents: shown only in a sandboxed frame (scripts run, in an opaque origin).
_DOCUMENT_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")


def _output_kind(mime: str | None) -> str:
    mime = (mime or "").lower()
    if mime in _DOCUMENT_TYPES:
        return "document"
    if mime.startswith("image/"):
        return "image"
    if mime == "video/mp4":
        return "video"
    if mime == "text/plain":
        return "text"
    return "link"


def job_outputs(job: Job) -> list[dict[str, Any]]:
    """One entry per step output of the job's finished generations, ready for the template."""
    items = []
    for gen_output in (job.data or {}).get("outputs") or []:
        generation = gen_output.get("generation") or {}
        for step in gen_output.get("steps") or []:
            response = step.get("nodeResponse") or {}
            if not isinstance(response, dict):
                continue
            mime = response.get("mimeType")
            text = response.get("data")
            items.append({
                "gid": generation.get("id"), "hash": generation.get("hash"),
                "step_id": step.get("id"), "node": step.get("nodeAlias") or step.get("nodeName"),
                "mime": mime, "kind": _output_kind(mime), "src": _safe_url(response.get("src")),
                "text": text if isinstance(text, str) else None,
                "alt_src": _safe_url(response.get("altSrc")),
                "alt_kind": _output_kind(response.get("altMimeType")),
            })
    return items


def job_times(job: Job) -> dict[str, str]:
    """The job's changing times as admin shows read-only dates ("-" when not set)."""
    return {name: str(display_for_value(value, "-")) for name, value in (
        ("updated-at", job.updated_at), ("started-at", job.started_at),
        ("completed-at", job.completed_at))}


def events_token(job: Job) -> str:
    """A short-lived token for the job's event stream, as its owner would get from the API."""
    return signing.dumps({"u": str(job.user_id), "j": str(job.id)}, salt=EVENTS_TOKEN_SALT)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "user", "job_type", "status", "progress", "priority",
                    "retry_count", "created_at", "completed_at"]
    list_filter = ["status", "job_type", "priority", "created_at"]
    search_fields = ["id", "name", "user__username", "user__email", "error_message"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["id", "name", "description", "user", "job_type", "live_status",
                           "live_progress", "priority", "live_error", "retry_count",
                           "max_retries", "event_seq"]}),
        ("Times", {"fields": ["created_at", "live_updated_at", "live_started_at",
                              "live_completed_at"]}),
        ("Data", {"classes": ["collapse"], "fields": ["data_json", "input_json"]}),
    ]
    readonly_fields = ["id", "name", "description", "user", "job_type", "live_status",
                       "live_progress", "priority", "live_error", "retry_count", "max_retries",
                       "event_seq", "created_at", "live_updated_at", "live_started_at",
                       "live_completed_at", "data_json", "input_json"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs start from generation requests, never by hand

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="status")
    def live_status(self, obj: Job) -> str:
        return format_html('<span id="job-live-status">{}</span>', obj.status)

    @admin.display(description="progress")
    def live_progress(self, obj: Job) -> str:
        return format_html('<progress id="job-live-progress-bar" max="100" value="{}"></progress> '
                           '<span id="job-live-progress">{}</span>%', obj.progress, obj.progress)

    @admin.display(description="error message")
    def live_error(self, obj: Job) -> str:
        return format_html('<span id="job-live-error">{}</span>', obj.error_message or "")

    # The times change as the job runs; the page's script copies them from the re-fetched
    # sections (`job_times`), rendered the same way, since `job_update` events do not carry them.
    @admin.display(description="updated at")
    def live_updated_at(self, obj: Job) -> str:
        return format_html('<span id="job-live-updated-at">{}</span>', job_times(obj)["updated-at"])

    @admin.display(description="started at")
    def live_started_at(self, obj: Job) -> str:
        return format_html('<span id="job-live-started-at">{}</span>', job_times(obj)["started-at"])

    @admin.display(description="completed at")
    def live_completed_at(self, obj: Job) -> str:
        return format_html('<span id="job-live-completed-at">{}</span>',
                           job_times(obj)["completed-at"])

    @admin.display(description="data")
    def data_json(self, obj: Job) -> str:
        return _pretty_json(obj.data)

    @admin.display(description="input (GenerationInput)")
    def input_json(self, obj: Job) -> str:
        return _pretty_json(obj.input)

    # ---- the live change page ---------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        own = [
            path("<uuid:object_id>/live/sections/",
                 self.admin_site.admin_view(self.sections_view),
                 name="jobs_app_job_live_sections"),
            path("<uuid:object_id>/live/token/", self.admin_site.admin_view(self.token_view),
                 name="jobs_app_job_live_token"),
        ]
        return own + super().get_urls()

    def _viewable(self, request: HttpRequest, object_id: Any) -> Job:
        job = self.get_object(request, str(object_id))
        if job is None:
            raise Http404("No such job.")
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return job

    def _sections_context(self, job: Job) -> dict[str, Any]:
        """What the live sections show; the engine's admin adds its generations and node runs."""
        data = job.data if isinstance(job.data, dict) else {}
        return {"generations": [], "node_runs": [], "outputs": job_outputs(job),
                "times": job_times(job), "verdict": data.get("verdict"),
                "replay_of": data.get("replay"), "cost": data.get("cost")}

    def sections_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        """The generations, node runs and outputs as an HTML fragment the page swaps in."""
        job = self._viewable(request, object_id)
        html = render_to_string("admin/jobs_app/job/_sections.html",
                                self._sections_context(job), request=request)
        return HttpResponse(html)

    def token_view(self, request: HttpRequest, object_id: Any) -> JsonResponse:
        """A fresh events token, for reconnecting after the page's token expired."""
        job = self._viewable(request, object_id)
        token = events_token(job)
        return JsonResponse({"token": token, "expires_in": EVENTS_TOKEN_MAX_AGE,
                             "url": f"/api/jobs/{job.id}/events?token={token}"})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = dict(extra_context or {})
        job = self.get_object(request, object_id)
        if job is not None and self.has_view_permission(request, job):
            token = events_token(job)
            context.update(self._sections_context(job))
            context.update({
                "history": list(job.history.order_by("created_at", "id")),
                "events_url": f"/api/jobs/{job.id}/events?token={token}",
                "events_token": token,
                "token_url": reverse("admin:jobs_app_job_live_token", args=[job.pk]),
                "sections_url": reverse("admin:jobs_app_job_live_sections", args=[job.pk]),
                "finished_statuses": ",".join(Job.FINISHED),
            })
        return super().change_view(request, object_id, form_url, extra_context=context)


@admin.register(JobHistory)
class JobHistoryAdmin(ReadOnlyAdmin):
    list_display = ["job", "status", "message", "retry_attempt", "created_at"]
    list_filter = ["status"]
    search_fields = ["job__id", "message"]
    list_select_related = ["job"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    show_full_result_count = False


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    list_display = ["job", "seq", "event_type", "created_at"]
    list_filter = ["event_type"]
    search_fields = ["job__id"]
    list_select_related = ["job"]
    ordering = ["-created_at", "-seq"]
    show_full_result_count = False
