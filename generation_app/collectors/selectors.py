"""Reads for collectors (their own purchases and generations) and for collection owners (their
collections' sales and collectors). Each takes the viewer."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count, Max, Q, QuerySet, Sum

from collections_app import selectors as collection_selectors
from emprops.errors import Forbidden
from generation_app.collectors.models import MiniappGeneration, MiniappPayment, MiniappUser


def collector_require(*, user: Any) -> MiniappUser:
    """The viewer's collector profile; Forbidden (403) for users who never signed in with a
    wallet."""
    collector = MiniappUser.objects.filter(user=user).first()
    if collector is None:
        raise Forbidden("Only collectors can do this: sign in with a wallet first "
                        "(GET /api/collectors/nonce, POST /api/collectors/login).",
                        details={"reason": "not_a_collector"})
    return collector


def collector_purchases(*, user: Any) -> QuerySet[MiniappPayment]:
    return (MiniappPayment.objects.filter(user__user=user).select_related("collection")
            .order_by("-created_at", "-id"))


def collector_generations(*, user: Any, collection_id: UUID | str | None = None,
                          ) -> QuerySet[MiniappGeneration]:
    qs = MiniappGeneration.objects.filter(user__user=user).select_related("collection")
    if collection_id is not None:
        qs = qs.filter(collection_id=collection_id)
    return qs.order_by("-created_at", "-id")


def collector_summary(*, user: Any) -> dict[str, Any]:
    """The viewer's collector profile with their paid, used and pending generations."""
    collector = collector_require(user=user)
    confirmed = Q(payment_status=MiniappPayment.Status.CONFIRMED)
    totals = MiniappPayment.objects.filter(user=collector).aggregate(
        paid=Sum("generations_allowed", filter=confirmed),
        used=Sum("generations_used", filter=confirmed),
        pending=Sum("generations_allowed",
                    filter=Q(payment_status=MiniappPayment.Status.PENDING)))
    return {"collector": collector, "generations_paid": totals["paid"] or 0,
            "generations_used": totals["used"] or 0,
            "generations_pending": totals["pending"] or 0}


def collection_sales(*, user: Any, collection_id: UUID | str) -> QuerySet[MiniappPayment]:
    """Payments for one of the viewer's collections (NotFound for others' collections)."""
    collection = collection_selectors.collection_get(user=user, collection_id=collection_id)
    return (MiniappPayment.objects.filter(collection=collection).select_related("user")
            .order_by("-created_at", "-id"))


def collection_collectors(*, user: Any, collection_id: UUID | str) -> QuerySet[MiniappUser]:
    """The collectors of one of the viewer's collections, with what each bought and collected."""
    collection = collection_selectors.collection_get(user=user, collection_id=collection_id)
    confirmed = Q(payments__collection=collection,
                  payments__payment_status=MiniappPayment.Status.CONFIRMED)
    return (MiniappUser.objects.filter(payments__collection=collection).annotate(
        purchases=Count("payments", filter=confirmed, distinct=True),
        generations_paid=Sum("payments__generations_allowed", filter=confirmed),
        generations_used=Sum("payments__generations_used", filter=confirmed),
        wei_paid=Sum("payments__amount", filter=confirmed),
        last_purchase_at=Max("payments__created_at"),
    ).order_by("-last_purchase_at", "id").distinct())
