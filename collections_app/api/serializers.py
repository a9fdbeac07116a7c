from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from collections_app.models import (
    Collection,
    CollectionHistory,
    CollectionPreview,
    FlatFile,
    Project,
)
from emprops.api import PG_BIGINT_MAX, PG_INT_MAX


class ProjectInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    is_default = serializers.BooleanField(required=False, default=False)


class ProjectUpdateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    is_default = serializers.BooleanField(required=False)


class ProjectOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Project
        fields = ["id", "user_id", "name", "version", "is_default", "created_at"]


class CollectionInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=300, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    data = serializers.JSONField(required=False, allow_null=True)  # type: ignore[assignment]
    batch_max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                                max_value=PG_INT_MAX)
    batch_mint_enabled = serializers.BooleanField(required=False)
    blockchain = serializers.ChoiceField(choices=Collection.Blockchain.choices, required=False,
                                         allow_null=True)
    cover_image_url = serializers.CharField(max_length=1000, required=False, allow_null=True,
                                            allow_blank=True)
    editions = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                        max_value=PG_INT_MAX)
    encryption_enabled = serializers.BooleanField(required=False)
    images = serializers.JSONField(required=False, allow_null=True)
    is_current = serializers.BooleanField(required=False)
    price = serializers.DecimalField(max_digits=20, decimal_places=8, required=False,
                                     allow_null=True, min_value=0)


class CollectionCreateQuerySerializer(serializers.Serializer):
    project_id = serializers.UUIDField(required=False, allow_null=True)
    asset_id = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                        max_value=PG_BIGINT_MAX)


class CollectionOutputSerializer(serializers.ModelSerializer):
    project_id = serializers.UUIDField(read_only=True)
    user_id = serializers.UUIDField(source="project.user_id", read_only=True)

    class Meta:
        model = Collection
        fields = [
            "id", "project_id", "user_id", "title", "description", "data", "status", "archived",
            "batch_max_tokens", "batch_mint_enabled", "blockchain", "cover_image_url", "editions",
            "encryption_enabled", "images", "is_current", "price", "publish_date", "created_at",
            "updated_at",
        ]


class CollectionArchiveInputSerializer(serializers.Serializer):
    archived = serializers.BooleanField(required=False, default=True)


class CollectionRemixInputSerializer(serializers.Serializer):
    project_id = serializers.UUIDField(required=False, allow_null=True)


class CollectionHistoryOutputSerializer(serializers.ModelSerializer):
    collection_id = serializers.UUIDField(read_only=True)
    user_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = CollectionHistory
        fields = ["id", "collection_id", "user_id", "action", "changed_fields", "data_before",
                  "data_after", "created_at"]


class CollectionPreviewInputSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    max_generations = serializers.IntegerField(required=False, min_value=0, max_value=PG_INT_MAX)
    access_level = serializers.ChoiceField(choices=CollectionPreview.AccessLevel.choices,
                                           required=False)
    is_remixable = serializers.BooleanField(required=False)


class CollectionPreviewOutputSerializer(serializers.ModelSerializer):
    collection_id = serializers.UUIDField(read_only=True)
    version = serializers.SerializerMethodField()
    versions = serializers.SerializerMethodField()

    class Meta:
        model = CollectionPreview
        fields = ["collection_id", "enabled", "max_generations", "total_generations",
                  "access_level", "is_remixable", "version", "versions", "updated_at"]

    def get_version(self, obj: CollectionPreview) -> int | None:
        latest = obj.versions.filter(is_latest=True).first()
        return latest.version if latest else None

    @extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
        "version": {"type": "integer"}, "is_latest": {"type": "boolean"},
        "data": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"}}}})
    def get_versions(self, obj: CollectionPreview) -> list[dict[str, object]]:
        return [{"version": v.version, "is_latest": v.is_latest, "data": v.data,
                 "created_at": v.created_at} for v in obj.versions.order_by("-version")[:20]]


class FlatFileOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = FlatFile
        fields = ["id", "user_id", "name", "url", "mime_type", "hidden", "rel_id", "rel_type",
                  "tags", "features", "gen_in_data", "gen_out_data", "created_at"]

    def get_url(self, obj: FlatFile) -> str:
        from emprops.storage import public_url

        return public_url(obj.storage_key)


class ProjectUntitledInputSerializer(serializers.Serializer):
    version = serializers.ChoiceField(choices=["v1", "v2"], required=False, default="v2")


class InstructionSetLintQuerySerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=["all", "error", "warn"], required=False,
                                    default="all")


class LintRuleOutputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The rule (`unused_char_str_var`, `generation_limit`, "
                                         "`duplicate_hashes`, ...).")
    messages = serializers.ListField(child=serializers.CharField())
    level = serializers.ChoiceField(choices=["warn", "error"])


class LintReportOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["passed", "failed"],
                                     help_text="`failed` when any `error` rule applies.")
    rules = LintRuleOutputSerializer(many=True)
    error = serializers.CharField(allow_null=True, help_text="Always null (the existing shape).")
