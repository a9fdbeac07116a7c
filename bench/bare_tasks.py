"""The baseline for bench/overhead.py: a bare Celery task writing what a finished job leaves behind.

The worker loads it with `-I bench.bare_tasks`; nothing in the platform imports it.
"""

from __future__ import annotations

from celery import shared_task
from django.db import transaction
from django.utils import timezone

BARE_JOB_TYPE = "bench_bare"


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="bench.bare_write")
def bare_write(user_id: str, history_rows: int, event_rows: int, run: str) -> None:
    """One job row, `history_rows` history rows and `event_rows` event rows, in one transaction."""
    from jobs_app.models import Job, JobEvent, JobHistory

    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(user_id=user_id, name=f"bare {run}", job_type=BARE_JOB_TYPE,
                                 status=Job.Status.COMPLETED, progress=100, started_at=now,
                                 completed_at=now, event_seq=event_rows,
                                 data={"run": run, "outputs": []})
        for i in range(history_rows):
            JobHistory.objects.create(job=job, status="processing", message=f"row {i}",
                                      data={"gid": 0, "i": i})
        for seq in range(1, event_rows + 1):
            JobEvent.objects.create(job=job, seq=seq, event_type="job_history",
                                    data={"seq": seq, "status": "processing"})

