"""history_add_many: several history rows and their events in one statement, in order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs_app.models import Job, JobEvent, JobHistory
from jobs_app.services import HistoryEntry, history_add, history_add_many

pytestmark = pytest.mark.django_db


def _job(user: Any) -> Job:
    return Job.objects.create(user=user, name="history", job_type="collection_generation")


def test_rows_and_events_are_written_in_order_in_one_statement(
        alice: Any, django_capture_on_commit_callbacks: Any) -> None:
    # given a job that already has one event
    job = _job(alice)
    history_add(job=job, status="pending", message="created", dedupe_key="created")
    entries = [HistoryEntry(status="processing", message=f"step {i}", dedupe_key=f"k{i}",
                            data={"i": i}, retry_attempt=i) for i in range(3)]

    # when three rows are added at once
    with CaptureQueriesContext(connection) as queries, \
            django_capture_on_commit_callbacks() as published:
        written = history_add_many(job=job, entries=entries)

    # then one statement wrote them, numbered after the existing event, in the given order
    assert written == 3 and len(queries.captured_queries) == 1
    rows = list(JobHistory.objects.filter(job=job).order_by("created_at", "id")
                .values_list("message", "data", "retry_attempt"))
    assert rows == [("created", {}, 0), ("step 0", {"i": 0}, 0), ("step 1", {"i": 1}, 1),
                    ("step 2", {"i": 2}, 2)]
    events = list(JobEvent.objects.filter(job=job).order_by("seq").values_list("seq", "data"))
    assert [seq for seq, _ in events] == [1, 2, 3, 4]
    ids = dict(JobHistory.objects.filter(job=job).values_list("message", "id"))
    assert [(d["message"], d["id"], d["data"]) for _, d in events[1:]] == [
        (f"step {i}", ids[f"step {i}"], {"i": i}) for i in range(3)]
    assert Job.objects.get(pk=job.pk).event_seq == 4
    # and each event is published on commit, in sequence order
    assert len(published) == 3


def test_rows_whose_dedupe_key_exists_are_skipped_and_numbers_stay_gap_free(
        alice: Any, django_capture_on_commit_callbacks: Any) -> None:
    # given a row written before (a redelivered recording writes its rows again)
    job = _job(alice)
    history_add(job=job, status="processing", message="first", dedupe_key="a")

    # when a batch repeats it among new ones
    with django_capture_on_commit_callbacks():
        written = history_add_many(job=job, entries=[
            HistoryEntry(status="processing", message="again", dedupe_key="a"),
            HistoryEntry(status="processing", message="new", dedupe_key="b")])

    # then only the new row and its event are written, with the next number
    assert written == 1
    assert list(JobHistory.objects.filter(job=job).order_by("id")
                .values_list("message", flat=True)) == ["first", "new"]
    assert list(JobEvent.objects.filter(job=job).order_by("seq")
                .values_list("seq", flat=True)) == [1, 2]

    # and a batch that is all repeats writes nothing at all
    assert history_add_many(job=job, entries=[
        HistoryEntry(status="processing", message="x", dedupe_key="b")]) == 0
    assert Job.objects.get(pk=job.pk).event_seq == 2


def test_a_batch_needs_distinct_dedupe_keys(alice: Any) -> None:
    job = _job(alice)
    with pytest.raises(ValueError):
        history_add_many(job=job, entries=[
            HistoryEntry(status="s", message="m", dedupe_key="same"),
            HistoryEntry(status="s", message="m", dedupe_key="same")])
    assert not JobHistory.objects.filter(job=job).exists()


def test_the_published_event_is_the_row_as_stored(
        alice: Any, django_capture_on_commit_callbacks: Any) -> None:
    from jobs_app.services import events_channel, events_pubsub

    job = _job(alice)
    pubsub = events_pubsub()
    pubsub.subscribe(events_channel(job.pk))
    try:
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        with django_capture_on_commit_callbacks(execute=True):
            history_add_many(job=job, entries=[HistoryEntry(
                status="completed", message="Generation completed", dedupe_key="g",
                data={"gid": 0, "outputs": {"steps": []}})])
        message = pubsub.get_message(timeout=2)
    finally:
        pubsub.close()

    payload = json.loads(message["data"])
    row = JobHistory.objects.get(job=job)
    assert payload["seq"] == 1 and payload["event"] == "job_history"
    assert payload["data"]["id"] == row.id and payload["data"]["data"] == row.data
    assert payload["data"]["job_id"] == str(job.pk)
