from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from collections_app.models import (
    Collection,
    CollectionHistory,
    CollectionPreview,
    CollectionPreviewVersion,
    CollectionRemix,
    Component,
    ComponentFlatFile,
    FlatFile,
    Project,
)
from emprops.storage import public_url


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "is_default", "version", "created_at"]
    list_filter = ["is_default"]
    search_fields = ["name", "user__username", "id"]


class ComponentInline(admin.TabularInline):
    model = Component
    extra = 0
    readonly_fields = ["id", "node_name", "created_at"]


class HistoryInline(admin.TabularInline):
    model = CollectionHistory
    extra = 0
    readonly_fields = ("action", "user", "changed_fields", "created_at")
    fields = readonly_fields
    can_delete = False


ADMIN_OUTPUTS_SHOWN = 50
# raster images only: an SVG or HTML output is user-made active content (see emprops/usercontent)
_THUMBNAIL_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


def _job_link(job_id: Any) -> SafeString | str:
    """A link to the job's live admin page (jobs_app's admin), or the bare id without it."""
    if not job_id:
        return "-"
    try:
        url = reverse("admin:jobs_app_job_change", args=[job_id])
    except NoReverseMatch:
        return str(job_id)
    return format_html('<a href="{}">{}</a>', url, job_id)


def _step_refs(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    refs = [f"{key} ← #{value['$ref']}" for key, value in payload.items()
            if isinstance(value, dict) and "$ref" in value]
    return ", ".join(refs)


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ["title", "id", "project", "status", "archived", "publish_date", "created_at"]
    list_filter = ["status", "archived", "blockchain"]
    search_fields = ["title", "description", "id", "project__user__username"]
    inlines = [ComponentInline, HistoryInline]
    date_hierarchy = "created_at"
    readonly_fields = ["steps_overview", "outputs_overview"]

    @admin.display(description="steps")
    def steps_overview(self, obj: Collection) -> SafeString | str:
        steps = [st for st in (obj.data or {}).get("steps") or [] if isinstance(st, dict)]
        if not steps:
            return "No steps."
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                                    "<td>{}</td></tr>", (
            (st.get("id"), st.get("nodeName"), st.get("alias") or "",
             "skipped" if st.get("skip") else "", _step_refs(st.get("nodePayload")))
            for st in steps))
        return format_html('<table class="collection-steps"><thead><tr><th>id</th><th>node</th>'
                           "<th>alias</th><th></th><th>reads</th></tr></thead><tbody>{}</tbody>"
                           "</table>", rows)

    @admin.display(description="outputs (newest first)")
    def outputs_overview(self, obj: Collection) -> SafeString | str:
        if obj.pk is None:
            return "-"
        files = list(FlatFile.objects.filter(component_links__component__collection=obj)
                     .distinct().order_by("-created_at", "-id")[:ADMIN_OUTPUTS_SHOWN])
        if not files:
            return "No outputs yet."

        def preview(f: FlatFile) -> SafeString:
            url = public_url(f.storage_key)
            if f.mime_type in _THUMBNAIL_TYPES:
                return format_html('<a href="{}"><img src="{}" alt="{}" loading="lazy" '
                                   'style="max-width:96px;max-height:96px"></a>', url, url, f.name)
            return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', url, f.name)

        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                                    "<td>{}</td><td>{}</td></tr>", (
            (preview(f), f.rel_id or "", f.mime_type or "",
             ", ".join(f"{k}: {v}" for k, v in (f.features or {}).items()),
             _job_link(f.job_id), f.created_at.strftime("%Y-%m-%d %H:%M:%S"))
            for f in files))
        return format_html('<table class="collection-outputs"><thead><tr><th>file</th>'
                           "<th>step</th><th>type</th><th>traits</th><th>job (live page)</th>"
                           "<th>created</th></tr></thead><tbody>{}</tbody></table>", rows)


@admin.register(Component)
class ComponentAdmin(admin.ModelAdmin):
    list_display = ["id", "node_name", "collection", "created_at"]
    search_fields = ["node_name", "id"]


@admin.register(FlatFile)
class FlatFileAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "mime_type", "user", "rel_type", "rel_id", "features",
                    "created_at"]
    list_filter = ["mime_type", "rel_type", "hidden"]
    search_fields = ["name", "storage_key", "rel_id"]


admin.site.register(ComponentFlatFile)
admin.site.register(CollectionPreview)
admin.site.register(CollectionPreviewVersion)
admin.site.register(CollectionRemix)


@admin.register(CollectionHistory)
class CollectionHistoryAdmin(admin.ModelAdmin):
    list_display = ["collection", "action", "user", "created_at"]
    list_filter = ["action"]
    search_fields = ["collection__title", "collection__id"]
