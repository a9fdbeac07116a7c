"""Jobs, their history and their events. A job's generations and node runs (the record of
pending work) are the engine's: generation_app.models."""

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
        verbose_name_plural = "job histories"
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
