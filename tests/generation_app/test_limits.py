"""Limits with real workers: the per-user running cap, the maximum job run time and a queue
that nobody consumes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from generation_app.models import Generation
from jobs_app.models import Job, JobHistory
from tests.peers.comfyui_server import ComfyTestServer, invert_graph
from tests.workers import wait_for
from workflows_app.models import Server, Workflow


@pytest.fixture
def comfy() -> Iterator[ComfyTestServer]:
    with ComfyTestServer() as server:
        yield server


def _slow_collection(client, comfy, seconds):
    server = Server.objects.create(name="c", url=comfy.url)
    Workflow.objects.create(name="slow", type="comfy_workflow", output_mime_type="image/png",
                            server=server,
                            data={"workflow": invert_graph(slow=seconds), "inputs": {}})
    data = {"steps": [{"id": 1, "nodeName": "slow", "nodePayload": {}}]}
    return client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_generations_over_the_users_cap_wait_their_turn(api_for, alice, comfy, start_worker,
                                                        settings):
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 1
    start_worker(concurrency=2)
    client = api_for(alice)
    collection = _slow_collection(client, comfy, 1.0)

    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]
    wait_for(lambda: comfy.running_prompt_id is not None, 60)
    statuses = sorted(Generation.objects.filter(job_id=job_id).values_list("status", flat=True))

    assert statuses == ["processing", "waiting"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "completed"
    assert len(comfy.executed_prompt_ids) == 2


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_job_over_the_maximum_run_time_fails_with_timeout(api_for, alice, comfy, start_worker):
    start_worker(env={"MAX_JOB_RUN_SECONDS": "2"})
    client = api_for(alice)
    collection = _slow_collection(client, comfy, 8.0)

    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                         format="json").json()["data"]["jobId"]

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 60)
    assert job.status == "failed"
    assert "ran longer than 2 s" in job.error_message
    assert JobHistory.objects.get(job_id=job_id, status="failed").data["failure_type"] == "TIMEOUT"


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_queue_without_consumer_fails_naming_the_queue(api_for, alice, start_worker):
    start_worker(queues="engine", env={"NO_CONSUMER_FAIL_SECONDS": "2"})
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "p5", "nodePayload": {"code": "function setup(){}"}}]}
    collection = client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]

    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                         format="json").json()["data"]["jobId"]

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 60)
    assert job.status == "failed"
    assert "No worker consumes the queue 'browser'" in job.error_message
