from __future__ import annotations

from typing import Any

from django.core.validators import URLValidator
from rest_framework import serializers

from collections_app.api.serializers import CollectionInputSerializer, CollectionOutputSerializer
from generation_app.services.unified import MAX_BATCH_ITEMS, WEBHOOK_EVENTS
from jobs_app.api.serializers import JobOutputSerializer


class WebhookInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000,
                                validators=[URLValidator(schemes=["http", "https"])])
    events = serializers.ListField(child=serializers.ChoiceField(choices=WEBHOOK_EVENTS),
                                   allow_empty=False, required=False,
                                   default=lambda: list(WEBHOOK_EVENTS))


class UnifiedGenerateInputSerializer(CollectionInputSerializer):
    """A workflow, its form values and the collection fields; `data` is built, not given."""

    data = None  # type: ignore[assignment]  # removes the inherited field
    workflow_id = serializers.UUIDField(required=False, allow_null=True)
    workflow_name = serializers.CharField(max_length=200, required=False, allow_null=True)
    inputs = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    # no max_length: MAX_VARIABLES is checked with the rest of the GenerationInput's caps
    variables = serializers.ListField(child=serializers.DictField(), required=False,
                                      default=list)
    count = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    hashes = serializers.ListField(child=serializers.JSONField(), required=False,
                                   allow_null=True, max_length=1000)
    project_id = serializers.UUIDField(required=False, allow_null=True)
    priority = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                        max_value=100)
    webhook = WebhookInputSerializer(required=False, allow_null=True)
    run_at = serializers.DateTimeField(required=False, allow_null=True)
    no_cache = serializers.BooleanField(
        required=False, default=False,
        help_text="Run every step, even where an identical earlier run of yours could be "
                  "reused (default: reuse it, free of charge).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # a misspelt key ("input") would otherwise be ignored and the run use defaults
        unknown = sorted(set(self.initial_data) - set(self.fields)) \
            if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({k: ["Unknown field."] for k in unknown})
        if (attrs.get("workflow_id") is None) == (attrs.get("workflow_name") is None):
            raise serializers.ValidationError(
                {"workflow_id": ["Give exactly one of workflow_id and workflow_name."]})
        if attrs.get("count") is not None and attrs.get("hashes") is not None:
            raise serializers.ValidationError({"hashes": ["Give count or hashes, not both."]})
        return attrs


class UnifiedBatchInputSerializer(serializers.Serializer):
    # items are parsed one by one by the view, so that each item's errors are reported by index
    items = serializers.ListField(child=serializers.JSONField(), allow_empty=False,
                                  max_length=MAX_BATCH_ITEMS)


class UnifiedCostOutputSerializer(serializers.Serializer):
    per_generation = serializers.FloatField()
    total = serializers.FloatField()
    breakdown = serializers.ListField(child=serializers.DictField())


class UnifiedUrlsOutputSerializer(serializers.Serializer):
    collection = serializers.CharField()
    job = serializers.CharField()
    events = serializers.CharField()
    public = serializers.CharField()
    gallery = serializers.CharField(
        help_text="A signed link to the collection's gallery page (read-only, expires after "
                  "GALLERY_LINK_SECONDS).")


class UnifiedGenerateOutputSerializer(serializers.Serializer):
    collection = CollectionOutputSerializer()
    job = JobOutputSerializer()
    cost = UnifiedCostOutputSerializer()
    urls = UnifiedUrlsOutputSerializer()


class UnifiedBatchOutputSerializer(serializers.Serializer):
    items = UnifiedGenerateOutputSerializer(many=True)
    total_cost = serializers.FloatField()
