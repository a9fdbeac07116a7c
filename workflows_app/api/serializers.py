from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from emprops.api import PG_BIGINT_MAX, PG_INT_MAX, PG_INT_MIN
from workflows_app import selectors
from workflows_app.models import AIModel, CustomNode, FormConfig, Server, UserApiSecret, Workflow

# ---- discovery ---------------------------------------------------------------------------------


class WorkflowModelRefOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(allow_null=True)
    name = serializers.CharField()
    is_required = serializers.BooleanField(allow_null=True)
    download_url = serializers.CharField(allow_null=True)
    save_to = serializers.CharField(allow_null=True)
    file_size = serializers.IntegerField(allow_null=True)
    is_auth_req = serializers.BooleanField(allow_null=True)


class _WorkflowDerivedFields(serializers.ModelSerializer):
    """The fields computed from a row: resolved form, models, cost (one generation)."""

    form = serializers.SerializerMethodField()
    models = serializers.SerializerMethodField()
    cost = serializers.SerializerMethodField()

    @extend_schema_field({"type": "object", "nullable": True,
                          "description": "The form with `conf_file` option lists resolved."})
    def get_form(self, obj: Workflow) -> Any:
        return selectors.workflow_resolved_form(workflow=obj, confs=self.context.get("confs"))

    @extend_schema_field(WorkflowModelRefOutputSerializer(many=True))
    def get_models(self, obj: Workflow) -> list[dict[str, Any]]:
        return selectors.workflow_models(workflow=obj)

    @extend_schema_field({"type": "number",
                          "description": "Credits per generation of the test payload (or of "
                                         "the form defaults)."})
    def get_cost(self, obj: Workflow) -> float:
        return selectors.workflow_unit_cost(workflow=obj)


class WorkflowConsumerOutputSerializer(_WorkflowDerivedFields):
    """What API consumers see: no graph, API template, job template or credits script."""

    class Meta:
        model = Workflow
        fields = ["id", "name", "label", "description", "type", "output_mime_type", "order",
                  "est_gen_time", "form", "models", "cost", "created_at"]


class WorkflowStaffOutputSerializer(_WorkflowDerivedFields):
    """The full row (staff)."""

    server_id = serializers.UUIDField(read_only=True, allow_null=True)
    server_name = serializers.CharField(source="server.name", read_only=True, allow_null=True,
                                        default=None)

    class Meta:
        model = Workflow
        fields = ["id", "name", "label", "description", "type", "data", "output_mime_type",
                  "display", "order", "server_id", "server_name", "est_gen_time",
                  "machine_type", "min_vram", "form", "models", "cost", "created_at",
                  "updated_at"]


def workflow_output_serializer(user: Any) -> type[serializers.Serializer]:
    return (WorkflowStaffOutputSerializer if getattr(user, "is_staff", False)
            else WorkflowConsumerOutputSerializer)


class WorkflowFormOutputSerializer(serializers.Serializer):
    workflow_id = serializers.UUIDField()
    name = serializers.CharField()
    schema = serializers.JSONField(help_text="JSON Schema (2020-12) of the inputs.")
    config = serializers.JSONField()
    fields = serializers.JSONField(  # type: ignore[assignment]
        help_text="The UI field list, option lists resolved.")
    example = serializers.JSONField(help_text="An example body for POST /api/collections/generate.")


# ---- users' secrets ------------------------------------------------------------------------------


class SecretInputSerializer(serializers.Serializer):
    value = serializers.CharField(max_length=20_000, trim_whitespace=False)


class SecretOutputSerializer(serializers.ModelSerializer):
    """Never the value: secrets are write-only."""

    class Meta:
        model = UserApiSecret
        fields = ["workflow_name", "created_at", "updated_at"]


# ---- staff tool surface ------------------------------------------------------------------------


class StaffWorkflowInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    label = serializers.CharField(  # type: ignore[assignment]
        max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    type = serializers.ChoiceField(choices=Workflow.Type.choices, required=False)
    data = serializers.DictField(required=False)  # type: ignore[assignment]
    output_mime_type = serializers.CharField(max_length=100, required=False, allow_null=True,
                                             allow_blank=True)
    display = serializers.BooleanField(required=False)
    order = serializers.IntegerField(required=False, min_value=PG_INT_MIN, max_value=PG_INT_MAX)
    server = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                   help_text="A server's id or name.")
    server_id = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    est_gen_time = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                            max_value=PG_INT_MAX)
    machine_type = serializers.CharField(max_length=100, required=False, allow_null=True,
                                         allow_blank=True)
    min_vram = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                        max_value=PG_INT_MAX)
    models = serializers.ListField(child=serializers.CharField(), required=False)
    custom_nodes = serializers.ListField(child=serializers.CharField(), required=False)


class StaffWorkflowUpdateInputSerializer(StaffWorkflowInputSerializer):
    name = serializers.CharField(max_length=200, required=False)


class StaffServerOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Server
        fields = ["id", "name", "url", "created_at"]


class StaffServerInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    url = serializers.CharField(max_length=500, help_text="The ComfyUI base URL, http(s).")


class StaffServerDeviceOutputSerializer(serializers.Serializer):
    name = serializers.CharField(allow_null=True)
    type = serializers.CharField(allow_null=True)
    vram_total = serializers.IntegerField(allow_null=True)
    vram_free = serializers.IntegerField(allow_null=True)


class StaffServerCheckOutputSerializer(serializers.Serializer):
    """`GET {url}/system_stats` of the server: what it runs, or why it did not answer."""

    name = serializers.CharField()
    url = serializers.CharField()
    ok = serializers.BooleanField()
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(required=False)
    comfyui_version = serializers.CharField(required=False, allow_null=True)
    python_version = serializers.CharField(required=False, allow_null=True)
    pytorch_version = serializers.CharField(required=False, allow_null=True)
    devices = StaffServerDeviceOutputSerializer(many=True, required=False)


class StaffFormConfigInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    data = serializers.JSONField()  # type: ignore[assignment]


class StaffFormConfigUpdateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    data = serializers.JSONField(required=False)  # type: ignore[assignment]


class StaffFormConfigOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = FormConfig
        fields = ["id", "name", "data", "created_at"]


class StaffModelInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=300)
    download_url = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    save_to = serializers.CharField(max_length=500, required=False, allow_blank=True)
    file_size = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                         max_value=PG_BIGINT_MAX)
    hash = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    auth_env_var = serializers.CharField(max_length=200, required=False, allow_null=True,
                                         allow_blank=True)
    is_auth_req = serializers.BooleanField(required=False)


class StaffModelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = AIModel
        fields = ["id", "name", "download_url", "save_to", "file_size", "hash", "auth_env_var",
                  "is_auth_req", "created_at"]


class StaffCustomNodeInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=300)
    download_url = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    branch = serializers.CharField(max_length=200, required=False, allow_null=True,
                                   allow_blank=True)
    commit = serializers.CharField(max_length=100, required=False, allow_null=True,
                                   allow_blank=True)
    install_settings = serializers.JSONField(required=False, allow_null=True)


class StaffCustomNodeOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = CustomNode
        fields = ["id", "name", "download_url", "branch", "commit", "install_settings",
                  "created_at"]
