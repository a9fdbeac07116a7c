from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs_app.models import Job, JobHistory


class JobOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    run_at = serializers.DateTimeField(source="not_before", read_only=True, allow_null=True)
    cost = serializers.SerializerMethodField(
        help_text="Itemised cost of the finished generations: {quoted, charged, released, "
                  "generations: [{gid, status, quoted, charged, released, steps: [{stepId, "
                  "nodeName, quoted, charged, reason: ran|retry|cached|failed: released}]}]}; "
                  "null until a generation finishes.")

    class Meta:
        model = Job
        fields = ["id", "user_id", "name", "description", "job_type", "status", "progress",
                  "priority", "data", "cost", "error_message", "retry_count", "max_retries",
                  "run_at", "created_at", "updated_at", "started_at", "completed_at"]

    @extend_schema_field({"type": "object", "nullable": True, "additionalProperties": True})
    def get_cost(self, job: Job) -> dict[str, Any] | None:
        cost = (job.data or {}).get("cost") if isinstance(job.data, dict) else None
        return cost if isinstance(cost, dict) else None


class JobHistoryOutputSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = JobHistory
        fields = ["id", "job_id", "status", "message", "data", "retry_attempt", "created_at"]


class EventsTokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_in = serializers.IntegerField()
    url = serializers.CharField()
