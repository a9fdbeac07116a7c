"""Collects: a collector spends one paid generation of a published collection, and it runs as an
ordinary job of the collection's owner (whose credits pay for the compute, as for any generation
of their collection).

Spending is a conditional `UPDATE ... SET generations_used = generations_used + 1 WHERE
generations_used < generations_allowed` in the same transaction as the job's creation, so
concurrent collects never spend more than was paid, and an owner short of credits (402) rolls the
spend back. Outcomes are settled by the housekeeping pass (`collects_settle`), which sees every
way a job ends (completed, failed, cancelled, reaped): a failed or cancelled job gives its paid
generation back, exactly once (the row's conditional status change claims it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from collections_app import selectors as collection_selectors
from emprops.errors import Conflict, InsufficientCredits
from generation_app.collectors.models import MiniappGeneration, MiniappPayment
from generation_app.collectors.selectors import collector_require
from generation_app.services.requests import job_create_from_input, job_input_prepare
from jobs_app.models import Job

SETTLE_BATCH = 200


def _spend_one(*, collector_id: int, collection_id: UUID) -> MiniappPayment:
    """Take one paid generation from the collector's oldest confirmed payment that has one left
    (call inside a transaction); Conflict (409) when none has."""
    candidates = MiniappPayment.objects.filter(
        user_id=collector_id, collection_id=collection_id,
        payment_status=MiniappPayment.Status.CONFIRMED,
        generations_used__lt=F("generations_allowed")).order_by("created_at", "id")
    for payment in candidates:
        spent = MiniappPayment.objects.filter(
            pk=payment.pk, generations_used__lt=F("generations_allowed")).update(
            generations_used=F("generations_used") + 1)
        if spent:
            return payment
    paid = sum(MiniappPayment.objects.filter(
        user_id=collector_id, collection_id=collection_id,
        payment_status=MiniappPayment.Status.CONFIRMED).values_list("generations_allowed",
                                                                     flat=True))
    raise Conflict(f"No paid generations left: {paid} bought, all collected or running. Buy "
                   f"more (POST /api/collections/{collection_id}/purchases) to collect again.",
                   details={"reason": "no_paid_generations", "paid": paid})


def collect_start(*, user: Any, collection_id: UUID | str) -> MiniappGeneration:
    """Spend one of the collector's paid generations of a published collection and start it as
    a job of the collection's owner. Forbidden (403) for non-collectors, NotFound (404) for
    unpublished collections, Conflict (409) with nothing paid left, InsufficientCredits (402)
    when the owner cannot pay for the compute (nothing is spent)."""
    collector = collector_require(user=user)
    collection = collection_selectors.collection_public_get(collection_id=collection_id)
    owner = collection.project.user
    try:
        with transaction.atomic():
            payment = _spend_one(collector_id=collector.pk, collection_id=collection.pk)
            job_input = job_input_prepare(user=owner, data=collection.data, count=1)
            job = job_create_from_input(
                user=owner, job_input=job_input, collection_id=str(collection.id),
                name=f"Collect: {collection.title} for {collector.wallet_address}",
                job_type="collect")
            return MiniappGeneration.objects.create(
                user=collector, collection=collection, payment=payment, job=job,
                input_data={"hash": job_input.hashes[0], "variables": {}},
                status=MiniappGeneration.Status.PROCESSING)
    except InsufficientCredits:
        # the owner's balance and quote are theirs: the collector learns only that it failed
        raise InsufficientCredits("The collection's owner cannot pay for this generation's "
                                  "compute right now; nothing was spent. Try again later.",
                                  details={"reason": "owner_out_of_credits"}) from None


def _first_output(output: Mapping[str, Any]) -> tuple[str, str]:
    """(output URL, image URL) of a finished generation: its last step with a file."""
    for step in reversed(output.get("steps") or []):
        response = step.get("nodeResponse") if isinstance(step, dict) else None
        if isinstance(response, dict) and isinstance(response.get("src"), str):
            src = response["src"]
            mime = str(response.get("mimeType") or "")
            return src, src if mime.startswith("image/") else ""
    return "", ""


def _settle(row: MiniappGeneration, job: Job | None) -> str:
    now = timezone.now()
    unsettled = MiniappGeneration.objects.filter(pk=row.pk, settled_at__isnull=True)
    if job is not None and job.status == Job.Status.COMPLETED:
        output = next(iter((job.data or {}).get("outputs") or []), None) or {}
        url, image = _first_output(output)
        unsettled.update(status=MiniappGeneration.Status.COMPLETED, settled_at=now,
                         output_data=output, output_url=url, generated_image=image)
        return "completed"
    with transaction.atomic():
        error = (job.error_message or f"Job {job.status}") if job is not None else "Job deleted"
        if unsettled.update(status=MiniappGeneration.Status.FAILED, settled_at=now,
                            error=error[:2000]):
            MiniappPayment.objects.filter(pk=row.payment_id, generations_used__gt=0).update(
                generations_used=F("generations_used") - 1)
    return "failed"


def collects_settle(*, limit: int = SETTLE_BATCH) -> dict[str, int]:
    """Record the outcome of collects whose jobs finished (housekeeping): outputs for completed
    ones, the paid generation given back for failed, cancelled or deleted ones. Idempotent."""
    counts = {"completed": 0, "failed": 0}
    rows = list(MiniappGeneration.objects.filter(settled_at__isnull=True).exclude(
        job__status__in=[Job.Status.PENDING, Job.Status.PROCESSING]).select_related("job")
        .order_by("id")[:limit])
    for row in rows:
        counts[_settle(row, row.job)] += 1
    return counts
