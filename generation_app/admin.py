"""Admin for webhooks (endpoints editable; deliveries and attempts read-only, written by the
sender), schedules (pause/resume actions) and templates; the job and workflow pages gain the
actions that need the engine (cancel/retry; validate, quote, test-run)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from emprops.errors import DomainError
from generation_app.models import (
    CollectionSchedule,
    Generation,
    NodeRun,
    ScheduleRun,
    Template,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from generation_app.services import control, workflow_quotes
from generation_app.services.schedules import next_run_after
from generation_app.services.workflow_checks import workflow_check
from jobs_app.admin import JobAdmin, ReadOnlyAdmin
from jobs_app.models import Job
from workflows_app.admin import WorkflowAdmin
from workflows_app.models import Workflow


class _ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "user", "events", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "user__username", "id"]
    raw_id_fields = ["user"]


class WebhookAttemptInline(_ReadOnly, admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("attempted_at", "status_code", "error", "duration_ms")
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["event", "url", "status", "attempts", "last_status_code", "next_attempt_at",
                    "created_at", "delivered_at"]
    list_filter = ["status", "event"]
    search_fields = ["url", "webhook_id", "job__id", "user__username"]
    readonly_fields = ["id", "webhook_id", "user", "job", "endpoint", "url", "event", "payload",
                       "status", "attempts", "next_attempt_at", "announced_at",
                       "last_status_code", "last_error", "dedupe_key", "created_at",
                       "delivered_at"]
    inlines = [WebhookAttemptInline]
    actions = ["retry_now"]

    @admin.action(description="Retry now (failed or pending deliveries)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        # back to pending and due: the beat re-announces it on its next pass (past the 24 h
        # window it gets this one attempt)
        n = queryset.exclude(status=WebhookDelivery.Status.SUCCEEDED).update(
            status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now())
        self.message_user(request, f"{n} deliveries will be retried.")


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["delivery", "attempted_at", "status_code", "error", "duration_ms"]
    list_filter = ["status_code"]
    readonly_fields = ["delivery", "attempted_at", "status_code", "error", "duration_ms"]


class ScheduleRunInline(_ReadOnly, admin.TabularInline):
    model = ScheduleRun
    extra = 0
    can_delete = False
    fields = ("scheduled_for", "status", "job", "error", "created_at")
    readonly_fields = fields


@admin.register(CollectionSchedule)
class CollectionScheduleAdmin(admin.ModelAdmin):
    list_display = ["collection", "user", "cron", "interval_seconds", "timezone", "count",
                    "status", "next_run_at", "last_run_at"]
    list_filter = ["status"]
    search_fields = ["collection__title", "user__username", "id"]
    raw_id_fields = ["user", "collection"]
    readonly_fields = ["next_run_at", "last_run_at", "created_at", "updated_at"]
    inlines = [ScheduleRunInline]
    actions = ["pause", "resume"]

    @admin.action(description="Pause selected schedules")
    def pause(self, request: HttpRequest, queryset: QuerySet[CollectionSchedule]) -> None:
        queryset.filter(status=CollectionSchedule.Status.ACTIVE).update(
            status=CollectionSchedule.Status.PAUSED)

    @admin.action(description="Resume selected schedules from their next slot")
    def resume(self, request: HttpRequest, queryset: QuerySet[CollectionSchedule]) -> None:
        now = timezone.now()
        for schedule in queryset.filter(status=CollectionSchedule.Status.PAUSED):
            nxt = next_run_after(cron=schedule.cron, interval_seconds=schedule.interval_seconds,
                                 tz=schedule.timezone, after=now)
            CollectionSchedule.objects.filter(
                pk=schedule.pk, status=CollectionSchedule.Status.PAUSED).update(
                status=CollectionSchedule.Status.ACTIVE, next_run_at=nxt)


@admin.register(ScheduleRun)
class ScheduleRunAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["schedule", "scheduled_for", "status", "job", "error", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["schedule", "scheduled_for", "status", "job", "error", "created_at"]


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "is_public", "created_at"]
    list_filter = ["is_public"]
    search_fields = ["name", "description", "id"]
    raw_id_fields = ["owner"]


# The engine's own rows, read-only: they change only through the engine and its services.
@admin.register(Generation)
class GenerationAdmin(ReadOnlyAdmin):
    list_display = ["job", "gid", "hash", "seed", "status", "failure_type", "started_at",
                    "completed_at"]
    list_filter = ["status", "failure_type"]
    search_fields = ["job__id", "hash", "job__name"]
    list_select_related = ["job"]
    show_full_result_count = False


@admin.register(NodeRun)
class NodeRunAdmin(ReadOnlyAdmin):
    list_display = ["job", "gid", "step_id", "node_name", "alias", "queue", "status", "attempt",
                    "lease_until", "next_attempt_at", "worker", "progress"]
    list_filter = ["status", "queue", "node_name"]
    search_fields = ["job__id", "node_name", "alias", "worker"]
    list_select_related = ["job"]
    show_full_result_count = False


# Ops cancel and retry jobs from the job list. jobs_app registers the Job admin (the job, its
# history and events) but may not import generation_app (STYLE rule 5), so the engine's admin
# replaces that registration with a subclass that adds the actions needing the engine.


def _each_job(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job],
              service: Any, verb: str, refused: str) -> None:
    done, skipped = 0, 0
    for job in queryset.select_related("user"):
        try:
            service(user=job.user, job_id=job.id)
            done += 1
        except DomainError:
            skipped += 1
    modeladmin.message_user(request, f"{verb} {done} job(s); {skipped} {refused}.")


@admin.action(description="Cancel selected jobs (stop work, release credits)")
def cancel_jobs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    _each_job(modeladmin, request, queryset, control.job_cancel, "Cancelled",
              "were already finished")


@admin.action(description="Retry the failed generations of selected jobs")
def retry_jobs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    _each_job(modeladmin, request, queryset, control.job_retry, "Retried",
              "had nothing to retry")


admin.site.unregister(Job)


@admin.register(Job)
class EngineJobAdmin(JobAdmin):
    """The job page with the engine's rows (generations, node runs) and actions."""

    actions = [cancel_jobs, retry_jobs]

    def _sections_context(self, job: Job) -> dict[str, Any]:
        return {
            **super()._sections_context(job),
            "generations": list(Generation.objects.filter(job=job).order_by("gid")),
            "node_runs": list(NodeRun.objects.filter(job=job).order_by("gid", "id")),
        }


# The workflow page's engine tools: Validate (form, graph targets, credits script, test payload),
# Quote (the test payload) and Test-run (a one-step job owned by the staff user, watched on the
# live job page). workflows_app may not import generation_app, as above.

admin.site.unregister(Workflow)


@admin.register(Workflow)
class EngineWorkflowAdmin(WorkflowAdmin):
    actions = ["validate_workflows"]

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path("<path:object_id>/validate/", view(self.validate_view),
                 name="workflows_app_workflow_validate"),
            path("<path:object_id>/quote/", view(self.quote_view),
                 name="workflows_app_workflow_quote"),
            path("<path:object_id>/test-run/", view(self.test_run_view),
                 name="workflows_app_workflow_test_run"),
        ]
        return own + super().get_urls()

    def workflow_tools(self, request: HttpRequest, workflow: Workflow) -> list[dict[str, str]]:
        def url(name: str) -> str:
            return reverse(f"admin:workflows_app_workflow_{name}", args=[workflow.pk])

        return [
            {"name": "validate", "label": "Validate", "url": url("validate"), "method": "get"},
            {"name": "quote", "label": "Quote", "url": url("quote"), "method": "get"},
            {"name": "test-run", "label": "Test-run", "url": url("test_run"), "method": "post"},
        ]

    def _workflow(self, request: HttpRequest, object_id: str) -> Workflow:
        workflow = self.get_object(request, object_id)
        if workflow is None:
            raise Http404("No such workflow.")
        if not self.has_view_or_change_permission(request, workflow):
            raise PermissionDenied
        return workflow

    def _render(self, request: HttpRequest, workflow: Workflow, title: str,
                **context: Any) -> HttpResponse:
        return TemplateResponse(request, "admin/workflows_app/workflow/tool_result.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "original": workflow, "title": f"{title}: {workflow.name}", **context})

    def validate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id)
        return self._render(request, workflow, "Validate", check=workflow_check(workflow=workflow))

    def quote_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id)
        test = workflow.data.get("test") if isinstance(workflow.data, dict) else None
        if not isinstance(test, dict):
            return self._render(request, workflow, "Quote",
                                error="This workflow has no test payload (data.test) to quote.")
        try:
            quote = workflow_quotes.workflow_quote(user=request.user, workflow_id=workflow.pk,
                                                   inputs=test)
        except DomainError as exc:
            return self._render(request, workflow, "Quote", error=exc.message,
                                details=exc.details or {})
        return self._render(request, workflow, "Quote", quote=quote, payload=test)

    def test_run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse("Test-run starts a job: POST only.", status=405,
                                headers={"Allow": "POST"})
        workflow = self._workflow(request, object_id)
        if not self.has_change_permission(request, workflow):
            raise PermissionDenied
        if not isinstance(workflow.data, dict):
            messages.error(request, "Test-run refused: the workflow's data is not an object.")
            return HttpResponseRedirect(
                reverse("admin:workflows_app_workflow_change", args=[workflow.pk]))
        try:
            job = workflow_quotes.workflow_test_run(user=request.user, workflow_id=workflow.pk)
        except DomainError as exc:
            details = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                for k, v in (exc.details or {}).items())
            messages.error(request, f"Test-run refused: {exc.message}"
                                    + (f" ({details})" if details else ""))
            return HttpResponseRedirect(
                reverse("admin:workflows_app_workflow_change", args=[workflow.pk]))
        messages.success(request, f"Test-run of {workflow.name} started as job {job.id}.")
        return HttpResponseRedirect(reverse("admin:jobs_app_job_change", args=[job.id]))

    @admin.action(description="Validate selected workflows")
    def validate_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            result = workflow_check(workflow=workflow)
            problems = [p for c in result["checks"] for p in c["problems"]]
            if not problems:
                messages.success(request, f"{workflow.name}: no problems.")
            else:
                first = problems[0]
                more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
                messages.error(request, f"{workflow.name}: {first['where']}: "
                                        f"{first['message']}{more}")
