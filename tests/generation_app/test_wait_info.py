"""Why a job waits, its place in line and an estimate (generation_app.selectors.job_wait_info),
and the `waiting` field of the job detail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from generation_app.models import Generation, NodeRun
from generation_app.selectors import job_wait_info
from jobs_app.models import Job

STEPS = [{"id": 1, "nodeName": "p5", "nodePayload": {}},
         {"id": 2, "nodeName": "prompt", "nodePayload": {}}]


def _job(user: Any, *, gens: tuple[str, ...] | list[str] = (),
         runs: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (),
         priority: int = 5, created_ago: float = 0, **fields: Any) -> Job:
    """A job with generations of the given statuses and node runs as given (gid 0 unless said)."""
    job = Job.objects.create(user=user, name="j", priority=priority, input={"steps": STEPS},
                             status=fields.pop("status", Job.Status.PENDING), **fields)
    if created_ago:
        Job.objects.filter(pk=job.pk).update(
            created_at=timezone.now() - timedelta(seconds=created_ago))
        job.refresh_from_db()
    for gid, status in enumerate(gens):
        Generation.objects.create(job=job, gid=gid, hash=f"h{gid}", seed=1, status=status)
    for i, run in enumerate(runs):
        NodeRun.objects.create(job=job, gid=run.pop("gid", 0), step_id=100 + i,
                               node_name=run.pop("node_name", "p5"), **run)
    return job


def _queued(seconds_ago: float, **fields: Any) -> dict[str, Any]:
    return {"status": NodeRun.Status.QUEUED, "queue": fields.pop("queue", "browser"),
            "queued_at": timezone.now() - timedelta(seconds=seconds_ago), **fields}


def _durations(user: Any, node_name: str, seconds: list[float]) -> None:
    """Completed runs of a node type that took these many seconds."""
    done = _job(user, status=Job.Status.COMPLETED)
    end = timezone.now()
    for i, s in enumerate(seconds):
        NodeRun.objects.create(job=done, gid=0, step_id=500 + i, node_name=node_name,
                               status=NodeRun.Status.COMPLETED, completed_at=end,
                               started_at=end - timedelta(seconds=s))


@pytest.mark.django_db
def test_a_queued_job_counts_the_due_runs_ahead_on_its_queue(alice, bob):
    # given runs on the browser queue: two older ones (one of them bob's), one with a higher
    # priority queued later, one backing off (not due), one on another queue, one queued later
    _job(bob, runs=[_queued(30)])
    _job(alice, runs=[_queued(20)])
    _job(bob, runs=[_queued(1)], priority=9)
    _job(bob, runs=[_queued(40, next_attempt_at=timezone.now() + timedelta(seconds=60))])
    _job(bob, runs=[_queued(50, queue="io")])
    mine = _job(alice, runs=[_queued(10), {"status": NodeRun.Status.BLOCKED, "node_name": "x"}],
                gens=[Generation.Status.PENDING])
    _job(bob, runs=[_queued(5)])
    _durations(bob, "p5", [2.0, 4.0, 9.0])

    info = job_wait_info(mine)

    # then three are ahead, and each takes the median p5 run (4 s)
    assert info == {"state": "queued", "position": 3, "estimate_seconds": 12.0,
                    "retry_at": None, "run_at": None}


@pytest.mark.django_db
def test_the_median_reads_only_the_newest_runs_and_none_means_no_estimate(alice, bob,
                                                                          monkeypatch):
    from generation_app import selectors

    mine = _job(alice, runs=[_queued(10)])
    _job(bob, runs=[_queued(20)])
    assert job_wait_info(mine)["estimate_seconds"] is None  # no p5 run finished yet

    _durations(bob, "p5", [100.0, 100.0, 100.0])
    NodeRun.objects.filter(node_name="p5", status=NodeRun.Status.COMPLETED).update(
        completed_at=timezone.now() - timedelta(hours=1))
    _durations(bob, "p5", [3.0, 3.0])
    monkeypatch.setattr(selectors, "DURATION_SAMPLE", 2)

    info = job_wait_info(mine)

    assert (info["position"], info["estimate_seconds"]) == (1, 3.0)


@pytest.mark.django_db
def test_generations_over_the_cap_count_the_users_waiting_generations_ahead(alice, bob,
                                                                             settings):
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2
    waiting = Generation.Status.WAITING
    # given alice's older waiting generations (3), a scheduled job's (not due, not counted),
    # bob's (another user's line) and a newer job of hers
    _job(alice, gens=[waiting, waiting], created_ago=30)
    _job(alice, gens=[waiting, Generation.Status.PROCESSING], created_ago=20)
    _job(alice, gens=[waiting], created_ago=25,
         not_before=timezone.now() + timedelta(hours=1))
    _job(bob, gens=[waiting, waiting], created_ago=40)
    mine = _job(alice, gens=[waiting, waiting], created_ago=10)
    _job(alice, gens=[waiting], created_ago=1)
    _durations(bob, "p5", [4.0])
    _durations(bob, "prompt", [1.0])

    info = job_wait_info(mine)

    # then 3 are ahead: with 2 slots that is two rounds of a p5 + prompt generation (5 s)
    assert info == {"state": "waiting_for_slot", "position": 3, "estimate_seconds": 10.0,
                    "retry_at": None, "run_at": None}


@pytest.mark.django_db
def test_a_scheduled_job_says_when_it_starts_without_a_query(alice, django_assert_num_queries):
    run_at = timezone.now() + timedelta(seconds=90)
    job = _job(alice, gens=[Generation.Status.WAITING], not_before=run_at)

    with django_assert_num_queries(0):
        info = job_wait_info(job, now=run_at - timedelta(seconds=60))

    assert info == {"state": "scheduled", "position": None, "estimate_seconds": 60.0,
                    "retry_at": None, "run_at": run_at}


@pytest.mark.django_db
def test_a_step_backing_off_says_when_it_is_tried_again(alice):
    retry_at = timezone.now() + timedelta(seconds=30)
    job = _job(alice, gens=[Generation.Status.PROCESSING],
               runs=[_queued(5, queue="io", next_attempt_at=retry_at, retries=2),
                     {"status": NodeRun.Status.RUNNING, "queue": "io"}])

    info = job_wait_info(job)

    assert info["state"] == "retrying" and info["retry_at"] == retry_at
    assert 29 <= info["estimate_seconds"] <= 30


@pytest.mark.django_db
def test_running_and_finished_jobs_wait_for_nothing(alice, django_assert_num_queries):
    running = _job(alice, gens=[Generation.Status.PROCESSING, Generation.Status.WAITING],
                   runs=[{"status": NodeRun.Status.RUNNING}, _queued(3)])
    finished = _job(alice, status=Job.Status.COMPLETED, gens=[Generation.Status.COMPLETED])

    with django_assert_num_queries(0):
        assert job_wait_info(finished)["state"] is None
    assert job_wait_info(running)["state"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("ahead", [1, 30])
def test_the_wait_info_costs_two_queries_however_long_the_line(alice, bob, ahead,
                                                                django_assert_num_queries):
    for i in range(ahead):
        _job(bob, runs=[_queued(100 + i)])
    _durations(bob, "p5", [2.0] * 5)
    mine = _job(alice, runs=[_queued(1)])

    with django_assert_num_queries(2):
        info = job_wait_info(mine)

    assert (info["state"], info["position"], info["estimate_seconds"]) == (
        "queued", ahead, 2.0 * ahead)


@pytest.mark.django_db
def test_the_job_detail_says_what_the_job_waits_for_and_links_its_gallery(api_for, alice, bob):
    from collections_app.services import collection_create

    collection = collection_create(user=alice, data={"version": "v2", "steps": [
        {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "hi"}}]})
    _job(bob, runs=[_queued(20)])
    job = _job(alice, runs=[_queued(10)], data={"collectionId": str(collection.id)})

    body = api_for(alice).get(f"/api/jobs/{job.id}").json()["data"]
    other = api_for(bob).get(f"/api/jobs/{job.id}")

    assert body["waiting"] == {"state": "queued", "position": 1, "estimate_seconds": None,
                               "retry_at": None, "run_at": None}
    assert body["urls"]["gallery"].startswith(f"http://testserver/c/{collection.id}?g=")
    assert other.status_code == 404 and "waiting" not in other.content.decode()
