from __future__ import annotations

from rest_framework import serializers

from jobs_app.api.serializers import JobOutputSerializer


class GenerationRequestInputSerializer(serializers.Serializer):
    variables = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    workflow_priority = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                                 max_value=100)
    count = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    hashes = serializers.ListField(child=serializers.JSONField(), required=False,
                                   allow_null=True, max_length=1000)
    no_cache = serializers.BooleanField(
        required=False, default=False,
        help_text="Run every step, even where an identical earlier run of yours could be "
                  "reused (default: reuse it, free of charge).")


class GenerationRequestOutputSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()  # noqa: N815 - the existing platform's wire name


class JobRetryInputSerializer(serializers.Serializer):
    refresh_workflows = serializers.BooleanField(
        required=False, default=False,
        help_text="Plan and quote the failed generations again against the workflows as they "
                  "are now (default: run the job's frozen plan).")


class JobWaitOutputSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["waiting_for_slot", "scheduled", "retrying", "queued"], allow_null=True,
        help_text="null: finished or running. waiting_for_slot: over your running-generation "
                  "cap; scheduled: its run_at is ahead; retrying: a step backs off after an "
                  "upstream error; queued: its next step waits for a worker.")
    position = serializers.IntegerField(
        allow_null=True, help_text="How many of your waiting generations (waiting_for_slot) or "
                                   "of the queue's ready steps (queued) are ahead of it.")
    estimate_seconds = serializers.FloatField(
        allow_null=True, help_text="About how long until it runs, from the median duration of "
                                   "recent runs of its node types (null: no runs yet).")
    retry_at = serializers.DateTimeField(allow_null=True)
    run_at = serializers.DateTimeField(allow_null=True)


class JobDetailUrlsOutputSerializer(serializers.Serializer):
    gallery = serializers.CharField(
        allow_null=True, help_text="A signed link to the job's collection in the gallery "
                                   "(read-only, expires; null for a job without a collection).")


class JobDetailOutputSerializer(JobOutputSerializer):
    waiting = JobWaitOutputSerializer()
    urls = JobDetailUrlsOutputSerializer()

    class Meta(JobOutputSerializer.Meta):
        fields = [*JobOutputSerializer.Meta.fields, "waiting", "urls"]


class ReplaySourceOutputSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()  # noqa: N815 - the platform's camelCase wire names
    gid = serializers.IntegerField()


class ReplayOutputSerializer(serializers.Serializer):
    jobId = serializers.UUIDField(source="id")  # noqa: N815
    status = serializers.CharField()
    replayOf = ReplaySourceOutputSerializer(source="data.replay")  # noqa: N815
    verdict = serializers.JSONField(source="data.verdict", allow_null=True,
                                    help_text="null until the replay completes; then "
                                              "{verdict: identical|equivalent|drifted, steps, "
                                              "tolerance, source}")
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
