"""Cancel and retry through the API, with a real worker and a ComfyUI peer holding work open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emprops.accounts.models import CreditsBalance, CreditsHold
from jobs_app.models import Generation, Job, JobHistory, NodeRun
from tests.peers.comfyui_server import ComfyTestServer, invert_graph
from tests.workers import wait_for
from workflows_app.models import Server, Workflow


@pytest.fixture
def comfy() -> Iterator[ComfyTestServer]:
    with ComfyTestServer() as server:
        yield server


def _slow_collection(client, comfy, *, fail_gid_hash=None):
    server = Server.objects.create(name="c", url=comfy.url)
    Workflow.objects.create(name="slow", type="comfy_workflow", output_mime_type="image/png",
                            server=server, data={"workflow": invert_graph(slow=5.0), "inputs": {}})
    data = {"steps": [{"id": 1, "nodeName": "slow", "nodePayload": {}}]}
    return client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_cancel_stops_running_work_and_releases_credits(api_for, alice, comfy, worker):
    client = api_for(alice)
    collection = _slow_collection(client, comfy)
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]
    wait_for(lambda: comfy.running_prompt_id is not None, 60)

    cancelled = client.post(f"/api/jobs/{job_id}/cancel")
    again = client.post(f"/api/jobs/{job_id}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["status"] == "cancelled"
    assert again.status_code == 409
    # the running node notices (lease heartbeat) and asks ComfyUI to stop that prompt only
    wait_for(lambda: comfy.interrupt_requests, 30)
    assert all(r is not None for r in comfy.interrupt_requests)
    assert set(NodeRun.objects.filter(job_id=job_id).values_list("status", flat=True)) == {"cancelled"}
    assert JobHistory.objects.filter(job_id=job_id, message="Job cancelled").count() == 1
    assert CreditsHold.objects.get(job_id=job_id).status == "released"
    assert CreditsBalance.objects.get(user=alice, credit_type="permanent").balance == 10
    assert Job.objects.get(pk=job_id).status == "cancelled"


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_retry_reruns_only_failed_generations(api_for, alice, worker, settings):
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "prompt", "alias": "P",
                       "nodePayload": {"prompt": "hi", "x": {"$ref": 953, "path": ".data.v"}}}],
            "variables": [{"name": "v", "type": "pick", "value_type": "strings",
                           "value": {"values": ["a"]}}]}
    collection = client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 60)
    assert job.status == "completed"
    nothing = client.post(f"/api/jobs/{job_id}/retry")
    # make generation 1 fail as a step would, then retry it
    Generation.objects.filter(job_id=job_id, gid=1).update(status="failed", error="boom")
    NodeRun.objects.filter(job_id=job_id, gid=1).update(status="failed")
    Job.objects.filter(pk=job_id).update(status="failed")

    retried = client.post(f"/api/jobs/{job_id}/retry")

    assert nothing.status_code == 409
    assert retried.status_code == 200
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 60)
    assert job.status == "completed", (job.error_message, list(Generation.objects.filter(job_id=job_id).values()), list(NodeRun.objects.filter(job_id=job_id).values("gid", "status", "attempt", "error")))
    assert job.retry_count == 1
    assert JobHistory.objects.filter(job_id=job_id, message="Retry attempt 1").count() == 1
    starts = JobHistory.objects.filter(job_id=job_id, message="Node started")
    assert sorted(h.data["gid"] for h in starts) == [0, 1, 1]


@pytest.mark.django_db
def test_bob_cannot_cancel_alices_job(api_for, alice, bob):
    job = Job.objects.create(user=alice, name="x", status=Job.Status.PROCESSING)

    response = api_for(bob).post(f"/api/jobs/{job.id}/cancel")

    assert response.status_code == 404
    job.refresh_from_db()
    assert job.status == Job.Status.PROCESSING
    assert not job.history.filter(message="Job cancelled").exists()
