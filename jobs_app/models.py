"""Jobs, their generations and node runs (the record of pending work), history and events."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="jobs")
    name = models.CharField(max_length=500)
    description = models.TextField(blank=True, default="")
    job_type = models.CharField(max_length=64, default="collection_generation", db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    progress = models.IntegerField(default=0)
    priority = models.IntegerField(default=5)
    data = models.JSONField(default=dict)
    # the GenerationInput as it was when the request was accepted (later edits don't change runs)
    input = models.JSONField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    retry_count = models.IntegerField(default=0)
    max_retries = models.IntegerField(default=3)
    # next event sequence number; bumped with F() under the job's row lock
    event_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # a one-off `run_at`: no generation is admitted before this time (the reaper admits it)
    not_before = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "job"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return self.name


class Generation(models.Model):
    """One generation (one hash) of a job."""

    class Status(models.TextChoices):
        PENDING = "pending"
        WAITING = "waiting"  # over the user's running-generation cap: waits its turn
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="generations")
    gid = models.IntegerField()
    hash = models.CharField(max_length=200)
    seed = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    variables = models.JSONField(default=dict)
    position = models.BigIntegerField(default=0)  # order among the user's waiting generations
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    failure_type = models.CharField(max_length=32, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "job_generation"
        ordering = ["job", "gid"]
        constraints = [models.UniqueConstraint(fields=["job", "gid"], name="uniq_job_gid")]


class NodeRun(models.Model):
    """One step of one generation: claimed with a conditional update and a lease."""

    class Status(models.TextChoices):
        BLOCKED = "blocked"  # waits for upstream steps
        QUEUED = "queued"  # ready; announced to a queue
        RUNNING = "running"  # claimed; lease_until bounds the claim
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SKIPPED = "skipped"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="node_runs")
    gid = models.IntegerField()
    step_id = models.BigIntegerField()
    node_name = models.CharField(max_length=200)
    alias = models.CharField(max_length=300, null=True, blank=True)
    # The frozen plan, written when the job is planned: the steps this run waits on, its queue,
    # whether it runs inside the engine task that releases it, and the content address of the
    # workflow snapshot it runs (generation_app's WorkflowSnapshot). Nothing re-reads live
    # workflows to decide what runs next.
    queue = models.CharField(max_length=100, default="engine")
    depends_on = models.JSONField(default=list, blank=True)
    inline = models.BooleanField(default=False)
    workflow_digest = models.CharField(max_length=64, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BLOCKED)
    attempt = models.IntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    announced_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    worker = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "node_run"
        ordering = ["job", "gid", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "gid", "step_id"],
                                               name="uniq_node_run")]
        indexes = [models.Index(fields=["status", "next_attempt_at"]),
                   models.Index(fields=["status", "lease_until"])]


class JobHistory(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="history")
    status = models.CharField(max_length=16)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    retry_attempt = models.IntegerField(default=0)
    # what wrote the row, so a redelivered node run cannot write its row twice
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "job_history"
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "dedupe_key"],
                                               name="uniq_history_dedupe")]


class JobEvent(models.Model):
    """A live event, written in the same transaction as the change it describes."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    event_type = models.CharField(max_length=32)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "job_event"
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="uniq_job_event_seq")]
