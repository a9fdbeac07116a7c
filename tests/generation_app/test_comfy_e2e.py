"""A collection step naming a comfy workflow, run by real workers against a ComfyUI-protocol
server on loopback: the image, the progress in the event stream, and crash safety."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from collections_app.models import FlatFile
from emprops.accounts.models import CreditsHistory
from generation_app.models import NodeRun
from jobs_app.models import Job, JobEvent, JobHistory
from tests.peers.comfyui_server import ComfyTestServer, invert_graph
from tests.workers import wait_for
from workflows_app.models import Server, Workflow


@pytest.fixture
def comfy() -> Iterator[ComfyTestServer]:
    with ComfyTestServer() as server:
        yield server


def _workflow(comfy: ComfyTestServer, *, slow: float | None = None) -> Workflow:
    server = Server.objects.create(name="local-comfy", url=comfy.url)
    return Workflow.objects.create(
        name="invert", label="Invert", type="comfy_workflow", output_mime_type="image/png",
        server=server,
        data={
            "workflow": invert_graph(prefix="emprops", slow=slow),
            "inputs": {"1": {"width": {"value": "size", "is_required": True, "default": 64},
                             "height": {"value": "size", "is_required": True, "default": 64},
                             "color": {"value": "color", "is_required": False,
                                       "default": 3368601}}},
            "form": {"config": {"maxNumberOfGenerations": 4},
                     "fields": [{"id": "size", "name": "Size", "type": "slider",
                                 "constraints": {"min": 8, "max": 512}},
                                {"id": "color", "name": "Color", "type": "input"}]},
            "output_node_id": "3",
            "credits_script": "function computeCost(c){ return {cost: 2} }",
        },
    )


def _generate(client: Any, *, size: str = "32") -> str:
    data = {"steps": [{"id": 1, "nodeName": "invert", "alias": "Inverted",
                       "nodePayload": {"size": size}}]}
    collection = client.post("/api/projects/collections", {"title": "Comfy", "data": data},
                             format="json").json()["data"]
    response = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                           format="json")
    assert response.status_code == 202, response.json()
    return response.json()["data"]["jobId"]


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_comfy_step_stores_the_servers_image_and_reports_progress(api_for, alice, comfy, worker):
    _workflow(comfy, slow=1.0)

    job_id = _generate(api_for(alice))

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "completed", (job.error_message, worker.output()[-2000:])
    response = job.data["outputs"][0]["steps"][0]["nodeResponse"]
    assert response["mimeType"] == "image/png"
    key = FlatFile.objects.get(job_id=job_id).storage_key
    assert key.endswith("/invert.png")
    image = Image.open(io.BytesIO(default_storage.open(key).read()))
    assert image.size == (32, 32)
    assert image.convert("RGB").getpixel((0, 0)) == (204, 153, 101)
    progress = [e.data["progress"] for e in JobEvent.objects.filter(job_id=job_id,
                                                                   event_type="job_update")]
    assert any(0 < p < 100 for p in progress), progress
    assert progress[-1] == 100
    assert sum(comfy.executions.values()) == 1


@pytest.mark.worker
@pytest.mark.timeout(180)
def test_sigkill_mid_node_then_redelivery_runs_once_and_charges_once(api_for, alice, comfy,
                                                                   start_worker):
    _workflow(comfy, slow=4.0)
    first = start_worker()
    job_id = _generate(api_for(alice))
    wait_for(lambda: comfy.running_prompt_id is not None, 60)

    first.kill9()  # the node's request is open at the ComfyUI peer
    second = start_worker()

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 120)
    assert job.status == "completed", (job.error_message, second.output()[-2000:])
    assert sum(comfy.executions.values()) == 1  # re-attached, not re-run
    assert FlatFile.objects.filter(job_id=job_id).count() == 1
    assert JobHistory.objects.filter(job_id=job_id, message="Node invert completed").count() == 1
    assert JobHistory.objects.filter(job_id=job_id, message="Node started").count() == 1
    assert len(job.data["outputs"]) == 1
    assert CreditsHistory.objects.filter(job_id=job_id, flow="out").count() == 1
    assert sum(CreditsHistory.objects.filter(job_id=job_id).values_list("amount", flat=True)) == 2
    assert NodeRun.objects.get(job_id=job_id).attempt == 2


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_unreachable_server_is_retried_then_fails_naming_the_address(api_for, alice, start_worker,
                                                                    settings):
    from tests.workers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    server = Server.objects.create(name="gone", url=dead)
    Workflow.objects.create(name="invert", type="comfy_workflow", output_mime_type="image/png",
                            server=server, data={"workflow": invert_graph(), "inputs": {}})
    start_worker(env={"NODE_MAX_ATTEMPTS": "2"})

    job_id = _generate(api_for(alice))

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "failed"
    assert dead.removeprefix("http://") in job.error_message
    assert NodeRun.objects.get(job_id=job_id).attempt == 2
    failed = JobHistory.objects.get(job_id=job_id, status="failed")
    assert failed.data["failure_type"] == "UPSTREAM_ERROR"
