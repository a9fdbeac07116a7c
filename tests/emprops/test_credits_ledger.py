"""The credits ledger: holds, charges (rental first, once), releases and grants."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from emprops.accounts import services
from emprops.accounts.models import CreditsBalance, CreditsHistory, CreditsHold
from emprops.errors import InsufficientCredits


def _balances(user):
    return {b.credit_type: b.balance for b in CreditsBalance.objects.filter(user=user)}


def test_charge_takes_rental_before_permanent_and_only_once(alice):
    services.credits_grant(user=alice, amount=Decimal(3), credit_type="rental")
    job_id = uuid.uuid4()
    services.credits_hold(user=alice, job_id=job_id, per_generation=Decimal(5), generations=2,
                          quote={})

    first = services.credits_charge_generation(job_id=job_id, gid=0, comment="gen 0")
    again = services.credits_charge_generation(job_id=job_id, gid=0, comment="gen 0")

    assert (first, again) == (Decimal(5), Decimal(0))
    assert _balances(alice) == {"rental": Decimal(0), "permanent": Decimal(8)}
    rows = CreditsHistory.objects.filter(user=alice, job_id=job_id).order_by("credit_type")
    assert [(r.credit_type, r.amount) for r in rows] == [("permanent", 2), ("rental", 3)]
    hold = CreditsHold.objects.get(job_id=job_id)
    assert (hold.remaining, hold.status) == (Decimal(5), "held")


def test_hold_refuses_more_than_balance_minus_holds(alice):
    services.credits_hold(user=alice, job_id=uuid.uuid4(), per_generation=Decimal(4),
                          generations=2, quote={})

    with pytest.raises(InsufficientCredits) as refused:
        services.credits_hold(user=alice, job_id=uuid.uuid4(), per_generation=Decimal(3),
                              generations=1, quote={"total_cost": 3})

    assert refused.value.details["available"] == "2.0000"
    assert refused.value.details["quote"] == {"total_cost": 3}
    assert CreditsHold.objects.filter(user=alice).count() == 1


def test_failed_generation_releases_its_share_and_job_release_frees_the_rest(alice):
    job_id = uuid.uuid4()
    services.credits_hold(user=alice, job_id=job_id, per_generation=Decimal(2), generations=3,
                          quote={})

    services.credits_release_generation(job_id=job_id, gid=1)
    services.credits_charge_generation(job_id=job_id, gid=0, comment="ok")
    services.credits_release_job(job_id=job_id)

    hold = CreditsHold.objects.get(job_id=job_id)
    assert (hold.remaining, hold.status) == (Decimal(0), "released")
    assert _balances(alice)["permanent"] == Decimal(8)
    assert services.credits_summary(user=alice)["held"] == "0"


def test_retry_reopens_the_hold_for_failed_generations(alice):
    job_id = uuid.uuid4()
    services.credits_hold(user=alice, job_id=job_id, per_generation=Decimal(1), generations=2,
                          quote={})
    services.credits_charge_generation(job_id=job_id, gid=0, comment="ok")
    services.credits_release_generation(job_id=job_id, gid=1)

    services.credits_hold_reopen(job_id=job_id, gids=[1])
    services.credits_charge_generation(job_id=job_id, gid=1, comment="retried")

    assert _balances(alice)["permanent"] == Decimal(8)
    assert CreditsHistory.objects.filter(job_id=job_id, flow="out").count() == 2
    assert CreditsHold.objects.get(job_id=job_id).status == "settled"


def test_a_negative_grant_cannot_take_credits_held_for_running_jobs(alice):
    services.credits_hold(user=alice, job_id=uuid.uuid4(), per_generation=Decimal(6),
                          generations=1, quote={})

    with pytest.raises(Exception) as refused:
        services.credits_grant(user=alice, amount=Decimal(-5), credit_type="permanent")
    services.credits_grant(user=alice, amount=Decimal(-4), credit_type="permanent")

    assert "held" in str(refused.value)
    assert _balances(alice)["permanent"] == Decimal(6)
