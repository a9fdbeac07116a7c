"""The Python client (emprops.client): against a real uvicorn server and Celery worker, plus
in-process checks, over httpx.MockTransport, of what a server does not do on cue (429s, a stream
that drops)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from emprops.accounts.models import CreditsBalance
from emprops.accounts.services import api_key_create
from emprops.client import (
    AuthError,
    Client,
    Conflict,
    InsufficientCredits,
    Job,
    JobFailed,
    NotFound,
    RateLimited,
    ValidationError,
)
from generation_app.models import Generation
from jobs_app.models import Job as JobRow
from tests.workers import ROOT
from workflows_app.models import Workflow

WHO = {"name": "who", "type": "pick", "value": {"values": ["cat", "owl"]}}


def live(test: Callable[..., None]) -> Callable[..., None]:
    """Runs against the module's uvicorn server and Celery worker."""
    marked = pytest.mark.usefixtures("transactional_db")(test)
    return pytest.mark.server(pytest.mark.worker(pytest.mark.timeout(120)(marked)))


def _client(platform: Any, user: Any) -> Client:
    _, key = api_key_create(user=user, name="client")
    return Client(platform.url, api_key=key)


def test_importing_the_client_and_the_cli_loads_neither_django_nor_celery():
    code = ("import sys, emprops.client, emprops.cli; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery')); "
            "assert not heavy, heavy")

    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)

    assert proc.returncode == 0, proc.stderr


@live
def test_generate_wait_outputs_download_and_events(live_platform, make_user, tmp_path):
    alice = make_user("alice")
    client = _client(live_platform, alice)

    job = client.generate(workflow="prompt", inputs={"prompt": "a $who"}, variables=[WHO],
                          count=2, idempotency_key="client-1")

    assert job.status == "pending" and job.generations == 2
    assert job.cost is not None and job.cost["total"] == 2.0
    assert job.collection_id == str(JobRow.objects.get(pk=job.id).data["collectionId"])
    # the stream runs to the job's end (live, or as the snapshot of a job already finished)
    seen = list(job.events(timeout=60))
    assert seen[0].event == "job_update" and seen[-1].event in ("job_update", "history_init")
    rows = [r for e in seen if e.event in ("history_init", "job_history")
            for r in (e.data if e.event == "history_init" else [e.data])]
    assert sorted(r["data"]["gid"] for r in rows
                  if r["message"] == "Generation completed successfully") == [0, 1]
    assert job.status == "completed"

    finished = job.wait(timeout=30)

    assert finished is job and job.progress == 100
    hashes = dict(Generation.objects.filter(job_id=job.id).values_list("gid", "hash"))
    step = JobRow.objects.get(pk=job.id).data["outputs"][0]["steps"][0]["id"]
    outputs = job.outputs
    assert [(o.generation_id, o.hash, o.step_id, o.node_name, o.mime_type) for o in outputs] == [
        (0, hashes[0], step, "prompt", "text/plain"), (1, hashes[1], step, "prompt", "text/plain")]
    assert {o.data for o in outputs} <= {"a cat", "a owl"}
    assert all(o.src and o.src.startswith(f"{live_platform.url}/media/generations/")
               for o in outputs)

    paths = job.download(tmp_path / "out")

    assert [p.name for p in paths] == [f"0-{step}-prompt.txt", f"1-{step}-prompt.txt"]
    assert [p.read_text() for p in paths] == [o.data for o in outputs]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths]

    # replay from the start, and resume from the middle: exactly the events after the id given
    log = list(job.events(last_event_id=0, timeout=30))
    assert [e.id for e in log] == list(range(1, len(log) + 1))
    assert log[-1].event == "job_update" and log[-1].data["status"] == "completed"
    middle = log[len(log) // 2].id
    assert list(job.events(last_event_id=middle, timeout=30)) == log[middle:]
    # a finished job's stream is its snapshot: the final state and the whole history, then done
    snapshot = list(job.events(timeout=30))
    assert [e.event for e in snapshot] == ["job_update", "history_init"]
    assert snapshot[1].data[-1]["message"] == "Generation completed successfully"

    # the same Idempotency-Key and body give the same job back
    again = client.generate(workflow="prompt", inputs={"prompt": "a $who"}, variables=[WHO],
                            count=2, idempotency_key="client-1")
    assert again.id == job.id
    assert client.jobs.get(job.id).status == "completed"
    assert [j.id for j in client.jobs.list()] == [job.id]
    with pytest.raises(Conflict) as cancelled:
        job.cancel()
    assert cancelled.value.status == 409 and cancelled.value.request_id
    with pytest.raises(Conflict):
        job.retry()
    assert JobRow.objects.get(pk=job.id).status == "completed"


@live
def test_error_answers_map_to_exceptions(live_platform, make_user):
    alice = make_user("alice")
    client = _client(live_platform, alice)
    missing = uuid.uuid4()

    with pytest.raises(NotFound) as not_found:
        client.jobs.get(str(missing))
    assert (not_found.value.status, not_found.value.message) == (404, "Job not found.")
    assert not_found.value.request_id

    with pytest.raises(AuthError) as denied:
        Client(live_platform.url, api_key="ek_" + "x" * 40).jobs.list()
    assert denied.value.status == 401 and denied.value.request_id

    with pytest.raises(ValidationError) as invalid:
        client.generate(workflow="prompt", inputs={"prompt": "x"}, count=0)
    assert invalid.value.status == 400 and "count" in invalid.value.details

    CreditsBalance.objects.filter(user=alice).update(balance=0)
    with pytest.raises(InsufficientCredits) as short:
        client.generate(workflow="prompt", inputs={"prompt": "x"}, count=2)
    assert short.value.status == 402
    assert (short.value.required, short.value.available) == ("2.0000", "0.0000")
    assert short.value.quote is not None and short.value.quote.total_cost == 2.0
    assert not JobRow.objects.exists()


@live
def test_workflows_search_form_and_quote(live_platform, make_user):
    Workflow.objects.create(
        name="flux", label="Flux", type="fetch_api", output_mime_type="image/png", display=True,
        data={"form": {"fields": [
                  {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
                  {"id": "steps", "name": "Steps", "type": "slider", "default": 20,
                   "constraints": {"min": 1, "max": 50}}]},
              "credits_script": "function computeCost(c){ return {cost: c.steps / 10} }",
              "body": {"input": {"prompt": "", "steps": 0}},
              "inputs": [{"id": "prompt", "pathJq": ".input.prompt"},
                         {"id": "steps", "pathJq": ".input.steps"}],
              "api": {"url": "http://127.0.0.1:9/x", "method": "POST", "successResponseCode": 200,
                      "fetchType": "wait", "wait": {"outputExprJq": ".output.url"}}})
    client = _client(live_platform, make_user("alice"))

    found = client.workflows.search("flu")
    form = client.workflows.form("flux")
    quote = client.workflows.quote("flux", inputs={"prompt": "x", "steps": 30}, count=2)

    assert [(w.name, w.type, w.output_mime_type) for w in found] == [
        ("flux", "fetch_api", "image/png")]
    assert client.workflows.search("nothing-like-it") == []
    assert form.name == "flux" and [f["id"] for f in form.fields] == ["prompt", "steps"]
    assert (quote.per_generation, quote.total_cost, quote.generations) == (3.0, 6.0, 2)
    with pytest.raises(NotFound):
        client.workflows.form("no-such-workflow")
    # a built-in node has no workflow row: it is quoted as the one step generate() would make
    builtin = client.workflows.quote("prompt", inputs={"prompt": "x"}, count=3)
    assert (builtin.per_generation, builtin.total_cost, builtin.generations) == (1.0, 3.0, 3)
    with pytest.raises(NotFound) as unknown:
        client.workflows.quote("no-such-workflow")
    assert unknown.value.message == "Workflow not found."


# ---- in process: what a server does not do on cue ---------------------------------------------

def _envelope(status: int, data: Any = None, error: str | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"data": data, "error": error}
    if error:
        body.update(details={}, request_id="req-1")
    return httpx.Response(status, json=body, headers=headers)


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[Client, list[float]]:
    client = Client("http://api.test/api", api_key="ek_test", transport=httpx.MockTransport(handler))
    waits: list[float] = []
    client._sleep = waits.append
    return client, waits


def test_a_429_is_retried_after_what_retry_after_says_then_raised():
    answers = iter([_envelope(429, error="Slow down.", headers={"Retry-After": "3"}),
                    _envelope(429, error="Slow down.", headers={"Retry-After": "2"}),
                    _envelope(200, data={"username": "alice"})])
    client, waits = _mock(lambda request: next(answers))

    assert client.me() == {"username": "alice"}
    assert waits == [3.0, 2.0]

    calls: list[httpx.Request] = []
    client, waits = _mock(lambda request: calls.append(request) or _envelope(
        429, error="Slow down.", headers={"Retry-After": "7"}))
    with pytest.raises(RateLimited) as limited:
        client.jobs.list()
    assert len(calls) == 1 + client.max_retries and waits == [7.0] * client.max_retries
    assert (limited.value.status, limited.value.retry_after, limited.value.request_id) == (
        429, 7.0, "req-1")
    assert calls[0].headers["X-API-Key"] == "ek_test"
    assert calls[0].url == "http://api.test/api/jobs"


def _sse(*events: tuple[int, str, Any]) -> bytes:
    frames = ["retry: 2000\n\n"] + [f"id: {i}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
                                    for i, name, data in events]
    return "".join(frames).encode()


def test_a_dropped_stream_resumes_from_the_last_event_id_and_a_204_ends_it():
    update = {"id": "j", "status": "processing", "progress": 0, "error_message": None}
    row = {"id": 1, "status": "processing", "message": "Node started", "data": {"gid": 0}}
    streams = iter([
        # the snapshot, one live event, then the connection drops
        _sse((3, "job_update", update), (3, "history_init", []), (4, "job_history", row)),
        # the rest after 4, then a close before the job ends
        _sse((5, "job_history", {**row, "message": "Node prompt completed"})),
        None,  # past the final event of a finished job: 204
    ])
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        body = next(streams)
        if body is None:
            return httpx.Response(204)
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    client, waits = _mock(handler)

    events = list(Job(id="j", status="pending", progress=0, _client=client).events())

    assert [(e.id, e.event) for e in events] == [(3, "job_update"), (3, "history_init"),
                                                 (4, "job_history"), (5, "job_history")]
    assert asked == [None, "4", "5"]
    assert waits == [1.0, 1.0]


def test_wait_polls_when_the_stream_is_unavailable_and_raises_job_failed():
    states = iter(["processing", "processing", "failed"])
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/events"):
            return _envelope(502, error="Bad gateway.")
        status = next(states)
        return _envelope(200, data={
            "id": "j", "status": status, "progress": 50,
            "error_message": "Error in component 'prompt': boom" if status == "failed" else None,
            "data": {"outputs": []}})

    client, waits = _mock(handler)
    job = Job(id="j", status="pending", progress=0, _client=client)

    with pytest.raises(JobFailed) as failed:
        job.wait(poll=0.5)

    assert failed.value.job is job and job.status == "failed"
    assert failed.value.error_message == "Error in component 'prompt': boom"
    assert paths == ["/api/jobs/j/events"] * 6 + ["/api/jobs/j"] * 3
    assert waits == [1.0] * 5 + [0.5, 0.5]
