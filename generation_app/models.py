"""generation_app orchestrates the other apps. Its own rows: the engine's generations and node
runs (the record of pending work, written only here), the workflow snapshots jobs are planned
with, webhooks (an outbox of deliveries written in the same transaction as the job change they
describe), collection schedules and templates. Jobs, their history and events are jobs_app's."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


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

    job = models.ForeignKey("jobs_app.Job", on_delete=models.CASCADE, related_name="generations")
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

    job = models.ForeignKey("jobs_app.Job", on_delete=models.CASCADE, related_name="node_runs")
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
    # failures recorded and retried (claims beyond them were lost with their worker)
    retries = models.IntegerField(default=0)
    # when the current run of transient failures began (the upstream retry window counts from it)
    retrying_since = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    announced_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    worker = models.CharField(max_length=200, null=True, blank=True)
    # Content address of this run (generation_app/services/runcache.py): sha256 of the node type
    # and version, its environment, workflow snapshot, payload, the content hashes of the
    # outputs it sees, seed, hash and variables. Null when the run may not be served from cache.
    cache_key = models.CharField(max_length=64, null=True, blank=True)
    # what could change its bytes where it ran (Chromium and p5 versions, the ComfyUI server ...)
    env = models.JSONField(null=True, blank=True)
    # filename -> {sha256, mimeType, key} of each stored output file
    output_files = models.JSONField(null=True, blank=True)
    # the completed run whose output this one reused (same owner, same cache key)
    cached_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", db_constraint=False)
    # the step's quoted cost (frozen with the plan), what it was charged and why
    cost = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    charged = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    charge_reason = models.CharField(max_length=32, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "node_run"
        ordering = ["job", "gid", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "gid", "step_id"],
                                               name="uniq_node_run")]
        indexes = [models.Index(fields=["status", "next_attempt_at"]),
                   models.Index(fields=["status", "lease_until"]),
                   models.Index(fields=["cache_key"], name="node_run_cache_key",
                                condition=Q(cache_key__isnull=False)),
                   # a node type's recent durations (wait estimates, generation_app.selectors)
                   models.Index(fields=["node_name", "completed_at"],
                                name="node_run_done_by_type",
                                condition=Q(status="completed"))]



class WebhookSecret(models.Model):
    """A user's Standard Webhooks signing secret (`whsec_<base64>`)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="webhook_secret")
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhook_secret"

    def __str__(self) -> str:
        return f"webhook secret of {self.user_id}"


class WebhookEndpoint(models.Model):
    """A user's standing webhook: every job of theirs reports the chosen events here."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, blank=True)  # empty: every event
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "webhook_endpoint"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one target: the row is the record of pending work, a task only announces it.

    A sender claims the row by moving `next_attempt_at` forward (a lease) with a conditional
    UPDATE, so two deliveries of the announcing message never send concurrently, and a sender
    that dies leaves the row due again for the reaper.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="webhook_deliveries")
    job = models.ForeignKey("jobs_app.Job", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="webhook_deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="deliveries")
    url = models.CharField(max_length=2000)
    event = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    announced_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    # what enqueued it, so a state change recorded twice cannot enqueue twice
    dedupe_key = models.CharField(max_length=300, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhook_delivery"
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"]),
                   models.Index(fields=["user", "-created_at"]),
                   models.Index(fields=["job", "event", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE,
                                 related_name="attempt_rows")
    attempted_at = models.DateTimeField()
    status_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    duration_ms = models.IntegerField(default=0)

    class Meta:
        db_table = "webhook_attempt"
        ordering = ["attempted_at", "id"]


class CollectionSchedule(models.Model):
    """Generations of a collection on a cron or an interval, run by beat as their owner."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        ENDED = "ended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="collection_schedules")
    collection = models.ForeignKey("collections_app.Collection", on_delete=models.CASCADE,
                                   related_name="schedules")
    cron = models.CharField(max_length=200, null=True, blank=True)
    interval_seconds = models.IntegerField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    end_at = models.DateTimeField(null=True, blank=True)
    count = models.IntegerField(default=1)
    variables = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "collection_schedule"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_run_at"])]
        constraints = [models.CheckConstraint(
            condition=(Q(cron__isnull=False) & Q(interval_seconds__isnull=True))
            | (Q(cron__isnull=True) & Q(interval_seconds__isnull=False)),
            name="schedule_cron_xor_interval")]

    def __str__(self) -> str:
        return f"{self.cron or f'every {self.interval_seconds} s'} ({self.status})"


class ScheduleRun(models.Model):
    class Status(models.TextChoices):
        ACCEPTED = "accepted"
        REFUSED = "refused"

    schedule = models.ForeignKey(CollectionSchedule, on_delete=models.CASCADE,
                                 related_name="runs")
    scheduled_for = models.DateTimeField()
    job = models.ForeignKey("jobs_app.Job", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="schedule_runs")
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "schedule_run"
        ordering = ["-scheduled_for"]
        # one run per slot, however often beat fires
        constraints = [models.UniqueConstraint(fields=["schedule", "scheduled_for"],
                                               name="uniq_schedule_slot")]


class Template(models.Model):
    """A saved GenerationInput with declared parameters (name, JSON Schema, JSON-pointer target).

    `owner` null: published by staff.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=300)
    description = models.TextField(blank=True, default="")
    data = models.JSONField()
    parameters = models.JSONField(default=list, blank=True)
    is_public = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "template"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class WorkflowSnapshot(models.Model):
    """A workflow as a job planned it, stored once per content (sha256 of its canonical JSON).

    Node runs name their snapshot by digest, so editing or deleting the workflow never changes a
    job already planned; servers are named, not addressed, and resolved when a node runs.
    """

    digest = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "workflow_snapshot"

    def __str__(self) -> str:
        return f"{self.name}@{self.digest[:12]}"
