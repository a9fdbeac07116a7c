"""Purchases: a collector's transaction, verified on the collection's chain, becomes paid
generations.

The chain is read before any database transaction opens. Recording is one transaction: editions
are reserved with a conditional UPDATE on the listing (never oversold across collectors) and the
payment row's unique transaction hash makes a hash pay once, ever (of concurrent submissions
exactly one INSERT wins; the losers roll their reservation back). A payment with too few
confirmations is recorded pending and rechecked by the housekeeping pass at `next_attempt_at`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from collections_app import selectors as collection_selectors
from collections_app.models import Collection
from emprops.errors import Unprocessable, ValidationFailed
from generation_app.collectors.chain import (
    ChainUnavailable,
    Expectation,
    PaymentRefused,
    Verdict,
    chain_read,
    checksum,
    payment_judge,
)
from generation_app.collectors.models import (
    ChainConfig,
    CollectionListing,
    MiniappPayment,
    MiniappUser,
    OwnerPayout,
)
from generation_app.collectors.selectors import collector_require

logger = logging.getLogger(__name__)

TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
RECHECK_BATCH = 50


@dataclass(frozen=True)
class Sale:
    """A published collection as it is sold: its chain, its listing and what a payment must be."""

    collection: Collection
    chain: ChainConfig
    listing: CollectionListing


def sale_for(*, collection: Collection) -> Sale:
    """How `collection` is sold on chain; Unprocessable (422) when it is not (no chain, TEZOS,
    no chain configured, not listed)."""
    if collection.blockchain is None:
        raise Unprocessable("This collection is not sold on a blockchain.",
                            details={"reason": "not_on_chain"})
    if collection.blockchain == Collection.Blockchain.TEZOS:
        raise Unprocessable("TEZOS is not an EVM chain: purchases on it are not supported yet.",
                            details={"reason": "unsupported_chain"})
    chain = ChainConfig.objects.filter(blockchain=collection.blockchain, enabled=True).first()
    if chain is None:
        raise Unprocessable(f"No {collection.blockchain} chain is configured for purchases.",
                            details={"reason": "chain_not_configured"})
    listing = CollectionListing.objects.filter(collection=collection).first()
    if listing is None:
        raise Unprocessable("This collection has no on-chain listing (price in wei, on-chain "
                            "id) yet.", details={"reason": "not_listed"})
    return Sale(collection=collection, chain=chain, listing=listing)


def _expectation(sale: Sale, collector: MiniappUser) -> Expectation:
    listing, chain, collection = sale.listing, sale.chain, sale.collection
    payout = listing.payout_address or (
        OwnerPayout.objects.filter(user_id=collection.project.user_id)
        .values_list("address", flat=True).first() or "")
    batch = collection.batch_mint_enabled and (collection.batch_max_tokens or 0) > 1
    return Expectation(
        chain_id=int(chain.chain_id), wallet=collector.wallet_address,
        price_wei=int(listing.price_wei), required_confirmations=chain.required_confirmations,
        payout_address=checksum(payout) if payout else None,
        mint_contract=checksum(chain.mint_contract_address)
        if chain.mint_contract_address else None,
        mint_abi=chain.mint_contract_abi if isinstance(chain.mint_contract_abi, list) else [],
        onchain_collection_id=int(listing.onchain_collection_id)
        if listing.onchain_collection_id is not None else None,
        max_quantity=int(collection.batch_max_tokens or 1) if batch else 1)


def _already_used() -> PaymentRefused:
    return PaymentRefused("already_used", "This transaction has already paid for generations.",
                          status_code=409)


def _reserve_editions(*, listing: CollectionListing, editions: int | None, quantity: int) -> None:
    query = CollectionListing.objects.filter(pk=listing.pk)
    if editions is not None:
        query = query.filter(editions_reserved__lte=editions - quantity)
    if not query.update(editions_reserved=F("editions_reserved") + quantity):
        left = max(0, (editions or 0) - CollectionListing.objects.get(
            pk=listing.pk).editions_reserved)
        raise PaymentRefused("sold_out", f"Only {left} of this collection's {editions} editions "
                             f"are left; this transaction pays for {quantity}.", status_code=409)


def purchase_submit(*, user: Any, collection_id: UUID | str, tx_hash: str) -> MiniappPayment:
    """Verify a collector's transaction on the collection's chain and record the generations it
    pays for: confirmed, or pending until enough confirmations. Refusals name their reason:
    PaymentRefused (422; 409 for already_used and sold_out), Unprocessable (422) for collections
    not sold on an EVM chain, ChainUnavailable (503) when the node cannot be read."""
    collector = collector_require(user=user)
    if not isinstance(tx_hash, str) or not TX_HASH.match(tx_hash):
        raise ValidationFailed("tx_hash must be 0x followed by 64 hex digits.",
                               details={"tx_hash": ["0x followed by 64 hex digits."]})
    tx_hash = tx_hash.lower()
    collection = collection_selectors.collection_public_get(collection_id=collection_id)
    sale = sale_for(collection=collection)
    if MiniappPayment.objects.filter(transaction_hash=tx_hash).exists():
        raise _already_used()
    verdict = payment_judge(reading=chain_read(rpc_url=sale.chain.rpc_url, tx_hash=tx_hash),
                            expect=_expectation(sale, collector))
    now = timezone.now()
    try:
        with transaction.atomic():
            _reserve_editions(listing=sale.listing, editions=collection.editions,
                              quantity=verdict.quantity)
            return MiniappPayment.objects.create(
                user=collector, collection=collection, amount=verdict.amount,
                payment_status=MiniappPayment.Status.CONFIRMED if verdict.confirmed
                else MiniappPayment.Status.PENDING,
                generations_allowed=verdict.quantity, transaction_hash=tx_hash,
                blockchain=sale.chain.blockchain, chain_id=sale.chain.chain_id,
                method=verdict.method, block_number=verdict.block_number, attempts=1,
                created_at=now, confirmed_at=now if verdict.confirmed else None,
                next_attempt_at=None if verdict.confirmed
                else now + timedelta(seconds=settings.PURCHASE_RECHECK_SECONDS))
    except IntegrityError:  # another request recorded this hash first
        raise _already_used() from None


def _recheck_one(payment: MiniappPayment) -> str:
    """One pending payment read again: "confirmed", "failed" or "pending"."""
    collection = payment.collection
    now = timezone.now()
    try:
        sale = sale_for(collection=collection)
        verdict: Verdict | None = payment_judge(
            reading=chain_read(rpc_url=sale.chain.rpc_url, tx_hash=payment.transaction_hash),
            expect=_expectation(sale, payment.user))
        reason = ""
    except ChainUnavailable as exc:  # try again later; the node may come back
        logger.warning("purchase %s: chain unavailable: %s", payment.pk, exc.message)
        verdict, reason = None, ""
    except PaymentRefused as exc:
        dropped = exc.reason == "unknown_transaction" and \
            payment.created_at < now - timedelta(seconds=settings.PURCHASE_PENDING_MAX_SECONDS)
        verdict, reason = None, exc.message if exc.reason != "unknown_transaction" or dropped \
            else ""
    except Unprocessable as exc:  # the listing or chain was removed meanwhile: keep waiting
        logger.warning("purchase %s: %s", payment.pk, exc.message)
        verdict, reason = None, ""
    with transaction.atomic():
        pending = MiniappPayment.objects.filter(pk=payment.pk,
                                                payment_status=MiniappPayment.Status.PENDING)
        if verdict is not None and verdict.confirmed and \
                verdict.quantity == payment.generations_allowed:
            pending.update(payment_status=MiniappPayment.Status.CONFIRMED, confirmed_at=now,
                           block_number=verdict.block_number, next_attempt_at=None)
            return "confirmed"
        if reason or (verdict is not None and verdict.quantity != payment.generations_allowed):
            if pending.update(payment_status=MiniappPayment.Status.FAILED,
                              failure_reason=(reason or "The transaction changed.")[:500],
                              next_attempt_at=None):
                CollectionListing.objects.filter(collection_id=payment.collection_id).update(
                    editions_reserved=F("editions_reserved") - payment.generations_allowed)
            return "failed"
        backoff = settings.PURCHASE_RECHECK_SECONDS * min(8, 2 ** min(payment.attempts, 3))
        pending.update(next_attempt_at=now + timedelta(seconds=backoff))
        return "pending"


def purchases_recheck_due(*, limit: int = RECHECK_BATCH) -> dict[str, int]:
    """Recheck pending payments whose `next_attempt_at` has come (housekeeping); each is claimed
    by a conditional UPDATE that moves its `next_attempt_at` on, so overlapping passes never
    read one twice at once. Returns counts by outcome."""
    now = timezone.now()
    lease = now + timedelta(seconds=max(30.0, settings.CHAIN_RPC_TIMEOUT_SECONDS * 4))
    counts = {"confirmed": 0, "failed": 0, "pending": 0}
    due = list(MiniappPayment.objects.filter(
        payment_status=MiniappPayment.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at").values_list("pk", "next_attempt_at")[:limit])
    for pk, seen in due:
        claimed = MiniappPayment.objects.filter(
            Q(pk=pk), Q(payment_status=MiniappPayment.Status.PENDING),
            Q(next_attempt_at=seen)).update(next_attempt_at=lease, attempts=F("attempts") + 1)
        if not claimed:
            continue
        payment = MiniappPayment.objects.select_related(
            "collection__project", "user").get(pk=pk)
        counts[_recheck_one(payment)] += 1
    return counts

