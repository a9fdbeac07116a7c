"""p5 and p52vid steps run by a real worker on the browser queue, with real Chromium."""

from __future__ import annotations

import hashlib
import io

import imageio_ffmpeg
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from collections_app.models import FlatFile
from jobs_app.models import Job
from tests.workers import wait_for

SKETCH = """
function setup() {
  createCanvas(64, 48);
  noLoop();
}
function draw() {
  background(variables.background_color);
  noStroke();
  fill(pseudorandomInteger(0, 255), pseudorandomInteger(0, 255), pseudorandomInteger(0, 255));
  rect(8, 8, 32, 24);
}
"""


def _collection(client, steps):
    data = {"steps": steps, "variables": [
        {"name": "background_color", "type": "pick", "value_type": "strings",
         "value": {"values": ["#102030"]}}]}
    response = client.post("/api/projects/collections", {"title": "Sketch", "data": data},
                           format="json")
    assert response.status_code == 201, response.json()
    return response.json()["data"]


def _run(client, collection, hashes):
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"hashes": hashes},
                         format="json").json()["data"]["jobId"]
    return wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 120)


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(240)
def test_p5_sketch_renders_per_hash_and_reproduces_bytes(api_for, alice, worker):
    client = api_for(alice)
    collection = _collection(client, [{"id": 1, "nodeName": "p5", "nodePayload": {"code": SKETCH}}])
    hashes = ["oo" + "a" * 49, "oo" + "b" * 49, "oo" + "c" * 49]

    job = _run(client, collection, hashes)
    again = _run(client, collection, hashes[:1])

    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    digests = []
    for gid in range(3):
        f = FlatFile.objects.get(job_id=job.id, storage_key__contains=f"/{gid}/")
        content = default_storage.open(f.storage_key).read()
        image = Image.open(io.BytesIO(content))
        assert image.size == (64, 48)
        assert image.convert("RGB").getpixel((60, 44)) == (0x10, 0x20, 0x30)
        digests.append(hashlib.sha256(content).hexdigest())
    assert len(set(digests)) == 3
    repeat = FlatFile.objects.get(job_id=again.id)
    assert hashlib.sha256(default_storage.open(repeat.storage_key).read()).hexdigest() == digests[0]


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(240)
def test_p52vid_and_a_looping_sketch_fails_while_others_finish(api_for, alice, start_worker):
    worker = start_worker(env={"EMPROPS_BROWSER_TIMEOUT_S": "4", "NODE_MAX_ATTEMPTS": "1"})
    client = api_for(alice)
    video = _collection(client, [{"id": 1, "nodeName": "p52vid", "nodePayload": {
        "code": "function setup(){createCanvas(32,32)} function draw(){background(frameCount*10%255)}",
        "duration": 1}}])
    stuck = _collection(client, [{"id": 1, "nodeName": "p5", "alias": "Forever", "nodePayload": {
        "code": "function setup(){createCanvas(8,8)} function draw(){ while(true){} }"}}])

    stuck_job = _run(client, stuck, ["oo" + "d" * 49])
    video_job = _run(client, video, ["oo" + "e" * 49])

    assert stuck_job.status == "failed"
    assert stuck_job.error_message.startswith("Error in component 'Forever': Timed out")
    assert video_job.status == "completed", (video_job.error_message, worker.output()[-3000:])
    f = FlatFile.objects.get(job_id=video_job.id)
    assert f.storage_key.endswith("p52vid.mp4")
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(default_storage.path(f.storage_key))
    assert frames == 30
    assert abs(seconds - 1.0) < 0.1
    assert worker.proc.poll() is None  # the worker survived the runaway sketch


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(240)
def test_sketch_draws_an_upstream_steps_image_through_getComponentOutput(api_for, alice, worker):
    client = api_for(alice)
    upstream = "function setup(){createCanvas(16,16); noLoop()} function draw(){background(255,0,0)}"
    downstream = """
let img;
function preload(){ img = loadImage(getComponentOutput('Red')); }
function setup(){ createCanvas(16,16); noLoop(); }
function draw(){ background(0); image(img, 0, 0); }
"""
    collection = _collection(client, [
        {"id": 1, "nodeName": "p5", "alias": "Red", "nodePayload": {"code": upstream}},
        {"id": 2, "nodeName": "p5", "alias": "Copy", "nodePayload": {"code": downstream}},
    ])

    job = _run(client, collection, ["oo" + "f" * 49])

    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    copy_id = collection["data"]["steps"][1]["id"]
    f = FlatFile.objects.get(job_id=job.id, storage_key__contains=f"/{copy_id}/")
    image = Image.open(io.BytesIO(default_storage.open(f.storage_key).read())).convert("RGB")
    assert image.getpixel((8, 8)) == (255, 0, 0)
