from __future__ import annotations

from rest_framework import serializers


class GenerationRequestInputSerializer(serializers.Serializer):
    variables = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    workflow_priority = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                                 max_value=100)
    count = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    hashes = serializers.ListField(child=serializers.JSONField(), required=False,
                                   allow_null=True, max_length=1000)


class GenerationRequestOutputSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()  # noqa: N815 - the existing platform's wire name


class JobRetryInputSerializer(serializers.Serializer):
    refresh_workflows = serializers.BooleanField(
        required=False, default=False,
        help_text="Plan and quote the failed generations again against the workflows as they "
                  "are now (default: run the job's frozen plan).")
