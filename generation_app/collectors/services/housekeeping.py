"""The collectors' share of the periodic housekeeping pass."""

from __future__ import annotations

from django.utils import timezone

from generation_app.collectors.models import MiniappPayment
from generation_app.collectors.services.collects import collects_settle
from generation_app.collectors.services.identity import nonces_purge


def _announce_recheck() -> None:
    from emprops.celery import app
    from generation_app.collectors.tasks import RECHECK_PURCHASES

    app.send_task(RECHECK_PURCHASES, queue="io")


def collectors_housekeeping() -> dict[str, int]:
    """Settle finished collects, announce a recheck of pending purchases when some are due (it
    reads the chain, on the `io` queue), drop dead nonces; returns counts."""
    counts = {f"collects:{k}": v for k, v in collects_settle().items()}
    due = MiniappPayment.objects.filter(payment_status=MiniappPayment.Status.PENDING,
                                        next_attempt_at__lte=timezone.now()).exists()
    if due:
        _announce_recheck()
    counts["purchases_recheck_announced"] = int(due)
    counts["siwe_nonces_purged"] = nonces_purge()
    return counts
