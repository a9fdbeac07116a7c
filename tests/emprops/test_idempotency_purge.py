"""Idempotency keys past their 24 h window are purged by the reaper's pass."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from emprops.accounts.models import IdempotencyKey
from emprops.idempotency import idempotency_purge


def test_purge_deletes_only_expired_keys(alice):
    old = IdempotencyKey.objects.create(user=alice, endpoint="POST /x", key="old", request_hash="h")
    fresh = IdempotencyKey.objects.create(user=alice, endpoint="POST /x", key="new", request_hash="h")
    IdempotencyKey.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))

    purged = idempotency_purge()

    assert purged == 1
    assert list(IdempotencyKey.objects.values_list("pk", flat=True)) == [fresh.pk]
