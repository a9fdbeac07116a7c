"""Collector tasks: rechecking pending purchases reads the chain, so it runs on the `io` queue
(the housekeeping pass on `engine` only announces it)."""

from __future__ import annotations

from celery import shared_task

from generation_app.collectors.services.purchases import purchases_recheck_due

RECHECK_PURCHASES = "collectors.recheck_purchases"


@shared_task(ignore_result=True, name=RECHECK_PURCHASES)
def recheck_purchases() -> dict[str, int]:
    # safe to deliver twice or to overlap: each pending payment is claimed by a conditional update
    return purchases_recheck_due()
