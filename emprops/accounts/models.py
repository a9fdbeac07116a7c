"""Users, API keys and the credits ledger (SPEC section 2, accounts)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    external_sub = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # staff may raise the per-request generation limit for a user
    max_generations_override = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "user"


class UserApiKey(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, default="default")
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    is_demo = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "user_api_key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}... ({self.name})"


class CreditType(models.TextChoices):
    RENTAL = "rental"
    PERMANENT = "permanent"


# spending takes rental before permanent
SPEND_ORDER = (CreditType.RENTAL, CreditType.PERMANENT)


class CreditsBalance(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="credit_balances")
    credit_type = models.CharField(max_length=16, choices=CreditType.choices)
    balance = models.DecimalField(max_digits=18, decimal_places=4, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "credits_balance"
        constraints = [
            models.UniqueConstraint(fields=["user", "credit_type"], name="uniq_balance_per_type"),
            models.CheckConstraint(condition=models.Q(balance__gte=0), name="balance_not_negative"),
        ]


class CreditsHold(models.Model):
    class Status(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="credit_holds")
    # a job id, not a foreign key: accounts depends on no other app
    job_id = models.UUIDField(unique=True)
    amount = models.DecimalField(max_digits=18, decimal_places=4)
    remaining = models.DecimalField(max_digits=18, decimal_places=4)
    per_generation = models.DecimalField(max_digits=18, decimal_places=4, default=Decimal(0))
    # generation ids already charged or released: a redelivered settle is a no-op
    settled_gids = models.JSONField(default=list, blank=True)
    # bumped when a retry re-holds credits: charge idempotency keys are per round
    round = models.IntegerField(default=0)
    # what the job's charges took from it so far (a cached step costs nothing: the rest of the
    # generation's share is released, not charged)
    spent = models.DecimalField(max_digits=18, decimal_places=4, default=Decimal(0))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "credits_hold"
        indexes = [models.Index(fields=["user", "status"])]


class CreditsHistory(models.Model):
    class Flow(models.TextChoices):
        IN = "in"
        OUT = "out"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="credit_history")
    flow = models.CharField(max_length=3, choices=Flow.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=4)
    credit_type = models.CharField(max_length=16, choices=CreditType.choices)
    comment = models.CharField(max_length=500, blank=True, default="")
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    # the generation of the job a charge is for
    gid = models.IntegerField(null=True, blank=True)
    # (job, gid) charges are unique: a redelivered completion cannot charge twice
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "credits_history"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "credits histories"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` on one endpoint (SPEC section 9): claimed by an INSERT before
    the request runs, then holding the first response for 24 h. A failed request deletes its claim
    so the client may retry with the same key."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    endpoint = models.CharField(max_length=300)  # "POST /api/collections/generate"
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)  # sha256 of the canonical JSON body
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "idempotency_key"
        constraints = [
            models.UniqueConstraint(fields=["user", "endpoint", "key"], name="uniq_idempotency_key"),
        ]
        indexes = [models.Index(fields=["created_at"])]
