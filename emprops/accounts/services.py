"""Writes for users, API keys and the credits ledger.

Every balance change is a `credits_history` row written under a lock on the user's row, so
concurrent requests serialise per user and can never overspend; charges carry an idempotency key
so a redelivered completion cannot charge twice.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from emprops.accounts.models import (
    SPEND_ORDER,
    CreditsBalance,
    CreditsHistory,
    CreditsHold,
    CreditType,
    User,
    UserApiKey,
)
from emprops.errors import InsufficientCredits, NotFound, ValidationFailed

API_KEY_PREFIX = "ek_"
FOUR_PLACES = Decimal("0.0001")


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# ---- users -----------------------------------------------------------------------------------

def user_provision(*, external_sub: str | None = None, username: str | None = None,
                   is_staff: bool = False, free_credits: Decimal | None = None) -> User:
    """A new user with FREE_CREDITS permanent credits granted through the ledger."""
    with transaction.atomic():
        user = User.objects.create(
            username=username or f"user-{uuid.uuid4().hex[:12]}",
            external_sub=external_sub,
            is_staff=is_staff,
            is_superuser=is_staff,
        )
        amount = Decimal(str(settings.FREE_CREDITS)) if free_credits is None else free_credits
        if amount > 0:
            credits_grant(user=user, amount=amount, credit_type=CreditType.PERMANENT,
                          comment="Free credits on sign-up")
    return user


def user_for_sub(*, sub: str) -> User:
    """The user a token's `sub` names (by id, then external_sub), provisioned on first use."""
    try:
        return User.objects.get(pk=uuid.UUID(sub))
    except (ValueError, User.DoesNotExist):
        pass
    user = User.objects.filter(external_sub=sub).first()
    if user is not None:
        return user
    try:
        return user_provision(external_sub=sub, username=f"sub-{uuid.uuid4().hex[:12]}")
    except IntegrityError:  # provisioned concurrently by another request with the same token
        return User.objects.get(external_sub=sub)


# ---- API keys --------------------------------------------------------------------------------

def api_key_create(*, user: User, name: str = "default", expires_at: datetime | None = None,
                   is_demo: bool = False) -> tuple[UserApiKey, str]:
    """A new key for `user`; the raw key is returned once and only its sha256 is stored."""
    raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = UserApiKey.objects.create(
        user=user, name=name[:200], prefix=raw[:10], key_hash=hash_key(raw),
        expires_at=expires_at, is_demo=is_demo,
    )
    return key, raw


def api_key_revoke(*, user: User, key_id: int) -> UserApiKey:
    """Deactivate one of the user's keys (NotFound for anyone else's)."""
    updated = UserApiKey.objects.filter(user=user, pk=key_id).update(is_active=False)
    if not updated:
        raise NotFound("API key not found.")
    return UserApiKey.objects.get(pk=key_id)


def api_key_authenticate(*, raw: str) -> User | None:
    key = (UserApiKey.objects.select_related("user")
           .filter(key_hash=hash_key(raw), is_active=True).first())
    if key is None or not key.user.is_active:
        return None
    now = timezone.now()
    if key.expires_at is not None and key.expires_at <= now:
        return None
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        UserApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key.user


# ---- credits ---------------------------------------------------------------------------------

def _lock_user(user_id: Any) -> User:
    return User.objects.select_for_update().get(pk=user_id)


def _balances_locked(user: User) -> dict[str, CreditsBalance]:
    rows = {b.credit_type: b for b in CreditsBalance.objects.select_for_update()
            .filter(user=user).order_by("credit_type")}
    for ctype in SPEND_ORDER:
        if ctype not in rows:
            rows[ctype] = CreditsBalance.objects.create(user=user, credit_type=ctype)
    return rows


def _spendable(user_id: Any) -> Decimal:
    """Balances minus holds, in one round trip (the caller holds the user's ledger lock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COALESCE(SUM(balance), 0) FROM {CreditsBalance._meta.db_table}"
            " WHERE user_id = %s) - (SELECT COALESCE(SUM(remaining), 0) FROM"
            f" {CreditsHold._meta.db_table} WHERE user_id = %s AND status = %s)",
            [user_id, user_id, CreditsHold.Status.HELD])
        return Decimal(cursor.fetchone()[0])


def held_total(*, user: User) -> Decimal:
    total = (CreditsHold.objects.filter(user=user, status=CreditsHold.Status.HELD)
             .aggregate(s=Sum("remaining"))["s"])
    return Decimal(total or 0)


def credits_grant(*, user: User, amount: Decimal, credit_type: str, comment: str = "",
                  created_by: User | None = None) -> CreditsHistory:
    """Add (or, negative, remove) credits through a ledger row; a balance never goes below zero."""
    amount = Decimal(amount).quantize(FOUR_PLACES)
    if amount == 0:
        raise ValidationFailed("Amount must not be zero.", details={"amount": ["Must not be zero."]})
    if credit_type not in CreditType.values:
        raise ValidationFailed("Unknown credit type.", details={"credit_type": ["Unknown type."]})
    with transaction.atomic():
        _lock_user(user.pk)
        balances = _balances_locked(user)
        row = balances[credit_type]
        if row.balance + amount < 0:
            raise ValidationFailed(
                f"The {credit_type} balance is {row.balance}; it cannot go below zero.",
                details={"amount": ["Would make the balance negative."]},
            )
        total = sum((b.balance for b in balances.values()), Decimal(0))
        held = held_total(user=user)
        if amount < 0 and total + amount < held:
            # held credits are promised to accepted work: taking them would under-charge it
            raise ValidationFailed(
                f"{held} credits are held for running jobs; at most {total - held} can be removed "
                "now (cancel the jobs first to remove more).",
                details={"amount": ["Would take credits held for running jobs."]},
            )
        CreditsBalance.objects.filter(pk=row.pk).update(balance=F("balance") + amount)
        return CreditsHistory.objects.create(
            user=user, flow=CreditsHistory.Flow.IN if amount > 0 else CreditsHistory.Flow.OUT,
            amount=abs(amount), credit_type=credit_type,
            comment=comment or ("Grant" if amount > 0 else "Adjustment"), created_by=created_by,
        )


def credits_require(*, user: User, amount: Decimal, quote: dict[str, Any]) -> None:
    """InsufficientCredits (402, the quote in details) unless `amount` is spendable (balance minus
    holds). Locks the user's ledger until the transaction ends, so holds created after it in the
    same transaction (a batch checked as one sum) cannot be overtaken by a concurrent request."""
    amount = Decimal(amount).quantize(FOUR_PLACES)
    _lock_user(user.pk)  # every ledger change takes this lock first: the sums below hold
    spendable = _spendable(user.pk)
    if amount > spendable:
        raise InsufficientCredits(
            f"Not enough credits: this request costs {amount}, you have {spendable} available.",
            details={"quote": quote, "available": str(spendable), "required": str(amount)},
        )


def credits_hold(*, user: User, job_id: uuid.UUID, per_generation: Decimal, generations: int,
                 quote: dict[str, Any]) -> CreditsHold:
    """Reserve a request's cost, or InsufficientCredits (402, the quote in details).

    Call inside the request's transaction: the hold and the job commit together or not at all.
    """
    amount = (Decimal(per_generation) * generations).quantize(FOUR_PLACES)
    credits_require(user=user, amount=amount, quote=quote)
    return CreditsHold.objects.create(
        user=user, job_id=job_id, amount=amount, remaining=amount,
        per_generation=Decimal(per_generation).quantize(FOUR_PLACES),
    )


def credits_hold_reopen(*, job_id: uuid.UUID, gids: Iterable[int],
                        per_generation: Decimal | None = None) -> None:
    """Hold credits again for generations being retried (InsufficientCredits when short).

    `per_generation` re-prices the retried generations (a retry re-quoted against the
    workflows as they are now); generations already charged keep what they cost.
    """
    gids = list(gids)
    hold = CreditsHold.objects.select_for_update().filter(job_id=job_id).first()
    if hold is None or not gids:
        return
    user = _lock_user(hold.user_id)
    if per_generation is not None:
        hold.per_generation = per_generation.quantize(FOUR_PLACES)
    extra = (hold.per_generation * len(gids)).quantize(FOUR_PLACES)
    balances = _balances_locked(user)
    spendable = sum((b.balance for b in balances.values()), Decimal(0)) - held_total(user=user)
    if extra > spendable:
        raise InsufficientCredits(
            f"Not enough credits: the retry costs {extra}, you have {spendable} available.",
            details={"available": str(spendable), "required": str(extra)},
        )
    hold.settled_gids = [g for g in hold.settled_gids if g not in set(gids)]
    hold.remaining = hold.remaining + extra
    hold.amount = hold.amount + extra
    hold.status = CreditsHold.Status.HELD
    hold.round = hold.round + 1
    hold.save(update_fields=["settled_gids", "remaining", "amount", "status", "round",
                             "per_generation", "updated_at"])


def _finish_hold(hold: CreditsHold) -> None:
    if hold.remaining <= 0 and hold.status == CreditsHold.Status.HELD:
        hold.status = CreditsHold.Status.SETTLED


def credits_charge_generation(*, job_id: uuid.UUID, gid: int, comment: str,
                              amount: Decimal | None = None) -> Decimal:
    """Settle one completed generation's share of its job's hold, once: charge `amount` (what
    its steps spent; default the share itself) and release the rest of the share. A second
    call changes nothing."""
    # in the caller's transaction when there is one (no savepoint: an error aborts it all)
    with transaction.atomic(savepoint=False):
        hold = CreditsHold.objects.select_for_update().filter(job_id=job_id).first()
        if hold is None or gid in hold.settled_gids:
            return Decimal(0)
        user = _lock_user(hold.user_id)
        share = min(hold.per_generation, hold.remaining)
        due = share if amount is None else min(Decimal(amount).quantize(FOUR_PLACES), share)
        charged = Decimal(0)
        balances = _balances_locked(user) if due > 0 else {}
        for ctype in SPEND_ORDER if due > 0 else ():
            row = balances[ctype]
            take = min(due - charged, row.balance)
            if take <= 0:
                continue
            CreditsBalance.objects.filter(pk=row.pk).update(balance=F("balance") - take)
            CreditsHistory.objects.create(
                user=user, flow=CreditsHistory.Flow.OUT, amount=take, credit_type=ctype,
                comment=comment, job_id=job_id, gid=gid,
                idempotency_key=f"charge:{job_id}:{gid}:{ctype}:{hold.round}",
            )
            charged += take
        hold.remaining = hold.remaining - share
        hold.spent = hold.spent + charged
        hold.settled_gids = [*hold.settled_gids, gid]
        _finish_hold(hold)
        hold.save(update_fields=["remaining", "spent", "settled_gids", "status", "updated_at"])
        return charged


def credits_release_generation(*, job_id: uuid.UUID, gid: int) -> None:
    """Release one failed generation's share of the hold (nothing is charged for it)."""
    # in the caller's transaction when there is one (no savepoint: an error aborts it all)
    with transaction.atomic(savepoint=False):
        hold = CreditsHold.objects.select_for_update().filter(job_id=job_id).first()
        if hold is None or gid in hold.settled_gids:
            return
        hold.remaining = max(Decimal(0), hold.remaining - hold.per_generation)
        hold.settled_gids = [*hold.settled_gids, gid]
        if hold.remaining <= 0:
            hold.status = CreditsHold.Status.RELEASED if hold.status == CreditsHold.Status.HELD \
                else hold.status
        hold.save(update_fields=["remaining", "settled_gids", "status", "updated_at"])


def credits_release_job(*, job_id: uuid.UUID) -> None:
    """Release whatever a job still holds (cancel, failure, time-out)."""
    # in the caller's transaction when there is one (no savepoint: an error aborts it all)
    with transaction.atomic(savepoint=False):
        hold = CreditsHold.objects.select_for_update().filter(job_id=job_id).first()
        if hold is None or hold.status != CreditsHold.Status.HELD:
            return
        hold.remaining = Decimal(0)
        hold.status = CreditsHold.Status.RELEASED
        hold.save(update_fields=["remaining", "status", "updated_at"])


def credits_summary(*, user: User) -> dict[str, Any]:
    balances: dict[str, Decimal] = {str(ctype): Decimal(0) for ctype in SPEND_ORDER}
    for row in CreditsBalance.objects.filter(user=user):
        balances[row.credit_type] = row.balance
    held = held_total(user=user)
    total = sum(balances.values(), Decimal(0))
    return {
        "balances": {k: str(v) for k, v in balances.items()},
        "total": str(total),
        "held": str(held),
        "available": str(total - held),
    }
