from __future__ import annotations

from rest_framework import serializers

from jobs_app.models import Job, JobHistory


class JobOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    run_at = serializers.DateTimeField(source="not_before", read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = ["id", "user_id", "name", "description", "job_type", "status", "progress",
                  "priority", "data", "error_message", "retry_count", "max_retries",
                  "run_at", "created_at", "updated_at", "started_at", "completed_at"]


class JobHistoryOutputSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = JobHistory
        fields = ["id", "job_id", "status", "message", "data", "retry_attempt", "created_at"]


class EventsTokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_in = serializers.IntegerField()
    url = serializers.CharField()
