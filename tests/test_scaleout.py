"""Scale-out (README: Running on more machines): two worker "machines" and one web process on
shared PostgreSQL, Redis and S3, the work spread over both and nothing run twice.

Slow and process-heavy, so it runs only with SCALEOUT=1 (`make scaleout`). Each machine has its
own var folder, HOME, TMPDIR and MEDIA_ROOT (nothing shared on disk), its own Chromium (only the
browser machine starts one) and its own queues: machine A `engine,io` (with the beat),
machine B `engine,browser`. They share only what production shares: DATABASE_URL, REDIS_URL,
SECRET_KEY and the bucket (moto's S3-compatible server on loopback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

pytestmark = [
    pytest.mark.skipif(os.environ.get("SCALEOUT") != "1", reason="SCALEOUT=1 (make scaleout)"),
    pytest.mark.worker, pytest.mark.server, pytest.mark.browser, pytest.mark.timeout(300),
]

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
SKETCH = """
function setup() { createCanvas(32, 24); noLoop(); }
function draw() { background(pseudorandomInteger(0, 255), 40, 90); }
"""
GENERATIONS = 6


class Machine:
    """A Celery worker as another host would run it: its own folders, the shared services' env."""

    def __init__(self, root: Path, name: str, queues: str, env: dict[str, str], *,
                 beat: bool = False) -> None:
        self.name, self.queues, self.beat = name, queues, beat
        self.dir = root / name
        for sub in ("var", "home", "tmp", "media", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "run").chmod(0o700)
        self.env = {**env, "EMPROPS_VAR_DIR": str(self.dir / "var"), "HOME": str(self.dir / "home"),
                    "TMPDIR": str(self.dir / "tmp"), "MEDIA_ROOT": str(self.dir / "media"),
                    "XDG_RUNTIME_DIR": str(self.dir / "run")}
        self.log = self.dir / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@scaleout"

    def start(self) -> Machine:
        argv = [sys.executable, "-m", "celery", "-A", "emprops", "worker", "-Q", self.queues,
                "-c", "2", "-n", self.hostname, "--without-gossip", "--without-mingle",
                "--loglevel", "INFO"]
        if self.beat:  # one beat for the deployment, on this machine
            argv += ["-B", "--scheduler", "celery.beat:PersistentScheduler",
                     "-s", str(self.dir / "var" / "beat")]
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while " ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_STORAGE_BUCKET_NAME": f"emprops-{uuid.uuid4().hex[:10]}",
           "AWS_S3_ENDPOINT_URL": f"http://{host}:{port}", "AWS_S3_REGION_NAME": REGION,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=env["AWS_S3_ENDPOINT_URL"], region_name=REGION).create_bucket(
        Bucket=env["AWS_STORAGE_BUCKET_NAME"])
    yield env
    server.stop()


def test_two_worker_machines_share_the_work_and_run_nothing_twice(
        transactional_db: Any, purge_broker: None, alice: Any, bucket: dict[str, str],
        tmp_path: Path, settings: Any) -> None:
    from collections_app.models import FlatFile
    from emprops.accounts.services import api_key_create, credits_grant
    from generation_app.models import NodeRun
    from jobs_app.models import Job
    from tests.peers.comfyui_server import ComfyTestServer, invert_graph
    from tests.workers import WebProcess, test_env, wait_for
    from workflows_app.models import Server, Workflow

    # given: a ComfyUI peer, a workflow on it, and alice with credits and a key
    comfy = ComfyTestServer().start()
    server = Server.objects.create(name="scaleout-comfy", url=comfy.url)
    Workflow.objects.create(
        name="invert", label="Invert", type="comfy_workflow", output_mime_type="image/png",
        server=server, data={
            "workflow": invert_graph(prefix="scaleout", slow=0.5),
            "inputs": {"1": {"width": {"value": "size", "default": 16},
                             "height": {"value": "size", "default": 16}},
                       "4": {"seed": {"value": "seed", "default": 0}}},
            "form": {"config": {"maxNumberOfGenerations": GENERATIONS},
                     "fields": [{"id": "size", "name": "Size", "type": "slider"}]},
            "output_node_id": "3"})
    credits_grant(user=alice, amount=100, credit_type="permanent")
    _, key = api_key_create(user=alice, name="scaleout")
    shared = test_env(**bucket, SECRET_KEY=settings.SECRET_KEY,
                      OUTBOUND_ALLOW_HOSTS="127.0.0.1")
    # a short root: Chromium's singleton socket lives under TMPDIR and a Unix socket path is
    # limited to 107 bytes
    roots = tempfile.TemporaryDirectory(prefix="so-")
    machines = [Machine(Path(roots.name), "machine-a", "engine,io", shared, beat=True),
                Machine(Path(roots.name), "machine-b", "engine,browser", shared)]
    web = WebProcess(tmp_path, env={**bucket, "SECRET_KEY": settings.SECRET_KEY,
                                    "EMPROPS_VAR_DIR": str(tmp_path / "web")})
    try:
        for machine in machines:
            machine.start()
        web.start()
        client = httpx.Client(base_url=web.url, headers={"X-API-Key": key}, timeout=30)
        data = {"steps": [
            {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a harbour"}},
            {"id": 2, "nodeName": "p5", "nodePayload": {"code": SKETCH}},
            {"id": 3, "nodeName": "invert", "nodePayload": {"size": "16"}},
        ]}
        collection = client.post("/api/projects/collections",
                                 json={"title": "Spread", "data": data}).json()["data"]

        # when: one job of 6 generations goes through the web process
        response = client.post(f"/api/collections/{collection['id']}/generations",
                               json={"count": GENERATIONS})
        assert response.status_code == 202, response.text
        job_id = response.json()["data"]["jobId"]
        job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(),
                       240)

        # then: it completed, each queue's runs on the machine that serves it, both machines
        # worked, every run ran once, and the outputs are in the bucket only
        assert job.status == "completed", (job.error_message, [m.log.read_text()[-2000:]
                                                               for m in machines])
        runs = list(NodeRun.objects.filter(job_id=job_id).values("node_name", "worker",
                                                                 "attempt", "status"))
        a, b = (m.hostname for m in machines)
        by_node: dict[str, set[str]] = {}
        for run in runs:
            by_node.setdefault(run["node_name"], set()).add(run["worker"])
        assert len(runs) == 3 * GENERATIONS
        assert {(r["status"], r["attempt"]) for r in runs} == {("completed", 1)}
        assert by_node["p5"] == {b}
        assert by_node["invert"] == {a}
        assert by_node["prompt"] <= {a, b}
        assert {r["worker"] for r in runs} == {a, b}
        assert sorted(comfy.executions.values()) == [1] * GENERATIONS
        s3 = boto3.client("s3", endpoint_url=bucket["AWS_S3_ENDPOINT_URL"], region_name=REGION)
        listing = s3.list_objects_v2(Bucket=bucket["AWS_STORAGE_BUCKET_NAME"],
                                     Prefix=f"generations/{alice.id}/{job_id}/")
        stored = sorted(o["Key"] for o in listing.get("Contents", []))
        keys = sorted(FlatFile.objects.filter(job_id=job_id).values_list("storage_key",
                                                                         flat=True))
        assert stored == keys and len(keys) == 3 * GENERATIONS
        assert [p for m in machines for p in (m.dir / "media").rglob("*") if p.is_file()] == []
        srcs = [s["nodeResponse"]["src"] for o in job.data["outputs"] for s in o["steps"]
                if s["nodeName"] != "prompt"]
        assert len(srcs) == 2 * GENERATIONS
        assert all(src.startswith(bucket["AWS_S3_ENDPOINT_URL"]) for src in srcs)
        print(f"\nnode runs per machine: { {w: sum(r['worker'] == w for r in runs) for w in (a, b)} }"
              f"; by node: { {n: sorted(ws) for n, ws in by_node.items()} }")
    finally:
        web.stop()
        for machine in machines:
            machine.stop()
        comfy.stop()
        roots.cleanup()
