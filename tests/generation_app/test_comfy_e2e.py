"""A collection step naming a comfy workflow, run by real workers against a ComfyUI-protocol
server on loopback: the image, the progress in the event stream, and crash safety."""

from __future__ import annotations

import io
import time
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
def test_unreachable_server_is_retried_over_the_window_then_fails_naming_the_address(
        api_for, alice, start_worker):
    from tests.workers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    server = Server.objects.create(name="gone", url=dead)
    Workflow.objects.create(name="invert", type="comfy_workflow", output_mime_type="image/png",
                            server=server, data={"workflow": invert_graph(), "inputs": {}})
    start_worker(env={"UPSTREAM_RETRY_WINDOW_SECONDS": "3"})

    job_id = _generate(api_for(alice))

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "failed"
    assert dead.removeprefix("http://") in job.error_message
    run = NodeRun.objects.get(job_id=job_id)
    assert run.attempt >= 2 and run.retries == run.attempt - 1
    # each retry said when and why, in history (and so in the event stream)
    retrying = list(JobHistory.objects.filter(job_id=job_id, message__contains="retrying in")
                    .order_by("id").values_list("message", "data"))
    assert len(retrying) == run.retries
    assert [d["retryInSeconds"] for _m, d in retrying] == [2.0 ** i for i in range(run.retries)]
    assert all(dead.removeprefix("http://") in m for m, _d in retrying)
    failed = JobHistory.objects.get(job_id=job_id, status="failed")
    assert failed.data["failure_type"] == "UPSTREAM_ERROR"


@pytest.mark.worker
@pytest.mark.timeout(150)
def test_a_comfyui_restart_mid_run_is_survived_and_the_job_completes_once(api_for, alice,
                                                                       start_worker):
    # given a node running on a ComfyUI that goes away mid-prompt and comes back 5 s later on
    # the same address (a restart: its queue and history are gone)
    first = ComfyTestServer().start()
    port = first.port
    _workflow(first, slow=3.0)
    worker = start_worker(env={"UPSTREAM_RETRY_WINDOW_SECONDS": "60"})
    job_id = _generate(api_for(alice))
    wait_for(lambda: first.running_prompt_id is not None, 60)
    first.crash()
    try:
        wait_for(lambda: JobHistory.objects.filter(job_id=job_id,
                                                   message__contains="retrying in").exists(), 30)
    except AssertionError as exc:
        state = (list(NodeRun.objects.filter(job_id=job_id).values()),
                 list(JobHistory.objects.filter(job_id=job_id).values_list("message", flat=True)))
        raise AssertionError(f"{state}\n" + "\n".join(
            line for line in worker.output().splitlines() if "housekeeping" not in line)[-3000:]
        ) from exc
    time.sleep(5)  # the outage
    second = ComfyTestServer(port=port).start()
    try:
        # then the job completes, with one output, one file and one charge
        job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(),
                       90)
        assert job.status == "completed", job.error_message
        assert second.executions and set(second.executions.values()) == {1}
        assert FlatFile.objects.filter(job_id=job_id).count() == 1
        assert CreditsHistory.objects.filter(job_id=job_id).count() == 1
        assert JobHistory.objects.filter(job_id=job_id, status="completed").count() == 1
        run = NodeRun.objects.get(job_id=job_id)
        assert run.status == "completed" and run.retries >= 1
    finally:
        second.stop()


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_every_image_of_a_batch_is_stored_without_text_chunks(api_for, alice, comfy, worker):
    workflow = _workflow(comfy)
    workflow.data["workflow"]["1"]["inputs"]["batch_size"] = 2
    workflow.data["form"]["fields"][1]["type"] = "color_picker"
    workflow.save()
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "invert", "nodePayload": {"size": "16",
                                                                       "color": "#ff8800"}}]}
    collection = client.post("/api/projects/collections", {"title": "Batch", "data": data},
                             format="json").json()["data"]

    response = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                           format="json")

    assert response.status_code == 202, response.json()
    job_id = response.json()["data"]["jobId"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "completed", (job.error_message, worker.output()[-2000:])
    files = FlatFile.objects.filter(job_id=job_id).order_by("storage_key")
    step_id = job.input["steps"][0]["id"]  # re-numbered when the collection was saved
    prefix = f"generations/{alice.id}/{job_id}/0/{step_id}/"
    assert [f.storage_key for f in files] == [prefix + "invert.png", prefix + "invert_1.png"]
    response = job.data["outputs"][0]["steps"][0]["nodeResponse"]
    assert response["src"].endswith(prefix + "invert.png")
    assert [s["src"].split(prefix)[1] for s in response["srcs"]] == ["invert.png", "invert_1.png"]
    assert comfy.prompt_posts[0]["prompt"]["1"]["inputs"]["color"] == 0xFF8800
    for f in files:
        image = Image.open(io.BytesIO(default_storage.open(f.storage_key).read()))
        assert (image.size, image.text) == ((16, 16), {})
        assert image.convert("RGB").getpixel((0, 0)) == (0, 118, 255)
