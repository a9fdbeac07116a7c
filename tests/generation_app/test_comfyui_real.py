"""The comfy_workflow node against the REAL ComfyUI (0.3.64, CPU, model-free core nodes), run by a
real Celery worker. Opt-in: `COMFYUI_REAL=1`; skipped otherwise.

The server is started once for the module with `shared/peers/comfyui/start.sh` (override with
COMFYUI_START; its folder with COMFYUI_DIR, default var/peers/comfyui) on a free loopback port.
A warm install starts in 10-40 s; the first start installs torch (~4 GB, minutes).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from collections_app.models import FlatFile
from jobs_app.models import Job
from tests.workers import free_port, wait_for
from workflows_app.models import Server, Workflow

pytestmark = [
    pytest.mark.skipif(os.environ.get("COMFYUI_REAL") != "1",
                       reason="the real ComfyUI runs only with COMFYUI_REAL=1"),
    pytest.mark.timeout(600),
]

ROOT = Path(__file__).resolve().parents[2]
COMFY_DIR = Path(os.environ.get("COMFYUI_DIR", ROOT / "var" / "peers" / "comfyui"))
START = Path(os.environ.get("COMFYUI_START",
                            ROOT.parent / "shared" / "peers" / "comfyui" / "start.sh"))


class RealComfy:
    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self.pid = pid
        self.output_dir = COMFY_DIR / "src" / "output"
        # each test's files carry its own prefix: the install is shared, its output folder too
        self.prefixes: list[str] = []

    def prefix(self) -> str:
        prefix = f"emprops_test_{uuid.uuid4().hex[:12]}"
        self.prefixes.append(prefix)
        return prefix

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def running_prompt_ids(self) -> list[str]:
        return [str(item[1]) for item in self.get("/queue")["queue_running"]]

    def remove_outputs(self) -> None:
        for prefix in self.prefixes:
            for path in self.output_dir.glob(f"{prefix}_*"):
                path.unlink()


@pytest.fixture(scope="module")
def real_comfy() -> Iterator[RealComfy]:
    port = free_port()
    started = subprocess.run(["bash", str(START), str(COMFY_DIR), str(port)], capture_output=True,
                             text=True, timeout=1800, check=False)
    match = re.search(r"ComfyUI PID (\d+) on (\S+)", started.stdout)
    assert started.returncode == 0 and match, started.stdout + started.stderr
    comfy = RealComfy(match.group(2), int(match.group(1)))
    yield comfy
    comfy.remove_outputs()
    _stop(comfy.pid)


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _workflow(comfy: RealComfy, graph: dict[str, Any]) -> Workflow:
    server = Server.objects.create(name="real-comfy", url=comfy.url)
    return Workflow.objects.create(
        name="real-invert", label="Real invert", type="comfy_workflow",
        output_mime_type="image/png", server=server,
        data={"workflow": graph,
              "inputs": {"1": {"color": {"value": "color", "default": "#000000"}}},
              "form": {"fields": [{"id": "color", "name": "Color", "type": "color_picker"}]},
              "output_node_id": "3",
              "credits_script": "function computeCost(c){ return {cost: 1} }"})


def _generate(client: Any, payload: dict[str, Any]) -> str:
    data = {"steps": [{"id": 1, "nodeName": "real-invert", "nodePayload": payload}]}
    collection = client.post("/api/projects/collections", {"title": "Real", "data": data},
                             format="json").json()["data"]
    response = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                           format="json")
    assert response.status_code == 202, response.json()
    return str(response.json()["data"]["jobId"])


def _finished(job_id: str, timeout: float) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(),
                    timeout)


def test_a_batch_runs_on_real_comfyui_every_image_stored_without_text(api_for, alice, real_comfy,
                                                                       worker):
    prefix = real_comfy.prefix()
    _workflow(real_comfy, {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    })

    job_id = _generate(api_for(alice), {"color": "#ff8800"})

    job = _finished(job_id, 300)
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    response = job.data["outputs"][0]["steps"][0]["nodeResponse"]
    # ComfyUI ran the graph with the color picker's hex as EmptyImage's INT color
    history = real_comfy.get(f"/history/{response['comfy']['prompt_id']}")
    [entry] = history.values()
    assert entry["prompt"][2]["1"]["inputs"]["color"] == 0xFF8800 == 16746496
    step_id = job.input["steps"][0]["id"]
    base = f"generations/{alice.id}/{job_id}/0/{step_id}/"
    files = list(FlatFile.objects.filter(job_id=job_id).order_by("storage_key"))
    assert [f.storage_key for f in files] == [base + "real-invert.png", base + "real-invert_1.png"]
    assert response["src"].endswith(base + "real-invert.png")
    for i, flat in enumerate(files):
        served = Image.open(real_comfy.output_dir / f"{prefix}_{i + 1:05}_.png")
        assert set(served.text) == {"prompt"}  # ComfyUI wrote the whole graph into its PNG
        stored = Image.open(io.BytesIO(default_storage.open(flat.storage_key).read()))
        assert stored.text == {}
        assert stored.size == (64, 64)
        assert list(stored.getdata()) == list(served.getdata())
        # inverted 0xff8800: 255 - 0x88 = 119, truncated from float to 118 by SaveImage
        assert stored.convert("RGB").getpixel((0, 0)) == (0, 118, 255)


def test_a_job_interrupted_on_comfyui_fails_and_a_user_retry_completes(api_for, alice, real_comfy,
                                                                       worker):
    # slow enough to interrupt (a 31-px blur of two 1024-px images takes seconds on this CPU),
    # fast enough to run once more for the retry
    prefix = real_comfy.prefix()
    _workflow(real_comfy, {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 1024, "height": 1024, "batch_size": 2, "color": 0}},
        "2": {"class_type": "ImageBlur",
              "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 5.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    })
    client = api_for(alice)
    job_id = _generate(client, {"color": "#336699"})

    # ComfyUI clears its interrupt flag as a prompt starts executing, a moment after the prompt
    # shows as running: interrupt (only our prompt) until it stops, bounded in count and time
    interrupted: set[str] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not Job.objects.filter(
            pk=job_id, status__in=Job.FINISHED).exists():
        for prompt_id in real_comfy.running_prompt_ids():
            httpx.post(real_comfy.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=10)
            interrupted.add(prompt_id)
        time.sleep(0.1)
    job = _finished(job_id, 10)
    assert job.status == "failed", (job.status, worker.output()[-3000:])
    [first_prompt] = interrupted
    assert f"ComfyUI interrupted prompt {first_prompt} at node " in job.error_message
    assert not FlatFile.objects.filter(job_id=job_id).exists()

    response = client.post(f"/api/jobs/{job_id}/retry")

    assert response.status_code == 200, response.json()
    job = _finished(job_id, 300)  # the retry made the job processing again before answering
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    retried = job.data["outputs"][0]["steps"][0]["nodeResponse"]["comfy"]["prompt_id"]
    assert retried != first_prompt  # submitted afresh, not re-attached to the interrupted one
    statuses = {pid: real_comfy.get(f"/history/{pid}")[pid]["status"]["status_str"]
                for pid in (first_prompt, retried)}
    assert statuses == {first_prompt: "error", retried: "success"}
    assert FlatFile.objects.filter(job_id=job_id).count() == 2


def _slow_graph(prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 1024, "height": 1024, "batch_size": 2, "color": 0}},
        "2": {"class_type": "ImageBlur",
              "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 5.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def test_a_cancel_deletes_the_queued_prompt_before_it_starts_and_interrupts_the_running_one(
        api_for, alice, real_comfy, worker):
    # given two generations: one prompt running on ComfyUI, the other waiting in its queue
    _workflow(real_comfy, _slow_graph(real_comfy.prefix()))
    client = api_for(alice)
    data = {"steps": [{"id": 1, "nodeName": "real-invert", "nodePayload": {"color": "#123456"}}]}
    collection = client.post("/api/projects/collections", {"title": "Real", "data": data},
                             format="json").json()["data"]
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]

    def queue() -> tuple[list[str], list[str]]:
        q = real_comfy.get("/queue")
        return ([str(i[1]) for i in q["queue_running"]], [str(i[1]) for i in q["queue_pending"]])

    wait_for(lambda: [len(part) for part in queue()] == [1, 1], 120)
    [running], [queued] = queue()

    # when the user cancels
    response = client.post(f"/api/jobs/{job_id}/cancel")

    # then the queued prompt leaves ComfyUI's queue without ever running (no history entry: a
    # prompt that started has one, even when interrupted), and the running one is interrupted
    assert response.status_code == 200
    wait_for(lambda: queue() == ([], []), 60)
    assert real_comfy.get(f"/history/{queued}") == {}
    entry = real_comfy.get(f"/history/{running}")[running]
    assert entry["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    assert Job.objects.get(pk=job_id).status == "cancelled"
    assert not FlatFile.objects.filter(job_id=job_id).exists()


def test_a_comfyui_killed_mid_run_and_back_after_60_s_leaves_the_job_completed_once(
        api_for, alice, real_comfy, start_worker):
    # given a prompt running on ComfyUI (last in this module: it restarts the shared server)
    from emprops.accounts.models import CreditsHistory
    from jobs_app.models import JobHistory

    prefix = real_comfy.prefix()
    _workflow(real_comfy, _slow_graph(prefix))
    # the default retry window (15 min); backoff capped at 10 s so the test notices the return
    worker = start_worker(env={"UPSTREAM_RETRY_MAX_BACKOFF_SECONDS": "10"})
    job_id = _generate(api_for(alice), {"color": "#336699"})
    wait_for(lambda: real_comfy.running_prompt_ids(), 120)

    # when ComfyUI is killed mid-prompt and comes back 60 s later on the same address
    os.kill(real_comfy.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: JobHistory.objects.filter(job_id=job_id,
                                               message__contains="retrying in").exists(), 60)
    time.sleep(max(0.0, 60 - (time.monotonic() - killed_at)))
    port = int(real_comfy.url.rsplit(":", 1)[1])
    started = subprocess.run(["bash", str(START), str(COMFY_DIR), str(port)],
                             capture_output=True, text=True, timeout=600, check=False)
    match = re.search(r"ComfyUI PID (\d+) on (\S+)", started.stdout)
    assert started.returncode == 0 and match, started.stdout + started.stderr
    real_comfy.pid = int(match.group(1))

    # then the job completes once: one set of files, one charge, one completion
    job = _finished(job_id, 400)
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    assert FlatFile.objects.filter(job_id=job_id).count() == 2
    assert CreditsHistory.objects.filter(job_id=job_id, flow="out").count() == 1
    assert JobHistory.objects.filter(job_id=job_id, status="completed").count() == 1
    retries = list(JobHistory.objects.filter(job_id=job_id, message__contains="retrying in")
                   .values_list("message", flat=True))
    assert retries and all("ComfyUI" in m or "127.0.0.1" in m for m in retries)
