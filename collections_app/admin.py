from django.contrib import admin

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


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ["title", "id", "project", "status", "archived", "publish_date", "created_at"]
    list_filter = ["status", "archived", "blockchain"]
    search_fields = ["title", "description", "id", "project__user__username"]
    inlines = [ComponentInline, HistoryInline]
    date_hierarchy = "created_at"


@admin.register(Component)
class ComponentAdmin(admin.ModelAdmin):
    list_display = ["id", "node_name", "collection", "created_at"]
    search_fields = ["node_name", "id"]


@admin.register(FlatFile)
class FlatFileAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "mime_type", "user", "rel_type", "rel_id", "created_at"]
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
