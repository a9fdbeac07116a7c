"""The runner in-process: claims and leases, lost claims, retries and backoff, poison runs,
cancellation mid-run, admission under the per-user cap, completion and its charge, the reaper,
and the query counts of the hot path.

No Celery worker and no subprocess: `node_run_execute` runs the built-in `prompt` node (no LLM)
right here. In a plain `db` test `transaction.on_commit` never fires, so nothing is announced
unless a test captures the callbacks (and runs them, where it needs the admission they queue).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from collections_app.models import FlatFile
from emprops import storage
from emprops.accounts.models import CreditsBalance, CreditsHistory, CreditsHold
from emprops.errors import Conflict
from generation_app.models import Generation, NodeRun
from generation_app.nodes.base import NodeError, NodeOutput, StoredFile
from generation_app.services import reaper
from generation_app.services.admission import node_run_claim
from generation_app.services.control import job_cancel, job_retry
from generation_app.services.recording import (
    backoff_seconds,
    node_run_complete,
    node_run_fail,
    storage_key,
)
from generation_app.services.requests import job_create_from_input, job_input_prepare
from generation_app.services.running import node_run_execute
from jobs_app.models import Job, JobHistory

pytestmark = pytest.mark.django_db

ONE_STEP = [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a quiet harbour at dawn"}}]
TWO_STEPS = [*ONE_STEP,
             {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "an etching of #1"}}]

# Query counts of the hot path as measured at 1b2f1dc (at 387037f: 22, 42 and 59; +1 since a
# completion renews its claim before storing files), inside the
# test's transaction, so each outer atomic block counts as a SAVEPOINT and its RELEASE: a rise fails.
SUBMIT_QUERIES = 12  # job_create_from_input: a 2-step prompt input, 1 generation (its first run queued in the same inserts)
EXECUTE_CHAIN_QUERIES = 29  # node_run_execute of step 1, which runs step 2 in memory and records both, completing the generation and the job


def _input(steps: list[dict[str, Any]], count: int) -> dict[str, Any]:
    return {"version": "v2", "steps": copy.deepcopy(steps), "variables": [],
            "generations": {"hashes": [], "generations": count, "use_custom_hashes": False}}


def _submit(user: Any, *, steps: list[dict[str, Any]] = ONE_STEP, count: int = 1) -> Job:
    """A job as the API submits one (validated, quoted, credits held); nothing is announced."""
    job_input = job_input_prepare(user=user, data=_input(steps, count), count=count)
    return job_create_from_input(user=user, collection_id=None, job_input=job_input,
                                 name="runner test")


def _run(job: Job, *, gid: int = 0, step_id: int = 1) -> NodeRun:
    return NodeRun.objects.get(job=job, gid=gid, step_id=step_id)


def _expire_lease(run: NodeRun) -> None:
    """As if the attempt had been silent for a whole lease (a frozen or very slow worker)."""
    NodeRun.objects.filter(pk=run.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    if run.started_at is not None:
        run.started_at -= timedelta(seconds=settings.NODE_LEASE_SECONDS + 1)


def _output(text: str) -> NodeOutput:
    return NodeOutput(mime_type="text/plain", data=text,
                      files=[StoredFile("prompt.txt", text.encode(), "text/plain")],
                      src_file="prompt.txt")


def _charges(job: Job) -> list[Decimal]:
    return list(CreditsHistory.objects.filter(job_id=job.id, flow=CreditsHistory.Flow.OUT)
                .order_by("id").values_list("amount", flat=True))


def _balance(user: Any) -> Decimal:
    return CreditsBalance.objects.get(user=user, credit_type="permanent").balance


def _messages(job: Job) -> list[str]:
    return list(JobHistory.objects.filter(job=job).order_by("id").values_list("message", flat=True))


def _statuses(job: Job) -> list[str]:
    return list(Generation.objects.filter(job=job).order_by("gid")
                .values_list("status", flat=True))


def _between(value: datetime | None, low: datetime, high: datetime) -> bool:
    return value is not None and low <= value <= high


# ---- 1. claims -----------------------------------------------------------------------------------

def test_two_claims_of_one_queued_run_only_the_first_wins(alice, settings):
    # given a queued run
    job = _submit(alice)
    run = _run(job)
    assert run.status == NodeRun.Status.QUEUED

    # when two workers claim it
    before = timezone.now()
    first = node_run_claim(run_id=run.pk, worker="w1")
    after = timezone.now()
    second = node_run_claim(run_id=run.pk, worker="w2")

    # then the first holds it under a lease, the second gets nothing and changes nothing
    assert first is not None
    assert second is None
    run.refresh_from_db()
    assert (run.status, run.attempt, run.worker) == (NodeRun.Status.RUNNING, 1, "w1")
    lease = timedelta(seconds=settings.NODE_LEASE_SECONDS)
    assert _between(run.lease_until, before + lease, after + lease)
    assert first.attempt == 1
    assert first.job == job  # the job comes with the claim


def test_a_run_waiting_for_its_backoff_is_not_claimable_until_due(alice):
    # given a queued run whose next attempt is due in 30 s
    job = _submit(alice)
    run = _run(job)
    due = timezone.now() + timedelta(seconds=30)
    NodeRun.objects.filter(pk=run.pk).update(next_attempt_at=due)

    # when a worker claims it now, and again once it is due
    early = node_run_claim(run_id=run.pk, worker="w1")
    run.refresh_from_db()
    unchanged = (run.status, run.attempt, run.worker, run.next_attempt_at)
    NodeRun.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    late = node_run_claim(run_id=run.pk, worker="w1")

    # then the early claim gets nothing and leaves the row as it was; the due one takes it
    assert early is None
    assert unchanged == (NodeRun.Status.QUEUED, 0, None, due)
    assert late is not None
    run.refresh_from_db()
    assert (run.status, run.attempt, run.next_attempt_at) == (NodeRun.Status.RUNNING, 1, None)


def test_a_running_run_whose_lease_expired_is_claimed_again_with_the_next_attempt(alice, settings):
    # given a run claimed by a worker that died (its lease expired)
    job = _submit(alice)
    run = _run(job)
    assert node_run_claim(run_id=run.pk, worker="dead") is not None
    _expire_lease(run)

    # when another worker claims it
    before = timezone.now()
    taken = node_run_claim(run_id=run.pk, worker="alive")
    after = timezone.now()

    # then it holds the run under a new lease, as attempt 2
    assert taken is not None
    assert taken.attempt == 2
    run.refresh_from_db()
    assert (run.status, run.attempt, run.worker) == (NodeRun.Status.RUNNING, 2, "alive")
    lease = timedelta(seconds=settings.NODE_LEASE_SECONDS)
    assert _between(run.lease_until, before + lease, after + lease)


def test_a_running_run_with_a_live_lease_is_not_claimable(alice):
    # given a run held by a live worker
    job = _submit(alice)
    run = _run(job)
    assert node_run_claim(run_id=run.pk, worker="w1") is not None
    run.refresh_from_db()
    held = (run.status, run.attempt, run.worker, run.lease_until)

    # when another worker claims it
    taken = node_run_claim(run_id=run.pk, worker="w2")

    # then it gets nothing and the holder keeps its claim
    assert taken is None
    run.refresh_from_db()
    assert (run.status, run.attempt, run.worker, run.lease_until) == held
    assert held[:3] == (NodeRun.Status.RUNNING, 1, "w1")


# ---- 2. a lost claim ------------------------------------------------------------------------------

def test_an_attempt_whose_claim_was_taken_over_records_nothing(alice):
    # given a one-step job whose run was taken over after attempt 1's lease expired
    job = _submit(alice)
    stale = node_run_claim(run_id=_run(job).pk, worker="slow")
    assert stale is not None
    _expire_lease(stale)
    current = node_run_claim(run_id=stale.pk, worker="fast")
    assert current is not None and current.attempt == 2

    # when the stale attempt finishes
    inline = node_run_complete(run=stale, result=_output("stale"), payload={})

    # then it records nothing: no output, no file row, no history, no charge
    assert inline == []
    run = _run(job)
    assert (run.status, run.attempt, run.output) == (NodeRun.Status.RUNNING, 2, None)
    assert not FlatFile.objects.filter(job_id=job.id).exists()
    assert _messages(job) == ["Job created and pending execution"]
    assert _charges(job) == []
    assert Generation.objects.get(job=job).status == Generation.Status.PENDING
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.remaining, hold.settled_gids) == ("held", Decimal(1), [])

    # and the current holder still completes, charged once
    assert node_run_complete(run=current, result=_output("fresh"), payload={}) == []
    run.refresh_from_db()
    assert (run.status, run.output["data"]) == (NodeRun.Status.COMPLETED, "fresh")
    assert _charges(job) == [Decimal(1)]
    assert Job.objects.get(pk=job.pk).status == Job.Status.COMPLETED


def test_an_attempt_whose_claim_was_taken_over_does_not_overwrite_the_recorded_file(alice):
    # given a run taken over from a slow attempt 1, and attempt 2 completed with its own output
    job = _submit(alice)
    stale = node_run_claim(run_id=_run(job).pk, worker="slow")
    assert stale is not None
    _expire_lease(stale)
    current = node_run_claim(run_id=stale.pk, worker="fast")
    assert current is not None
    node_run_complete(run=current, result=_output("fresh"), payload={})
    key = storage_key(job=job, gid=0, step_id=1, filename="prompt.txt")
    assert storage.read(key) == b"fresh"

    # when the slow attempt finishes with a different output (an LLM rewrite, a GPU render)
    assert node_run_complete(run=stale, result=_output("stale"), payload={}) == []

    # then the recorded output and its file still agree
    assert _run(job).output["data"] == "fresh"
    assert storage.read(key) == b"fresh"


# ---- 3. retry and backoff -------------------------------------------------------------------------

@pytest.mark.parametrize(("attempt", "seconds"), [
    (0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (8, 60.0),
    (1000, 60.0),
])
def test_backoff_doubles_per_attempt_and_is_capped_at_a_minute(attempt, seconds):
    assert backoff_seconds(attempt) == seconds


def test_a_retryable_error_with_attempts_left_requeues_the_run_after_its_backoff(alice):
    # given attempt 1 of a run
    job = _submit(alice)
    run = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert run is not None

    # when it fails with a retryable error
    before = timezone.now()
    inline = node_run_fail(run=run, error=NodeError("upstream hiccup", retryable=True))
    after = timezone.now()

    # then it is queued again, due after backoff_seconds(1) (announced with that countdown),
    # history says so, and nothing else changed
    assert inline == []
    run.refresh_from_db()
    assert (run.status, run.attempt, run.retries, run.error, run.lease_until) == (
        NodeRun.Status.QUEUED, 1, 1, "upstream hiccup", None)
    assert _between(run.announced_at, before, after)
    assert _messages(job)[-1] == "Node prompt retrying in 1 s: upstream hiccup"
    backoff = timedelta(seconds=backoff_seconds(1))
    assert backoff == timedelta(seconds=1)
    assert _between(run.next_attempt_at, before + backoff, after + backoff)
    gen = Generation.objects.get(job=job)
    assert (gen.status, gen.error, gen.failure_type) == (Generation.Status.PENDING, None, None)
    assert not JobHistory.objects.filter(job=job, status="failed").exists()
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.remaining, hold.settled_gids) == ("held", Decimal(1), [])
    # and it is not claimable before it is due
    assert node_run_claim(run_id=run.pk, worker="w2") is None


def test_the_backoff_of_a_late_attempt_is_capped_at_a_minute(alice, settings):
    # given attempt 8 of a run that may have 10 (2 ** 7 s would be over two minutes)
    settings.NODE_MAX_ATTEMPTS = 10
    job = _submit(alice)
    NodeRun.objects.filter(pk=_run(job).pk).update(attempt=7)
    run = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert run is not None and run.attempt == 8

    # when it fails with a retryable error
    before = timezone.now()
    node_run_fail(run=run, error=NodeError("upstream hiccup", retryable=True))
    after = timezone.now()

    # then it is due in 60 s
    run.refresh_from_db()
    assert run.status == NodeRun.Status.QUEUED
    minute = timedelta(seconds=60)
    assert _between(run.next_attempt_at, before + minute, after + minute)


def test_a_non_retryable_error_fails_the_run_and_its_generation_only(alice):
    # given a two-step job of two generations (2 credits each), generation 0's step 1 running
    job = _submit(alice, steps=TWO_STEPS, count=2)
    run = node_run_claim(run_id=_run(job, gid=0).pk, worker="w1")
    assert run is not None

    # when it fails with a non-retryable error
    assert node_run_fail(run=run, error=NodeError("bad input")) == []

    # then the run and generation 0 fail, its next step is cancelled and its share released
    message = "Error in component 'prompt': bad input"
    run.refresh_from_db()
    assert (run.status, run.error, run.lease_until) == (NodeRun.Status.FAILED, "bad input", None)
    assert _run(job, gid=0, step_id=2).status == NodeRun.Status.CANCELLED
    gen = Generation.objects.get(job=job, gid=0)
    assert (gen.status, gen.error, gen.failure_type) == (
        Generation.Status.FAILED, message, "VALIDATION_ERROR")
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.amount, hold.remaining, hold.settled_gids) == (
        "held", Decimal(4), Decimal(2), [0])
    failed = list(JobHistory.objects.filter(job=job, status="failed").values("message", "data"))
    assert failed == [{"message": f"Generation failed: {message}",
                       "data": {"gid": 0, "error": message, "failure_type": "VALIDATION_ERROR",
                                "retryable": False}}]
    # and generation 1 and the job go on
    assert _statuses(job) == ["failed", "pending"]
    assert [_run(job, gid=1, step_id=s).status for s in (1, 2)] == ["queued", "blocked"]
    assert Job.objects.get(pk=job.pk).status == Job.Status.PENDING
    assert _charges(job) == []
    assert _balance(alice) == Decimal(10)


def test_a_retryable_error_on_the_last_attempt_fails_the_generation_and_the_job(alice, settings):
    # given the last allowed attempt of a one-generation job's only run
    settings.NODE_MAX_ATTEMPTS = 3
    job = _submit(alice)
    NodeRun.objects.filter(pk=_run(job).pk).update(attempt=2)
    run = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert run is not None and run.attempt == 3

    # when it fails with a retryable error
    node_run_fail(run=run, error=NodeError("upstream down", retryable=True))

    # then it is not retried: run, generation and job fail and the whole hold is released
    message = "Error in component 'prompt': upstream down"
    run.refresh_from_db()
    assert (run.status, run.next_attempt_at) == (NodeRun.Status.FAILED, None)
    gen = Generation.objects.get(job=job)
    assert (gen.status, gen.failure_type) == (Generation.Status.FAILED, "UPSTREAM_ERROR")
    job.refresh_from_db()
    assert (job.status, job.error_message) == (Job.Status.FAILED, message)
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.remaining) == ("released", Decimal(0))
    assert list(JobHistory.objects.filter(job=job, status="failed").values_list("data", flat=True)) \
        == [{"gid": 0, "error": message, "failure_type": "UPSTREAM_ERROR", "retryable": True}]
    assert _charges(job) == []
    assert _balance(alice) == Decimal(10)


# ---- 4. poison runs -------------------------------------------------------------------------------

def test_a_run_past_its_attempts_gives_up_without_running_the_node(alice, settings):
    # given a run whose worker was lost on each of its 3 allowed attempts (the last lease expired)
    settings.NODE_MAX_ATTEMPTS = 3
    job = _submit(alice)
    NodeRun.objects.filter(pk=_run(job).pk).update(
        status=NodeRun.Status.RUNNING, attempt=3,
        lease_until=timezone.now() - timedelta(seconds=1))

    # when a worker executes it once more
    inline = node_run_execute(run_id=_run(job).pk, worker="test")

    # then it fails as INTERNAL without the node running (no start, no output, no file)
    reason = "Gave up after 3 attempts (the worker was lost each time)."
    assert inline == []
    run = _run(job)
    assert (run.status, run.attempt, run.error, run.output) == (
        NodeRun.Status.FAILED, 4, reason, None)
    gen = Generation.objects.get(job=job)
    assert (gen.status, gen.error, gen.failure_type) == (
        Generation.Status.FAILED, f"Error in component 'prompt': {reason}", "INTERNAL")
    assert _messages(job) == ["Job created and pending execution",
                              f"Generation failed: Error in component 'prompt': {reason}"]
    assert not FlatFile.objects.filter(job_id=job.id).exists()
    assert not default_storage.exists(storage_key(job=job, gid=0, step_id=1,
                                                  filename="prompt.txt"))
    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED
    assert _charges(job) == []


# ---- 5. cancellation mid-run ----------------------------------------------------------------------

def test_cancel_mid_run_stops_the_run_and_a_late_completion_records_nothing(alice):
    # given a job of two generations, generation 0's run held by a worker
    job = _submit(alice, count=2)
    running = node_run_claim(run_id=_run(job, gid=0).pk, worker="w1")
    assert running is not None

    # when the user cancels, and the worker then finishes (or fails) that attempt
    job_cancel(user=alice, job_id=job.id)
    completed = node_run_complete(run=running, result=_output("late"), payload={})
    failed = node_run_fail(run=running, error=NodeError("late failure"))

    # then every run, generation and the job are cancelled, and the late attempt left no trace
    assert (completed, failed) == ([], [])
    runs = list(NodeRun.objects.filter(job=job).order_by("gid")
                .values_list("status", "output", "lease_until"))
    assert runs == [("cancelled", None, None), ("cancelled", None, None)]
    assert _statuses(job) == ["cancelled", "cancelled"]
    assert Job.objects.get(pk=job.pk).status == Job.Status.CANCELLED
    assert _messages(job) == ["Job created and pending execution", "Job cancelled"]
    assert not FlatFile.objects.filter(job_id=job.id).exists()
    # and the hold was released once, whole: nothing charged, nothing released per generation
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.amount, hold.remaining, hold.settled_gids) == (
        "released", Decimal(2), Decimal(0), [])
    assert _charges(job) == []
    assert _balance(alice) == Decimal(10)
    with pytest.raises(Conflict):
        job_cancel(user=alice, job_id=job.id)
    assert _messages(job) == ["Job created and pending execution", "Job cancelled"]


def test_a_late_completion_after_cancel_stores_no_file(alice):
    # given a running run whose job the user cancelled
    job = _submit(alice)
    running = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert running is not None
    job_cancel(user=alice, job_id=job.id)

    # when the worker finishes that attempt
    assert node_run_complete(run=running, result=_output("late"), payload={}) == []

    # then nothing was stored for it
    assert not FlatFile.objects.filter(job_id=job.id).exists()
    assert not default_storage.exists(storage_key(job=job, gid=0, step_id=1,
                                                  filename="prompt.txt"))


# ---- 6. admission under the per-user cap ----------------------------------------------------------

def test_generations_over_the_users_cap_wait(alice, settings):
    # given a cap of 2 running generations per user
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2

    # when alice submits a job of 5
    job = _submit(alice, count=5)

    # then 2 start (their runs queued), 3 wait (their runs blocked)
    assert _statuses(job) == ["pending", "pending", "waiting", "waiting", "waiting"]
    assert list(NodeRun.objects.filter(job=job).order_by("gid").values_list("status", flat=True)) \
        == ["queued", "queued", "blocked", "blocked", "blocked"]


def test_finishing_a_generation_admits_exactly_one_more(alice, settings, purge_broker,
                                                       django_capture_on_commit_callbacks):
    # given alice at her cap of 2, with 3 generations waiting
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2
    job = _submit(alice, count=5)

    # when generation 0 completes and its commit runs the admission it queued
    with django_capture_on_commit_callbacks(execute=True):
        assert node_run_execute(run_id=_run(job, gid=0).pk, worker="test") == []

    # then the oldest waiting one (generation 2) starts, and only it
    assert _statuses(job) == ["completed", "pending", "pending", "waiting", "waiting"]
    assert _run(job, gid=2).status == NodeRun.Status.QUEUED
    assert [_run(job, gid=g).status for g in (3, 4)] == ["blocked", "blocked"]


def test_admission_starts_the_oldest_job_first(alice, settings, purge_broker,
                                               django_capture_on_commit_callbacks):
    # given alice at her cap of 2 with an older job (one generation waiting) and a newer one
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2
    older = _submit(alice, count=3)
    newer = _submit(alice, count=2)
    assert (_statuses(older), _statuses(newer)) == (
        ["pending", "pending", "waiting"], ["waiting", "waiting"])

    # when generations finish one after the other
    with django_capture_on_commit_callbacks(execute=True):
        node_run_execute(run_id=_run(older, gid=0).pk, worker="test")
    after_first = (_statuses(older), _statuses(newer))
    with django_capture_on_commit_callbacks(execute=True):
        node_run_execute(run_id=_run(older, gid=1).pk, worker="test")

    # then the older job's waiting generation starts first, then the newer job's first
    assert after_first == (["completed", "pending", "pending"], ["waiting", "waiting"])
    assert (_statuses(older), _statuses(newer)) == (
        ["completed", "completed", "pending"], ["pending", "waiting"])


def test_a_submit_behind_waiting_generations_waits_and_a_free_slot_goes_to_the_oldest(
        alice, settings, django_assert_max_num_queries):
    # given alice at her cap of 2 with an older job's generation waiting
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2
    older = _submit(alice, count=3)
    job_input = job_input_prepare(user=alice, data=_input(TWO_STEPS, 1))

    # when she submits another job while no slot is free
    with django_assert_max_num_queries(SUBMIT_QUERIES):  # no admission pass: nothing to hand out
        newer = job_create_from_input(user=alice, collection_id=None, job_input=job_input,
                                      name="behind")

    # then its generation waits behind the older one
    assert (_statuses(older), _statuses(newer)) == (
        ["pending", "pending", "waiting"], ["waiting"])

    # and when a slot is free at the next submit (a running generation was cancelled meanwhile)
    Generation.objects.filter(job=older, gid=0).update(status=Generation.Status.CANCELLED)
    latest = _submit(alice, count=1)

    # then the older job's waiting generation takes it, not the new ones
    assert (_statuses(older), _statuses(newer), _statuses(latest)) == (
        ["cancelled", "pending", "pending"], ["waiting"], ["waiting"])


def test_another_users_job_is_admitted_independently(alice, bob, settings):
    # given alice at her cap of 2 with 3 generations waiting
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2
    alices = _submit(alice, count=5)

    # when bob submits a job of 3
    bobs = _submit(bob, count=3)

    # then bob's own cap applies: 2 of his start at once, alice's stay as they were
    assert _statuses(bobs) == ["pending", "pending", "waiting"]
    assert _statuses(alices) == ["pending", "pending", "waiting", "waiting", "waiting"]


def test_cancelling_a_job_frees_its_slots_for_the_users_waiting_generations(
        alice, settings, purge_broker, django_capture_on_commit_callbacks):
    # given alice at her cap of 2 with one job running and a newer one waiting
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 2
    running = _submit(alice, count=2)
    waiting = _submit(alice, count=3)
    assert _statuses(waiting) == ["waiting", "waiting", "waiting"]

    # when she cancels the running one and the cancel commits
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(user=alice, job_id=running.id)

    # then two of the waiting generations start, oldest first
    assert _statuses(running) == ["cancelled", "cancelled"]
    assert _statuses(waiting) == ["pending", "pending", "waiting"]
    assert [_run(waiting, gid=g).status for g in (0, 1, 2)] == ["queued", "queued", "blocked"]


# ---- 7. completion of the last node ---------------------------------------------------------------

def test_completing_the_last_node_completes_the_generation_and_the_job(alice):
    # given a two-step job of two generations (2 credits each, 4 held)
    job = _submit(alice, steps=TWO_STEPS, count=2)

    # when every step runs (step 1 makes step 2 ready, which the same call runs in memory and
    # records with it, in one transaction)
    for gid in (0, 1):
        assert node_run_execute(run_id=_run(job, gid=gid).pk, worker="test") == []
        assert _run(job, gid=gid, step_id=2).status == NodeRun.Status.COMPLETED
        assert Generation.objects.get(job=job, gid=gid).status == Generation.Status.COMPLETED

    # then both generations and the job are complete, each generation charged once
    assert _statuses(job) == ["completed", "completed"]
    job.refresh_from_db()
    assert (job.status, job.progress, job.error_message) == (Job.Status.COMPLETED, 100, None)
    assert _run(job, gid=0, step_id=2).output["data"] == "an etching of a quiet harbour at dawn"
    assert [o["generation"]["id"] for o in job.data["outputs"]] == [0, 1]
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.remaining, hold.settled_gids) == ("settled", Decimal(0), [0, 1])
    assert _charges(job) == [Decimal(2), Decimal(2)]
    assert _balance(alice) == Decimal(6)
    done = JobHistory.objects.filter(job=job, message="Generation completed successfully")
    assert sorted(d["gid"] for d in done.values_list("data", flat=True)) == [0, 1]
    assert FlatFile.objects.filter(job_id=job.id).count() == 4


def test_recording_a_completion_twice_charges_and_reports_once(alice):
    # given the only run of a one-generation job, completed once
    job = _submit(alice)
    run = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert run is not None
    assert node_run_complete(run=run, result=_output("done"), payload={}) == []

    # when the same attempt's completion is recorded again (a redelivery), and replayed once
    # more with the run and generation rows put back as they were before the first recording
    # (the charge, the history rows and the file rows must guard on their own)
    again = node_run_complete(run=run, result=_output("done"), payload={})
    NodeRun.objects.filter(pk=run.pk).update(status=NodeRun.Status.RUNNING)
    Generation.objects.filter(job=job).update(status=Generation.Status.PROCESSING)
    forced = node_run_complete(run=run, result=_output("done"), payload={})

    # then the generation is completed, charged and reported once
    assert (again, forced) == ([], [])
    assert _charges(job) == [Decimal(1)]
    assert _balance(alice) == Decimal(9)
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.remaining, hold.settled_gids) == ("settled", Decimal(0), [0])
    assert _messages(job) == ["Job created and pending execution", "Node started",
                              "Node prompt completed", "Generation completed successfully"]
    job.refresh_from_db()
    assert (job.status, job.progress, len(job.data["outputs"])) == (Job.Status.COMPLETED, 100, 1)
    assert FlatFile.objects.filter(job_id=job.id).count() == 1


def test_retry_reruns_only_the_failed_generation_and_charges_it_once(
        alice, purge_broker, django_capture_on_commit_callbacks):
    # given a job of two generations: generation 0 failed, generation 1 completed and charged
    job = _submit(alice, count=2)
    run = node_run_claim(run_id=_run(job, gid=0).pk, worker="w1")
    assert run is not None
    node_run_fail(run=run, error=NodeError("bad input"))
    node_run_execute(run_id=_run(job, gid=1).pk, worker="test")
    job.refresh_from_db()
    assert (job.status, _statuses(job), _charges(job)) == (
        Job.Status.FAILED, ["failed", "completed"], [Decimal(1)])

    # when the user retries it (the admission runs on commit) and the run is executed again
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(user=alice, job_id=job.id)
    retried = _run(job, gid=0)
    assert (retried.status, retried.attempt, retried.error) == (NodeRun.Status.QUEUED, 0, None)
    node_run_execute(run_id=retried.pk, worker="test")

    # then only generation 0 ran again, and each generation is charged exactly once
    job.refresh_from_db()
    assert (job.status, job.retry_count, job.error_message) == (Job.Status.COMPLETED, 1, None)
    assert _statuses(job) == ["completed", "completed"]
    assert _run(job, gid=1).attempt == 1
    assert _charges(job) == [Decimal(1), Decimal(1)]
    assert _balance(alice) == Decimal(8)
    hold = CreditsHold.objects.get(job_id=job.id)
    assert (hold.status, hold.remaining, sorted(hold.settled_gids), hold.round) == (
        "settled", Decimal(0), [0, 1], 1)
    done = JobHistory.objects.filter(job=job, message="Generation completed successfully")
    assert sorted(d["gid"] for d in done.values_list("data", flat=True)) == [0, 1]
    assert JobHistory.objects.filter(job=job, status="failed").count() == 1


# ---- the reaper -----------------------------------------------------------------------------------

def test_the_reaper_requeues_a_run_whose_lease_expired(alice, django_capture_on_commit_callbacks):
    # given a run whose worker died (lease expired)
    job = _submit(alice)
    assert node_run_claim(run_id=_run(job).pk, worker="dead") is not None
    _expire_lease(_run(job))

    # when the reaper passes (its announcement captured, not sent)
    with django_capture_on_commit_callbacks() as announced:
        counts = reaper.reap()

    # then the run is queued again (same attempt) and announced once; the next claim is attempt 2
    assert (counts["expired"], counts["due"], counts["reannounced"]) == (1, 0, 0)
    assert len(announced) == 1
    run = _run(job)
    assert (run.status, run.attempt, run.lease_until) == (NodeRun.Status.QUEUED, 1, None)
    assert run.announced_at is not None
    again = node_run_claim(run_id=run.pk, worker="alive")
    assert again is not None and again.attempt == 2


def test_the_reaper_announces_a_retry_whose_message_was_lost_once_its_backoff_is_over(alice,
                                                               django_capture_on_commit_callbacks):
    # given a run that failed with a retryable error, its backoff over and the countdown message
    # that should have announced it lost
    job = _submit(alice)
    run = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert run is not None
    node_run_fail(run=run, error=NodeError("upstream hiccup", retryable=True))
    lost = timezone.now() - timedelta(seconds=settings.NODE_UNCLAIMED_SECONDS + 1)
    NodeRun.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1),
                                             announced_at=lost)

    # when the reaper passes
    with django_capture_on_commit_callbacks() as announced:
        counts = reaper.reap()

    # then it announces the run once, as due work
    assert (counts["due"], counts["expired"], counts["reannounced"]) == (1, 0, 0)
    assert len(announced) == 1
    assert _run(job).announced_at is not None


# ---- query counts ---------------------------------------------------------------------------------

def test_submitting_a_job_query_count(alice, django_assert_max_num_queries):
    job_input = job_input_prepare(user=alice, data=_input(TWO_STEPS, 1))

    with django_assert_max_num_queries(SUBMIT_QUERIES):
        job = job_create_from_input(user=alice, collection_id=None, job_input=job_input,
                                    name="runner test")

    assert list(NodeRun.objects.filter(job=job).order_by("step_id")
                .values_list("status", flat=True)) == ["queued", "blocked"]


def test_executing_an_inline_prompt_step_query_count(alice, django_assert_max_num_queries):
    job = _submit(alice, steps=TWO_STEPS)

    first = _run(job).pk

    with django_assert_max_num_queries(EXECUTE_CHAIN_QUERIES):
        inline = node_run_execute(run_id=first, worker="test")

    assert inline == []
    assert _run(job, step_id=2).status == NodeRun.Status.COMPLETED
    assert Job.objects.get(pk=job.pk).status == Job.Status.COMPLETED


def test_the_upstream_run_key_survives_redelivery_but_not_a_user_retry(alice):
    # given a run claimed twice (a redelivery after its worker was lost)
    from generation_app.nodes.base import RunContext
    from generation_app.nodes.comfy.node import prompt_id_for
    from generation_app.services.running import run_key_for

    job = _submit(alice)
    first = node_run_claim(run_id=_run(job).pk, worker="w1")
    assert first is not None
    _expire_lease(first)
    second = node_run_claim(run_id=first.pk, worker="w2")
    assert second is not None and second.attempt == 2

    def prompt_id(run) -> str:
        ctx = RunContext(user_id=str(alice.id), job_id=str(job.id), gid=run.gid,
                         step_id=run.step_id, node_name=run.node_name, alias=None, hash="h",
                         seed=1, variables={}, components={},
                         run_key=run_key_for(job=Job.objects.get(pk=job.pk), run=run))
        return prompt_id_for(ctx)

    # then both attempts name the same upstream prompt ...
    before_retry = prompt_id(second)
    assert prompt_id(first) == before_retry
    # ... and a user retry of the job names a new one
    Job.objects.filter(pk=job.pk).update(retry_count=1)
    assert prompt_id(second) != before_retry
    assert run_key_for(job=Job.objects.get(pk=job.pk), run=second).endswith(":retry1")


def test_a_one_off_steps_id_never_links_its_file_to_another_users_component(alice, bob):
    # given bob's collection with a component, and alice's one-off input whose step id is that
    # component's id (step ids of a one-off input are the user's to choose)
    from collections_app.models import Collection, Component, ComponentFlatFile, Project

    project = Project.objects.create(user=bob, name="bob's")
    collection = Collection.objects.create(project=project, title="bob's")
    component = Component.objects.create(collection=collection, node_name="prompt")
    steps = [{"id": component.pk, "nodeName": "prompt", "nodePayload": {"prompt": "mine"}}]
    job = _submit(alice, steps=steps)

    # when alice's run completes
    assert node_run_execute(run_id=_run(job, step_id=component.pk).pk, worker="test") == []

    # then her file is recorded for her job only; bob's component gains nothing
    assert FlatFile.objects.filter(job_id=job.id, user=alice).count() == 1
    assert not ComponentFlatFile.objects.filter(component=component).exists()
