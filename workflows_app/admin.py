"""Admin for workflows and what they need.

A workflow's change page shows its form as users will see it (read-only controls, option lists
from the form configs); the changelist uploads a zipped component library (a dry-run diff first,
then the import); servers have a "Check" action. Validate, Quote and Test-run need the engine,
so generation_app/admin.py replaces the Workflow registration with a subclass that adds them
(this app may not import generation_app, STYLE rule 5).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from emprops.errors import DomainError
from workflows_app import selectors
from workflows_app.forms import option_values
from workflows_app.models import (
    AIModel,
    CustomNode,
    FormConfig,
    Server,
    UserApiSecret,
    Workflow,
    WorkflowCustomNode,
    WorkflowModel,
)
from workflows_app.services import components_import_zip, server_check
from workflows_app.services.servers import server_url_errors

# an uploaded library waits this long between its dry run and "Apply"
_UPLOAD_TTL_S = 3600


class WorkflowModelInline(admin.TabularInline):
    model = WorkflowModel
    extra = 0
    autocomplete_fields = ["model"]


class WorkflowCustomNodeInline(admin.TabularInline):
    model = WorkflowCustomNode
    extra = 0
    autocomplete_fields = ["custom_node"]


# ---- the form preview ---------------------------------------------------------------------------

def _option_label(option: Any) -> str:
    if isinstance(option, Mapping):
        for key in ("name", "label", "option", "value"):
            if option.get(key) is not None:
                return str(option[key])
        return json.dumps(option)
    return str(option)


def _options(field: Mapping[str, Any]) -> list[dict[str, str]] | None:
    raw = field.get("options")
    if isinstance(raw, Mapping):
        raw = raw.get("options")
    if not isinstance(raw, list):
        return None
    values = option_values(raw)
    return [{"value": json.dumps(v) if not isinstance(v, str) else v, "label": _option_label(o)}
            for o, v in zip(raw, values, strict=False)]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def form_preview(*, workflow: Workflow) -> dict[str, Any] | None:
    """The workflow's form ready for the preview template: per field its control (`widget`),
    label, default, bounds and options (conf_file lists resolved); None without a form."""
    if not isinstance(workflow.data, dict):
        return None
    form = selectors.workflow_resolved_form(workflow=workflow)
    if not isinstance(form, dict):
        return None
    fields = []
    for field in form.get("fields") if isinstance(form.get("fields"), list) else []:
        if not isinstance(field, dict):
            continue
        field_type = field.get("type")
        constraints = field.get("constraints") if isinstance(field.get("constraints"), dict) else {}
        default = field.get("default")
        widget = {
            "slider": "range", "number": "number", "select": "select", "aspect_ratio": "select",
            "prompt_editor": "textarea", "image_loader": "file", "checkbox": "checkbox",
            "color_picker": "color",
        }.get(str(field_type))
        if field_type in ("input", "optional_input"):
            widget = "number" if field.get("input_type") == "number" else "text"
        options = _options(field)
        fields.append({
            "id": _text(field.get("id")), "name": _text(field.get("name") or field.get("id")),
            "type": _text(field_type), "widget": widget or "unknown",
            "default": _text(default), "checked": default is True or _text(default) == "true",
            "min": _text(constraints.get("min")), "max": _text(constraints.get("max")),
            "step": _text(constraints.get("step")),
            "placeholder": _text(field.get("placeholder")),
            "required": bool(field.get("is_required")),
            "options": options, "unresolved_conf": _text(field.get("conf_file")),
            "group": _text(field.get("group")),
        })
    config = form.get("config") if isinstance(form.get("config"), dict) else {}
    return {"fields": fields, "config": json.dumps(config, indent=2, sort_keys=True)}


# ---- the component-library upload --------------------------------------------------------------

class ComponentLibraryUploadForm(forms.Form):
    file = forms.FileField(label="Component library (.zip)",
                           help_text="A component-library folder, zipped: one sub-folder per "
                                     "component, _form_confs/*.json for option lists.")

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > settings.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The zip is {upload.size} bytes; the limit is {settings.MAX_UPLOAD_BYTES}.")
        return upload


def _upload_key(user: Any, digest: str) -> str:
    return f"components-upload:{user.pk}:{digest}"


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "label", "type", "output_mime_type", "display", "order", "server",
                    "created_at"]
    list_filter = ["type", "display", "output_mime_type", "server"]
    search_fields = ["name", "label", "description"]
    list_editable = ["display", "order"]
    inlines = [WorkflowModelInline, WorkflowCustomNodeInline]
    change_form_template = "admin/workflows_app/workflow/change_form.html"
    change_list_template = "admin/workflows_app/workflow/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        own = [path("import/", self.admin_site.admin_view(self.import_view),
                    name="workflows_app_workflow_import")]
        return own + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        workflow = self.get_object(request, object_id)
        context = {**(extra_context or {})}
        if workflow is not None:
            context["form_preview"] = form_preview(workflow=workflow)
            context["workflow_tools"] = self.workflow_tools(request, workflow)
        return super().change_view(request, object_id, form_url, extra_context=context)

    def workflow_tools(self, request: HttpRequest, workflow: Workflow) -> list[dict[str, str]]:
        """Buttons on the change page: `{label, url, method}` (subclasses add theirs)."""
        return []

    # -- upload

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the upload form. POST with a file: the dry-run diff. POST `apply` with the
        upload's digest: the import, and its report."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        context: dict[str, Any] = {**self.admin_site.each_context(request),
                                   "opts": self.model._meta, "title": "Upload a component library"}
        form = ComponentLibraryUploadForm()
        if request.method == "POST" and "apply" in request.POST:
            digest = request.POST.get("digest", "")
            content = cache.get(_upload_key(request.user, digest)) if digest else None
            if content is None:
                messages.error(request, "That upload has expired; upload the zip again.")
            else:
                context.update(self._import(request, content, digest=digest, dry_run=False))
        elif request.method == "POST":
            form = ComponentLibraryUploadForm(request.POST, request.FILES)
            if form.is_valid():
                content = form.cleaned_data["file"].read()
                digest = hashlib.sha256(content).hexdigest()
                context.update(self._import(request, content, digest=digest, dry_run=True))
                if "report" in context:
                    cache.set(_upload_key(request.user, digest), content, _UPLOAD_TTL_S)
        context["form"] = form
        return TemplateResponse(request, "admin/workflows_app/workflow/import.html", context)

    def _import(self, request: HttpRequest, content: bytes, *, digest: str,
                dry_run: bool) -> dict[str, Any]:
        try:
            report = components_import_zip(archive=io.BytesIO(content), dry_run=dry_run)
        except DomainError as exc:
            messages.error(request, exc.message)
            return {}
        return {"report": report, "digest": digest}


class ServerAdminForm(forms.ModelForm):
    class Meta:
        model = Server
        fields = ["name", "url"]

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"]).strip().rstrip("/")
        errors = server_url_errors(url)
        if errors:
            raise forms.ValidationError(errors)
        return url


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    form = ServerAdminForm
    list_display = ["name", "url", "created_at"]
    search_fields = ["name", "url"]
    actions = ["check_servers"]

    @admin.action(description="Check selected servers (GET /system_stats)")
    def check_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            result = server_check(server=server)
            if result["ok"]:
                devices = ", ".join(
                    f"{d['name']} ({_gib(d['vram_free'])} of {_gib(d['vram_total'])} free)"
                    for d in result["devices"]) or "no devices"
                messages.success(request, f"{server.name}: ComfyUI {result['comfyui_version']}, "
                                          f"{devices}; answered in {result['latency_ms']} ms.")
            else:
                messages.error(request, f"{server.name}: {result['error']}")


def _gib(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value / 2**30:.1f} GiB"


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    list_display = ["name", "save_to", "file_size", "is_auth_req", "created_at"]
    list_filter = ["is_auth_req"]
    search_fields = ["name", "download_url"]


@admin.register(CustomNode)
class CustomNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "download_url", "branch", "commit"]
    search_fields = ["name", "download_url"]


@admin.register(FormConfig)
class FormConfigAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


@admin.register(UserApiSecret)
class UserApiSecretAdmin(admin.ModelAdmin):
    list_display = ["workflow_name", "user", "updated_at"]
    search_fields = ["workflow_name", "user__username"]
    exclude = ["encrypted_value"]  # write-only: not even staff read users' keys back
    readonly_fields = ["user", "workflow_name", "created_at", "updated_at"]
