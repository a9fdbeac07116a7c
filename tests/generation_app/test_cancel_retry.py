"""Cancel and retry through the API, with a real worker and a ComfyUI peer holding work open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emprops.accounts.models import CreditsBalance, CreditsHold
from generation_app.models import Generation, NodeRun
from jobs_app.models import Job, JobHistory
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
                            # long enough that both prompts are at the peer together even on a
                            # loaded machine (the cancel interrupts the running one)
                            server=server, data={"workflow": invert_graph(slow=30.0), "inputs": {}})
    data = {"steps": [{"id": 1, "nodeName": "slow", "nodePayload": {}}]}
    return client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_cancel_stops_running_work_and_releases_credits(api_for, alice, comfy, worker):
    client = api_for(alice)
    collection = _slow_collection(client, comfy)
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]
    # one prompt runs and the other waits in ComfyUI's queue (it runs one prompt at a time)
    wait_for(lambda: comfy.running_prompt_id is not None and len(comfy.pending_prompt_ids()) == 1,
             90)
    running, queued = comfy.running_prompt_id, comfy.pending_prompt_ids()[0]

    cancelled = client.post(f"/api/jobs/{job_id}/cancel")
    again = client.post(f"/api/jobs/{job_id}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["status"] == "cancelled"
    assert again.status_code == 409
    # the cancel is pushed to both nodes: the queued prompt is deleted from ComfyUI's queue, the
    # running one interrupted (by its id: never a bare interrupt)
    wait_for(lambda: any(queued in (r or {}).get("delete", ()) for r in comfy.queue_requests)
             and running in comfy.interrupted_prompt_ids, 30)
    # the prompt that still ran when the cancel landed finished interrupted, and the one queued
    # behind it never started: the delete reached ComfyUI before its turn came
    wait_for(lambda: comfy.running_prompt_id is None, 30)
    assert queued not in comfy.executed_prompt_ids
    assert comfy.pending_prompt_ids() == []
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


def _failed_job_of_a_workflow(client, *, cost: int) -> tuple[str, Workflow]:
    server = Server.objects.create(name="gpu-1", url="http://127.0.0.1:9")
    workflow = Workflow.objects.create(
        name="paint", type="comfy_workflow", output_mime_type="image/png", server=server,
        data={"workflow": invert_graph(), "inputs": {},
              "credits_script": f"function computeCost() {{ return {cost}; }}"})
    data = {"steps": [{"id": 1, "nodeName": "paint", "nodePayload": {}}]}
    collection = client.post("/api/projects/collections", {"data": data},
                             format="json").json()["data"]
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]
    # generation 1 failed, generation 0 completed and was charged
    from emprops.accounts.services import credits_charge_generation

    credits_charge_generation(job_id=job_id, gid=0, comment="gen 0")
    Generation.objects.filter(job_id=job_id, gid=0).update(status="completed")
    NodeRun.objects.filter(job_id=job_id, gid=0).update(status="completed")
    Generation.objects.filter(job_id=job_id, gid=1).update(status="failed", error="boom")
    NodeRun.objects.filter(job_id=job_id, gid=1).update(status="failed")
    Job.objects.filter(pk=job_id).update(status="failed")
    return job_id, workflow


@pytest.mark.django_db
def test_a_retry_runs_the_frozen_plan_unless_asked_to_refresh_the_workflows(api_for, alice):
    client = api_for(alice)
    job_id, workflow = _failed_job_of_a_workflow(client, cost=2)
    planned = NodeRun.objects.get(job_id=job_id, gid=1).workflow_digest
    # staff change the workflow after the job was planned
    workflow.data = {**workflow.data, "credits_script": "function computeCost() { return 3; }"}
    workflow.save()

    frozen = client.post(f"/api/jobs/{job_id}/retry")
    assert frozen.status_code == 200
    assert NodeRun.objects.get(job_id=job_id, gid=1).workflow_digest == planned
    assert CreditsHold.objects.get(job_id=job_id).per_generation == 2
    # fail it again, then retry against the workflows as they are now
    Generation.objects.filter(job_id=job_id, gid=1).update(status="failed", error="boom")
    NodeRun.objects.filter(job_id=job_id, gid=1).update(status="failed")
    Job.objects.filter(pk=job_id).update(status="failed")

    refreshed = client.post(f"/api/jobs/{job_id}/retry", {"refresh_workflows": True},
                            format="json")

    assert refreshed.status_code == 200
    run = NodeRun.objects.get(job_id=job_id, gid=1)
    assert run.workflow_digest != planned and run.status == "blocked"
    assert NodeRun.objects.get(job_id=job_id, gid=0).workflow_digest == planned
    hold = CreditsHold.objects.get(job_id=job_id)
    assert hold.per_generation == 3
    retry = JobHistory.objects.get(job_id=job_id, message="Retry attempt 2")
    assert retry.data["refresh_workflows"] is True
    assert retry.data["quote"]["per_generation"] == 3.0


@pytest.mark.django_db
def test_a_refreshing_retry_of_a_deleted_workflow_is_422_and_changes_nothing(api_for, alice):
    client = api_for(alice)
    job_id, workflow = _failed_job_of_a_workflow(client, cost=2)
    workflow.delete()
    before = list(NodeRun.objects.filter(job_id=job_id).order_by("gid").values())
    hold_before = CreditsHold.objects.filter(job_id=job_id).values().get()

    response = client.post(f"/api/jobs/{job_id}/retry", {"refresh_workflows": True},
                           format="json")

    assert response.status_code == 422
    assert "no longer exists" in response.json()["error"]
    assert list(NodeRun.objects.filter(job_id=job_id).order_by("gid").values()) == before
    assert CreditsHold.objects.filter(job_id=job_id).values().get() == hold_before
    assert Job.objects.get(pk=job_id).status == "failed"
