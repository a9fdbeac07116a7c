from django.contrib import admin

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


class WorkflowModelInline(admin.TabularInline):
    model = WorkflowModel
    extra = 0
    autocomplete_fields = ["model"]


class WorkflowCustomNodeInline(admin.TabularInline):
    model = WorkflowCustomNode
    extra = 0
    autocomplete_fields = ["custom_node"]


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "label", "type", "output_mime_type", "display", "order", "server",
                    "created_at"]
    list_filter = ["type", "display", "output_mime_type", "server"]
    search_fields = ["name", "label", "description"]
    list_editable = ["display", "order"]
    inlines = [WorkflowModelInline, WorkflowCustomNodeInline]


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    list_display = ["name", "url", "created_at"]
    search_fields = ["name", "url"]


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
