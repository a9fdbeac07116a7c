"""Input and output serializers of webhooks, schedules and templates."""

from __future__ import annotations

from urllib.parse import urlsplit

from rest_framework import serializers

from collections_app.api.serializers import CollectionInputSerializer, CollectionOutputSerializer
from generation_app.models import (
    CollectionSchedule,
    ScheduleRun,
    Template,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from generation_app.services.webhooks import EVENTS
from jobs_app.api.serializers import JobOutputSerializer

# ---- webhooks ----------------------------------------------------------------------------------


class WebhookSecretOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookSecret
        fields = ["secret", "created_at", "rotated_at"]


def _http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise serializers.ValidationError("An http(s) URL with a host.")


class WebhookEndpointInputSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000, validators=[_http_url])
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENTS),
                                   required=False, default=list, max_length=len(EVENTS))
    active = serializers.BooleanField(required=False, default=True)


class WebhookEndpointOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "user_id", "url", "events", "active", "created_at"]


class WebhookAttemptOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["attempted_at", "status_code", "error", "duration_ms"]


class WebhookDeliveryOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    job_id = serializers.UUIDField(read_only=True, allow_null=True)
    endpoint_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = WebhookDelivery
        fields = ["id", "webhook_id", "user_id", "job_id", "endpoint_id", "url", "event",
                  "payload", "status", "attempts", "next_attempt_at", "last_status_code",
                  "last_error", "created_at", "delivered_at"]


class WebhookDeliveryDetailOutputSerializer(WebhookDeliveryOutputSerializer):
    attempt_log = WebhookAttemptOutputSerializer(source="attempt_rows", many=True, read_only=True)

    class Meta(WebhookDeliveryOutputSerializer.Meta):
        fields = [*WebhookDeliveryOutputSerializer.Meta.fields, "attempt_log"]


# ---- schedules ---------------------------------------------------------------------------------


class ScheduleInputSerializer(serializers.Serializer):
    cron = serializers.CharField(max_length=200, required=False, allow_null=True)
    interval_seconds = serializers.IntegerField(required=False, allow_null=True)
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")
    end_at = serializers.DateTimeField(required=False, allow_null=True)
    count = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1000)
    variables = serializers.DictField(child=serializers.JSONField(), required=False,
                                      default=dict)


class ScheduleOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    collection_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = CollectionSchedule
        fields = ["id", "user_id", "collection_id", "cron", "interval_seconds", "timezone",
                  "end_at", "count", "variables", "status", "next_run_at", "last_run_at",
                  "created_at", "updated_at"]


class ScheduleRunOutputSerializer(serializers.ModelSerializer):
    schedule_id = serializers.UUIDField(read_only=True)
    job_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = ScheduleRun
        fields = ["id", "schedule_id", "scheduled_for", "job_id", "status", "error",
                  "created_at"]


# ---- templates ---------------------------------------------------------------------------------


class TemplateParameterSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    schema = serializers.JSONField(required=False)
    target = serializers.CharField(max_length=1000)
    description = serializers.CharField(required=False, allow_blank=True)


class TemplateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=300)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    data = serializers.JSONField()  # type: ignore[assignment]
    # checked by the service (schema and pointer against data), so errors name the parameter
    parameters = serializers.ListField(child=serializers.JSONField(), required=False,
                                       default=list, max_length=100)
    is_public = serializers.BooleanField(required=False, default=False)


class TemplateOutputSerializer(serializers.ModelSerializer):
    owner_id = serializers.UUIDField(read_only=True, allow_null=True)
    parameters = TemplateParameterSerializer(many=True, read_only=True)

    class Meta:
        model = Template
        fields = ["id", "owner_id", "name", "description", "data", "parameters", "is_public",
                  "created_at", "updated_at"]


class TemplateOverridesSerializer(CollectionInputSerializer):
    """Collection fields to set on the new collection (not `data`: that is the template's)."""

    data = None  # type: ignore[assignment]


class TemplateGenerateSerializer(serializers.Serializer):
    count = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    hashes = serializers.ListField(child=serializers.JSONField(), required=False,
                                   allow_null=True, max_length=1000)
    variables = serializers.DictField(child=serializers.JSONField(), required=False,
                                      default=dict)
    workflow_priority = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                                 max_value=100)


class TemplateCollectionInputSerializer(serializers.Serializer):
    parameters = serializers.DictField(child=serializers.JSONField(), required=False,
                                       default=dict)
    overrides = TemplateOverridesSerializer(required=False, default=dict)
    project_id = serializers.UUIDField(required=False, allow_null=True)
    generate = TemplateGenerateSerializer(required=False, allow_null=True)


class TemplateCollectionOutputSerializer(serializers.Serializer):
    collection = CollectionOutputSerializer()
    job = JobOutputSerializer(allow_null=True)
