"""The job event stream against real processes: uvicorn serves it, a Celery worker publishes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emprops.accounts.services import api_key_create
from jobs_app.models import Job, JobEvent
from tests.workers import WebProcess, wait_for


@pytest.fixture
def web(transactional_db: Any, tmp_path: Any) -> Iterator[WebProcess]:
    proc = WebProcess(tmp_path).start()
    yield proc
    proc.stop()


def read_events(response: httpx.Response, *, until: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Parse SSE frames until `until(events)` is true (bounded by `timeout`)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError(f"stream did not finish in time: {events}")
        if line == "":
            if "event" in current:
                current["data"] = json.loads(current["data"])
                events.append(current)
                if until(events):
                    return events
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", 0)
        else:
            key, _, value = line.partition(": ")
            current[key] = value
    return events


def _collection(client: httpx.Client) -> str:
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "hello $who"}},
                      {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "#1 again"}}],
            "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                           "value": {"values": ["you", "them"]}}]}
    r = client.post("/api/projects/collections", json={"title": "Live", "data": data})
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


def _finished(events: list[dict[str, Any]]) -> bool:
    return any(e["event"] == "job_update" and e["data"]["status"] in ("completed", "failed")
               for e in events)


@pytest.mark.server
@pytest.mark.worker
@pytest.mark.timeout(120)
def test_stream_snapshot_then_live_events_from_another_process(alice, bob, web, worker):
    _, key = api_key_create(user=alice)
    client = httpx.Client(base_url=web.url, headers={"X-API-Key": key}, timeout=30)
    collection_id = _collection(client)
    job_id = client.post(f"/api/collections/{collection_id}/generations",
                         json={"count": 2}).json()["data"]["jobId"]

    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # read to the end: the stream closes by itself once the job has finished
        events = read_events(response, until=lambda ev: False)
    reconnect = client.get(f"/api/jobs/{job_id}/events",
                           headers={"Last-Event-ID": events[-1]["id"]})

    assert (events[-1]["event"], events[-1]["data"]["status"]) == ("job_update", "completed")
    assert int(events[-1]["id"]) == Job.objects.get(pk=job_id).event_seq
    assert reconnect.status_code == 204
    assert reconnect.content == b""
    assert events[0]["event"] == "job_update"
    assert events[1]["event"] == "history_init"
    assert events[1]["data"][0]["message"] == "Job created and pending execution"
    live = events[2:]
    ids = [int(e["id"]) for e in live]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert int(events[0]["id"]) < ids[0]
    assert {e["event"] for e in live} <= {"job_update", "job_history"}
    messages = [e["data"]["message"] for e in live if e["event"] == "job_history"]
    assert messages.count("Generation completed successfully") == 2
    # every event delivered is a committed row, in order
    rows = list(JobEvent.objects.filter(job_id=job_id).order_by("seq").values_list("seq", flat=True))
    assert set(ids) <= set(rows)


@pytest.mark.server
@pytest.mark.worker
@pytest.mark.timeout(120)
def test_last_event_id_replays_exactly_what_was_missed(alice, web, worker):
    _, key = api_key_create(user=alice)
    client = httpx.Client(base_url=web.url, headers={"X-API-Key": key}, timeout=30)
    job_id = client.post(f"/api/collections/{_collection(client)}/generations",
                         json={"count": 1}).json()["data"]["jobId"]
    wait_for(lambda: Job.objects.filter(pk=job_id, status="completed").exists(), 60)
    all_seqs = list(JobEvent.objects.filter(job_id=job_id).order_by("seq")
                    .values_list("seq", flat=True))
    last = all_seqs[-1]
    resume_from = all_seqs[len(all_seqs) // 2]

    with client.stream("GET", f"/api/jobs/{job_id}/events",
                       headers={"Last-Event-ID": str(resume_from)}) as response:
        replayed = read_events(response, until=lambda ev: int(ev[-1]["id"]) >= last)
    # an id the stream never sent (past a finished job's end is a 204: see below)
    with client.stream("GET", f"/api/jobs/{job_id}/events",
                       headers={"Last-Event-ID": "not-a-seq"}) as response:
        fresh = read_events(response, until=lambda ev: len(ev) >= 2)

    assert [int(e["id"]) for e in replayed] == [s for s in all_seqs if s > resume_from]
    assert all(e["event"] != "history_init" for e in replayed)
    assert [e["event"] for e in fresh] == ["job_update", "history_init"]


@pytest.mark.server
@pytest.mark.timeout(60)
def test_stream_refuses_before_streaming(alice, bob, web):
    from jobs_app.models import Job as JobModel

    job = JobModel.objects.create(user=alice, name="x")
    _, bob_key = api_key_create(user=bob)
    _, alice_key = api_key_create(user=alice)

    other = httpx.get(f"{web.url}/api/jobs/{job.id}/events", headers={"X-API-Key": bob_key})
    anonymous = httpx.get(f"{web.url}/api/jobs/{job.id}/events")
    bad_token = httpx.get(f"{web.url}/api/jobs/{job.id}/events?token=forged")
    token = httpx.post(f"{web.url}/api/jobs/{job.id}/events/token",
                       headers={"X-API-Key": alice_key}).json()["data"]["token"]
    bob_token_try = httpx.post(f"{web.url}/api/jobs/{job.id}/events/token",
                               headers={"X-API-Key": bob_key})
    with httpx.stream("GET", f"{web.url}/api/jobs/{job.id}/events?token={token}") as ok:
        first = read_events(ok, until=lambda ev: len(ev) >= 2, timeout=10)

    assert other.status_code == 404
    assert other.json() == {"data": None, "error": "Job not found.",
                            "request_id": other.headers["X-Request-ID"]}
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert bad_token.status_code == 401
    assert bob_token_try.status_code == 404
    assert [e["event"] for e in first] == ["job_update", "history_init"]


def test_stream_refuses_a_signed_token_whose_sub_names_no_one_with_401(alice, web, settings):
    import jwt

    from emprops.accounts.models import User

    job = Job.objects.create(user=alice, name="x")
    users_before = User.objects.count()
    answers = []
    for sub in ("x" * 256, "a\x00b", ""):
        token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, settings.JWT_SIGNING_KEY,
                           algorithm="HS256")
        answers.append(httpx.get(f"{web.url}/api/jobs/{job.id}/events",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10))

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert "longer than 255" in answers[0].json()["error"]
    assert "control characters" in answers[1].json()["error"]
    assert "non-empty" in answers[2].json()["error"]
    assert User.objects.count() == users_before


@pytest.mark.server
@pytest.mark.timeout(90)
def test_waiting_streams_hold_no_database_connection(alice, web):
    from django.db import connection

    job = Job.objects.create(user=alice, name="quiet")
    _, key = api_key_create(user=alice)

    def backend_count() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND pid <> pg_backend_pid()")
            return int(cursor.fetchone()[0])

    clients = [httpx.Client(base_url=web.url, headers={"X-API-Key": key}, timeout=30)
               for _ in range(25)]
    streams = [c.stream("GET", f"/api/jobs/{job.id}/events") for c in clients]
    responses = [s.__enter__() for s in streams]
    try:
        for r in responses:  # each got its snapshot, so each has run its database reads
            read_events(r, until=lambda ev: len(ev) >= 2, timeout=20)
        held = backend_count()
    finally:
        for s in streams:
            s.__exit__(None, None, None)
        for c in clients:
            c.close()

    assert all(r.status_code == 200 for r in responses)
    assert held <= 2  # 25 open streams, (almost) no server connections


@pytest.mark.server
@pytest.mark.timeout(60)
def test_an_event_whose_publish_was_lost_arrives_at_the_next_heartbeat(transactional_db, alice,
                                                                       tmp_path):
    from django.db.models import F

    # given a web process with a short heartbeat
    web = WebProcess(tmp_path, env={"EVENTS_HEARTBEAT_SECONDS": "0.5"}).start()
    job = Job.objects.create(user=alice, name="quiet")
    _, key = api_key_create(user=alice)
    written: list[int] = []

    def lose_a_publish() -> None:
        # an event row commits but its publish never happens (a worker killed between the two)
        Job.objects.filter(pk=job.pk).update(event_seq=F("event_seq") + 1)
        seq = Job.objects.get(pk=job.pk).event_seq
        JobEvent.objects.create(job=job, seq=seq, event_type="job_update",
                                data={"id": str(job.id), "status": "cancelled"})
        written.append(seq)

    def until(events: list[dict[str, Any]]) -> bool:
        if len(events) == 2 and not written:  # the snapshot is in: the stream now waits
            lose_a_publish()
        return len(events) >= 3

    # when a stream is open while that happens
    try:
        with httpx.stream("GET", f"{web.url}/api/jobs/{job.id}/events",
                          headers={"X-API-Key": key}, timeout=30) as response:
            events = read_events(response, until=until, timeout=10)
    finally:
        web.stop()

    # then the stream delivers it without waiting for another event
    assert [e["event"] for e in events[:2]] == ["job_update", "history_init"]
    assert [(int(e["id"]), e["event"], e["data"]["status"]) for e in events[2:]] == \
        [(written[0], "job_update", "cancelled")]


def read_frames(response: httpx.Response, *, on_event: Any = None,
                timeout: float = 20) -> tuple[list[dict[str, Any]], bool]:
    """Every frame (events, and keep-alive comments as `{"comment": ...}`) until the server
    closes the stream; `on_event(frames)` runs after each frame. Returns the frames and whether
    the stream ended by itself (False: `timeout` passed first)."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if line == "":
            if "event" in current:
                current["data"] = json.loads(current["data"])
            if "event" in current or "comment" in current:
                frames.append(current)
                if on_event is not None:
                    on_event(frames)
            current = {}
        elif line.startswith(":"):
            current["comment"] = line[1:].strip()
        else:
            key, _, value = line.partition(": ")
            current[key] = value
        if time.monotonic() > deadline:
            return frames, False
    return frames, True


@pytest.mark.server
@pytest.mark.timeout(60)
def test_a_running_job_keeps_streaming_and_its_cancel_closes_the_stream(transactional_db, alice,
                                                                        tmp_path):
    # given a running job and a web process with a short heartbeat
    web = WebProcess(tmp_path, env={"EVENTS_HEARTBEAT_SECONDS": "0.3"}).start()
    job = Job.objects.create(user=alice, name="running", status=Job.Status.PROCESSING)
    _, key = api_key_create(user=alice)
    client = httpx.Client(base_url=web.url, headers={"X-API-Key": key}, timeout=30)
    cancels: list[httpx.Response] = []

    def cancel_after_keep_alives(frames: list[dict[str, Any]]) -> None:
        if not cancels and sum(1 for f in frames if f.get("comment") == "keep-alive") >= 3:
            cancels.append(client.post(f"/api/jobs/{job.id}/cancel"))

    # when a stream stays open over a few heartbeats, then the job is cancelled
    try:
        with client.stream("GET", f"/api/jobs/{job.id}/events") as response:
            frames, ended = read_frames(response, on_event=cancel_after_keep_alives)
        final_seq = Job.objects.get(pk=job.id).event_seq
        past_the_end = client.get(f"/api/jobs/{job.id}/events",
                                  headers={"Last-Event-ID": str(final_seq)})
        far_past = client.get(f"/api/jobs/{job.id}/events", headers={"Last-Event-ID": "99999"})
        with client.stream("GET", f"/api/jobs/{job.id}/events",
                           headers={"Last-Event-ID": str(final_seq - 1)}) as response:
            last_one, last_one_ended = read_frames(response)
        with client.stream("GET", f"/api/jobs/{job.id}/events") as response:
            fresh, fresh_ended = read_frames(response)
    finally:
        client.close()
        web.stop()

    # then it kept streaming while the job ran, and ended right after the final update
    events = [f for f in frames if "event" in f]
    assert [c.status_code for c in cancels] == [200]
    assert ended is True
    assert [e["event"] for e in events] == ["job_update", "history_init", "job_history",
                                            "job_update"]
    assert events[2]["data"]["status"] == "cancelled"
    assert events[-1]["data"]["status"] == "cancelled"
    assert frames[-1] is events[-1]  # no keep-alive after the final event
    assert int(events[-1]["id"]) == final_seq
    # a reconnect at or past the final event is told to stop; one just before gets the rest
    assert (past_the_end.status_code, past_the_end.content) == (204, b"")
    assert (far_past.status_code, far_past.content) == (204, b"")
    assert last_one_ended is True
    assert [(int(f["id"]), f["event"], f["data"]["status"]) for f in last_one] == \
        [(final_seq, "job_update", "cancelled")]
    # a fresh connect to the finished job: the snapshot, then the end
    assert fresh_ended is True
    assert [(f["event"], int(f["id"])) for f in fresh] == [("job_update", final_seq),
                                                           ("history_init", final_seq)]
    assert fresh[0]["data"]["status"] == "cancelled"
    assert [r["status"] for r in fresh[1]["data"]] == ["cancelled"]


@pytest.mark.server
@pytest.mark.timeout(60)
def test_a_finish_whose_publish_was_lost_still_closes_the_stream(transactional_db, alice,
                                                                 tmp_path):
    from django.db import transaction
    from django.db.models import F

    # given a web process with a short heartbeat and an open stream of a running job
    web = WebProcess(tmp_path, env={"EVENTS_HEARTBEAT_SECONDS": "0.5"}).start()
    job = Job.objects.create(user=alice, name="quiet", status=Job.Status.PROCESSING)
    _, key = api_key_create(user=alice)
    finished: list[int] = []

    def finish_without_publishing(frames: list[dict[str, Any]]) -> None:
        if len(frames) == 2 and not finished:  # the snapshot is in: the stream now waits
            # the job fails and its final event row commits, but its publish never happens
            # (a worker killed between the two)
            with transaction.atomic():
                Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED,
                                                     event_seq=F("event_seq") + 1)
                seq = Job.objects.get(pk=job.pk).event_seq
                JobEvent.objects.create(job=job, seq=seq, event_type="job_update",
                                        data={"id": str(job.id), "status": "failed"})
            finished.append(seq)

    # when the stream runs on
    try:
        with httpx.stream("GET", f"{web.url}/api/jobs/{job.id}/events",
                          headers={"X-API-Key": key}, timeout=30) as response:
            frames, ended = read_frames(response, on_event=finish_without_publishing)
    finally:
        web.stop()

    # then the next heartbeat's catch-up delivers the final update from the rows and closes
    events = [f for f in frames if "event" in f]
    assert ended is True
    assert [e["event"] for e in events] == ["job_update", "history_init", "job_update"]
    assert events[0]["data"]["status"] == "processing"
    assert (int(events[-1]["id"]), events[-1]["data"]["status"]) == (finished[0], "failed")
    assert frames[-1] is events[-1]
