"""fetch_api and direct_job steps run by a real Celery worker against loopback peers: a polling
third-party API, an OpenAI-compatible server, the SSRF guard, permanent failures, polling
timeouts, and a user's secret that reaches the API and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.storage import default_storage

from collections_app.models import FlatFile
from generation_app.models import Generation, NodeRun
from jobs_app.models import Job, JobHistory
from tests.peers.http_api import HttpApiPeer
from tests.peers.openai_server import OpenAIPeer
from tests.workers import wait_for
from workflows_app.models import UserApiSecret, Workflow
from workflows_app.secrets import encrypt

FORM = {
    "fields": [
        {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
        {
            "id": "steps",
            "name": "Steps",
            "type": "slider",
            "default": 30,
            "constraints": {"min": 1, "max": 50},
        },
    ]
}


@pytest.fixture
def api() -> Iterator[HttpApiPeer]:
    with HttpApiPeer() as peer:
        yield peer


def fetch_workflow(name: str, api_settings: dict[str, Any], *, mime: str = "image/png") -> Workflow:
    return Workflow.objects.create(
        name=name,
        label=name,
        type="fetch_api",
        output_mime_type=mime,
        data={
            "form": FORM,
            "body": {"input": {"prompt": "", "steps": 20, "seed": 0}},
            "inputs": [
                {"id": "prompt", "pathJq": ".input.prompt"},
                {"id": "steps", "pathJq": ".input.steps"},
                {"id": "seed", "pathJq": ".input.seed"},
            ],
            "api": {
                "method": "POST",
                "headers": {"Authorization": "Bearer {{API_KEY}}"},
                **api_settings,
            },
        },
    )


def wait_api(url: str) -> dict[str, Any]:
    return {
        "url": url,
        "successResponseCode": 200,
        "fetchType": "wait",
        "wait": {"outputExprJq": ".output.url"},
    }


def polling_api(api: HttpApiPeer, *, query: str, timeout: float = 30) -> dict[str, Any]:
    return {
        "url": f"{api.url}/jobs?{query}",
        "successResponseCode": [200, 201],
        "fetchType": "polling",
        "polling": {
            "method": "GET",
            "url": api.url + "/jobs/{id}",
            "params": {"id": {"exprJq": ".id"}},
            "continueWhenExpr": "data.status === 'running'",
            "stopWhenExpr": "data.status === 'failed'",
            "outputExprJq": ".result.url",
            "successResponseCode": 200,
            "timeout": timeout,
            "interval": 0.2,
        },
    }


def generate(client: Any, node_name: str, payload: dict[str, Any], *, count: int = 1) -> str:
    data = {"steps": [{"id": 1, "nodeName": node_name, "alias": "Api", "nodePayload": payload}]}
    response = client.post(
        "/api/projects/collections", {"title": node_name, "data": data}, format="json"
    )
    assert response.status_code == 201, response.json()
    collection = response.json()["data"]
    response = client.post(
        f"/api/collections/{collection['id']}/generations", {"count": count}, format="json"
    )
    assert response.status_code == 202, response.json()
    return str(response.json()["data"]["jobId"])


def finished(job_id: str, timeout: float = 60) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), timeout)


def failure(job_id: str) -> dict[str, Any]:
    return JobHistory.objects.get(job_id=job_id, status="failed").data


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_polling_api_step_stores_the_apis_png(api_for, alice, api, start_worker, settings):
    settings.OUTBOUND_ALLOW_HOSTS = [api.host]
    worker = start_worker(env={"API_KEY": "sk-server-key-123"})
    fetch_workflow("flux-api", polling_api(api, query="polls=3&outcome=succeeded"))

    job_id = generate(api_for(alice), "flux-api", {"prompt": "a red fox"})

    job = finished(job_id)
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    response = job.data["outputs"][0]["steps"][0]["nodeResponse"]
    assert response["mimeType"] == "image/png"
    key = FlatFile.objects.get(job_id=job_id).storage_key
    assert key.endswith("/flux-api.png")
    assert response["src"].endswith(key)
    assert default_storage.open(key).read() == api.png
    assert api.count("POST", "/jobs") == 1
    assert api.count("GET", "/jobs/") == 4  # three "running" answers, then "succeeded"
    submitted = json.loads(next(api.recorded("/jobs")).body)
    generation = Generation.objects.get(job_id=job_id)
    assert submitted == {"input": {"prompt": "a red fox", "steps": 30, "seed": generation.seed}}
    assert next(api.recorded("/jobs")).headers["authorization"] == "Bearer sk-server-key-123"
    assert NodeRun.objects.get(job_id=job_id).queue == "io"
    assert JobHistory.objects.filter(job_id=job_id, message="Node flux-api completed").count() == 1


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_direct_job_text_runs_on_its_service_queue_two_at_a_time(api_for, alice, start_worker):
    # The peer answers only once both generations' requests are in flight together.
    with OpenAIPeer(hold_until_inflight=2, hold_timeout=20) as openai:
        Workflow.objects.create(
            name="gpt-writer",
            type="direct_job",
            output_mime_type="text/plain",
            data={
                "form": {
                    "fields": [
                        {"id": "prompt", "name": "Prompt", "type": "input", "is_required": True}
                    ]
                },
                "inputs": [{"id": "prompt", "pathJq": ".prompt", "is_required": True}],
                "job": {
                    "service_required": "openai_text",
                    "payload": {"model": "tiny-1", "prompt": ""},
                },
            },
        )
        worker = start_worker(env={"OPENAI_BASE_URL": openai.url})

        job_id = generate(api_for(alice), "gpt-writer", {"prompt": "write a haiku"}, count=2)

        job = finished(job_id)
        assert job.status == "completed", (job.error_message, worker.output()[-3000:])
        texts = [o["steps"][0]["nodeResponse"]["data"] for o in job.data["outputs"]]
        assert texts == ["echo: write a haiku", "echo: write a haiku"]
        assert openai.max_inflight == 2
        assert openai.count("/chat/completions") == 2
        assert set(NodeRun.objects.filter(job_id=job_id).values_list("queue", "attempt")) == {
            ("service.openai_text", 1)
        }
        keys = sorted(FlatFile.objects.filter(job_id=job_id).values_list("storage_key", flat=True))
        assert [k.rsplit("/", 1)[1] for k in keys] == ["gpt-writer.txt", "gpt-writer.txt"]
        assert default_storage.open(keys[0]).read() == b"echo: write a haiku"


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_loopback_without_allow_listing_is_refused_and_never_contacted(
    api_for, alice, api, start_worker, settings
):
    settings.OUTBOUND_ALLOW_HOSTS = []
    start_worker(env={"API_KEY": "sk-server-key-123"})
    fetch_workflow("sneaky", wait_api(api.url + "/wait"))

    job_id = generate(api_for(alice), "sneaky", {"prompt": "x"})

    job = finished(job_id)
    assert job.status == "failed"
    assert job.error_message.startswith("Error in component 'Api': ")
    assert "refused" in job.error_message
    assert failure(job_id)["retryable"] is False
    assert NodeRun.objects.get(job_id=job_id).attempt == 1
    assert api.count() == 0
    assert not FlatFile.objects.filter(job_id=job_id).exists()


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_third_party_4xx_fails_at_once(api_for, alice, api, start_worker, settings):
    settings.OUTBOUND_ALLOW_HOSTS = [api.host]
    start_worker(env={"API_KEY": "sk-server-key-123"})
    fetch_workflow("picky", wait_api(api.url + "/status/422"))

    job_id = generate(api_for(alice), "picky", {"prompt": "x"})

    job = finished(job_id)
    assert job.status == "failed"
    assert "HTTP 422" in job.error_message
    assert failure(job_id)["failure_type"] == "UPSTREAM_ERROR"
    assert failure(job_id)["retryable"] is False
    assert NodeRun.objects.get(job_id=job_id).attempt == 1
    assert api.count("POST", "/status/422") == 1


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_poll_that_never_finishes_times_out(api_for, alice, api, start_worker, settings):
    settings.OUTBOUND_ALLOW_HOSTS = [api.host]
    start_worker(env={"API_KEY": "sk-server-key-123"})
    fetch_workflow("slowpoke", polling_api(api, query="outcome=never", timeout=3))

    job_id = generate(api_for(alice), "slowpoke", {"prompt": "x"})

    job = finished(job_id)
    assert job.status == "failed"
    assert job.error_message == "Error in component 'Api': Polling did not finish within 3 s"
    assert failure(job_id)["failure_type"] == "TIMEOUT"
    assert api.count("GET", "/jobs/") >= 5


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_users_secret_reaches_the_api_and_nothing_else(
    api_for, alice, api, start_worker, settings
):
    secret = "sk-alice-own-7f3c9a1e5b"
    settings.OUTBOUND_ALLOW_HOSTS = [api.host]
    worker = start_worker()  # no API_KEY in the server's environment: only Alice's secret
    fetch_workflow("keyed", wait_api(api.url + "/wait"))
    fetch_workflow("keyed-echo", wait_api(api.url + "/status/403"))  # echoes our headers back
    for name in ("keyed", "keyed-echo"):
        UserApiSecret.objects.create(
            user=alice, workflow_name=name, encrypted_value=encrypt(secret)
        )
    client = api_for(alice)

    ok_id = generate(client, "keyed", {"prompt": "x"})
    echo_id = generate(client, "keyed-echo", {"prompt": "x"})

    ok, echo = finished(ok_id), finished(echo_id)
    assert ok.status == "completed", (ok.error_message, worker.output()[-3000:])
    assert echo.status == "failed"
    assert "HTTP 403" in echo.error_message
    calls = [r for r in api.recorded() if r.method == "POST"]
    assert [r.headers["authorization"] for r in calls] == [f"Bearer {secret}"] * 2
    recorded = [
        worker.output(),
        *(
            json.dumps([h.message, h.data])
            for h in JobHistory.objects.filter(job_id__in=[ok_id, echo_id])
        ),
        *(json.dumps([j.error_message, j.data, j.input]) for j in (ok, echo)),
        *(
            json.dumps([r.error, r.output])
            for r in NodeRun.objects.filter(job_id__in=[ok_id, echo_id])
        ),
        *(str(g.error) for g in Generation.objects.filter(job_id__in=[ok_id, echo_id])),
    ]
    assert not [text for text in recorded if secret in text]
    assert "[redacted]" in echo.error_message


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_editing_and_deleting_the_workflow_mid_run_does_not_change_the_running_job(
        api_for, alice, api, start_worker, settings):
    settings.OUTBOUND_ALLOW_HOSTS = [api.host]
    worker = start_worker(env={"API_KEY": "sk-server-key-123"})
    workflow = fetch_workflow("slow-api", polling_api(api, query="polls=15&outcome=succeeded"))
    # three generations on a worker of concurrency 2: the third starts after the deletion
    job_id = generate(api_for(alice), "slow-api", {"prompt": "a red fox"}, count=3)
    wait_for(lambda: NodeRun.objects.filter(job_id=job_id, status="running").exists(), 30)

    # staff break the workflow, then delete it, while the job runs
    Workflow.objects.filter(pk=workflow.pk).update(data={"api": {"url": "http://0.0.0.0:1/"}})
    Workflow.objects.filter(pk=workflow.pk).delete()

    job = finished(job_id)
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    assert FlatFile.objects.filter(job_id=job_id).count() == 3
    digests = set(NodeRun.objects.filter(job_id=job_id).values_list("workflow_digest", flat=True))
    assert len(digests) == 1 and None not in digests
