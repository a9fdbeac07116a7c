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
