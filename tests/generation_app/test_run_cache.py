"""Content-addressed node runs, itemised costs and replays with a verdict, in-process.

The runner is driven here, as in test_runner.py: `node_run_execute` for every queued run until
none is left. Prompt steps run in memory; the p5 tests (marked `browser`) render one 64 px
sketch in this process's own Chromium.
"""

from __future__ import annotations

import copy
import io
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image

from collections_app.models import FlatFile
from emprops import storage
from emprops.accounts.models import CreditsHistory, CreditsHold
from emprops.accounts.services import credits_grant
from generation_app.models import NodeRun, WebhookDelivery
from generation_app.services import webhooks
from generation_app.services.replay import (
    EQUIVALENT_MAX_DIFF,
    _compare,
    generation_replay,
)
from generation_app.services.requests import job_create_from_input, job_input_prepare
from generation_app.services.running import node_run_execute
from jobs_app.models import Job, JobHistory

pytestmark = pytest.mark.django_db

HASHES = ["0xaaa1", "0xbbb2"]
PROMPTS = [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a quiet harbour"}},
           {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "an etching of #1"}},
           {"id": 3, "nodeName": "prompt", "nodePayload": {"prompt": "a lighthouse"}}]
# reads the clock and Math.random: both are the page's virtual, hash-seeded ones
SKETCH = """
function setup() { createCanvas(64, 64); noLoop(); }
function draw() {
  background(Math.floor(Math.random() * 255), Date.now() % 251, 90);
  noStroke(); fill(255); circle(32, 32, 10 + Math.random() * 40);
}
"""
# reads the one source of randomness the page cannot seed
UNSEEDED_SKETCH = """
function setup() { createCanvas(64, 64); noLoop(); }
function draw() {
  const r = new Uint8Array(3); crypto.getRandomValues(r); background(r[0], r[1], r[2]);
}
"""


@pytest.fixture(autouse=True)
def _room(settings: Any, alice: Any, bob: Any) -> None:
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 50
    for user in (alice, bob):
        credits_grant(user=user, amount=Decimal(100), credit_type="permanent")


def _input(steps: list[dict[str, Any]], hashes: list[str]) -> dict[str, Any]:
    return {"version": "v2", "steps": copy.deepcopy(steps), "variables": [],
            "generations": {"hashes": hashes, "generations": len(hashes),
                            "use_custom_hashes": True}}


def _submit(user: Any, steps: list[dict[str, Any]], hashes: list[str] = HASHES,
            **kwargs: Any) -> Job:
    job_input = job_input_prepare(user=user, data=_input(steps, hashes), hashes=hashes)
    return job_create_from_input(user=user, collection_id=None, job_input=job_input,
                                 name="cache test", **kwargs)


def _drain(job: Job) -> Job:
    """Run every queued run of the job (and the inline runs each makes ready) until none is left."""
    while ids := list(NodeRun.objects.filter(job=job, status=NodeRun.Status.QUEUED)
                      .order_by("id").values_list("id", flat=True)):
        for run_id in ids:
            pending = [run_id]
            while pending:
                pending.extend(node_run_execute(run_id=pending.pop(0), worker="test"))
    job.refresh_from_db()
    return job


def _runs(job: Job) -> list[NodeRun]:
    return list(NodeRun.objects.filter(job=job).order_by("gid", "step_id"))


def _bytes(run: NodeRun) -> dict[str, bytes]:
    return {name: storage.read(meta["key"]) for name, meta in (run.output_files or {}).items()}


def _charges(job: Job) -> list[tuple[int | None, Decimal]]:
    return list(CreditsHistory.objects.filter(job_id=job.id, flow="out").order_by("gid", "id")
                .values_list("gid", "amount"))


def _reasons(job: Job) -> list[list[tuple[int, str, float]]]:
    return [[(s["stepId"], s["reason"], s["charged"]) for s in g["steps"]]
            for g in job.data["cost"]["generations"]]


# ---- cached node runs -----------------------------------------------------------------------------

def test_the_same_prompts_again_are_served_from_the_cache_free_and_say_so(alice):
    # given a completed job of three prompt steps over two hashes, charged 3 per generation
    first = _drain(_submit(alice, PROMPTS))
    assert first.status == Job.Status.COMPLETED
    assert _charges(first) == [(0, Decimal(3)), (1, Decimal(3))]

    # when the same input is generated again with the same hashes
    second = _drain(_submit(alice, PROMPTS))

    # then every step reused the first job's run: same bytes at its own keys, no charge
    assert second.status == Job.Status.COMPLETED
    for old, new in zip(_runs(first), _runs(second), strict=True):
        assert new.cached_from_id == old.id
        assert new.cache_key == old.cache_key
        assert _bytes(new) == _bytes(old)
        assert new.output_files["prompt.txt"]["key"] == \
            f"generations/{alice.id}/{second.id}/{new.gid}/{new.step_id}/prompt.txt"
        assert new.output["cached"] is True
        assert new.output["cachedFrom"] == {"nodeRunId": old.id, "jobId": str(first.id),
                                            "gid": old.gid, "stepId": old.step_id}
    assert _charges(second) == []
    assert CreditsHold.objects.get(job_id=second.id).spent == Decimal(0)
    assert second.data["cost"]["charged"] == 0
    assert second.data["cost"]["quoted"] == 6
    assert _reasons(second) == [[(1, "cached", 0.0), (2, "cached", 0.0), (3, "cached", 0.0)]] * 2
    assert all(o["cost"]["charged"] == 0 for o in second.data["outputs"])
    # history (and the event each row carries) says where each output came from
    done = JobHistory.objects.filter(job=second, message__startswith="Node prompt completed")
    assert sorted(m for m in done.values_list("message", flat=True)) == \
        [f"Node prompt completed from cache (job {first.id})"] * 6
    assert all(d["cached"] is True for d in done.values_list("data", flat=True))
    # one flat_file row per generation and step, at the second job's own keys
    assert FlatFile.objects.filter(job_id=second.id).count() == 6


def test_deleting_the_source_jobs_files_leaves_the_cached_copies(alice):
    # given a second job served from the first one's cache
    first = _drain(_submit(alice, PROMPTS[:1], hashes=["0x1"]))
    second = _drain(_submit(alice, PROMPTS[:1], hashes=["0x1"]))
    source, copy_ = _runs(first)[0], _runs(second)[0]
    assert copy_.cached_from_id == source.id

    # when the first job's file is deleted (retention)
    storage.delete(source.output_files["prompt.txt"]["key"])

    # then the second job's copy is still there, and a third run, finding the newest
    # intact source, is served from the second job
    assert _bytes(copy_) == {"prompt.txt": b"a quiet harbour"}
    third = _drain(_submit(alice, PROMPTS[:1], hashes=["0x1"]))
    assert _runs(third)[0].cached_from_id == copy_.id


def test_changing_one_steps_payload_reruns_only_that_step_and_its_dependents(alice):
    # given a completed job: step 2 mentions step 1, step 3 stands alone
    first = _drain(_submit(alice, PROMPTS, hashes=["0x1"]))

    # when step 1's payload changes and the input is generated again with the same hash
    changed = copy.deepcopy(PROMPTS)
    changed[0]["nodePayload"]["prompt"] = "a stormy harbour"
    second = _drain(_submit(alice, changed, hashes=["0x1"]))

    # then steps 1 and 2 ran (2 reads 1's new text), step 3 came from the cache, and only
    # what ran is charged
    runs = {r.step_id: r for r in _runs(second)}
    assert [runs[i].cached_from_id for i in (1, 2)] == [None, None]
    assert runs[3].cached_from_id == _runs(first)[2].id
    assert runs[2].output["data"] == "an etching of a stormy harbour"
    assert _reasons(second) == [[(1, "ran", 1.0), (2, "ran", 1.0), (3, "cached", 0.0)]]
    assert _charges(second) == [(0, Decimal(2))]
    cost = second.data["outputs"][0]["cost"]
    assert (cost["quoted"], cost["charged"], cost["released"]) == (3.0, 2.0, 1.0)
    hold = CreditsHold.objects.get(job_id=second.id)
    assert (hold.status, hold.remaining, hold.spent) == ("settled", Decimal(0), Decimal(2))


def test_bob_never_gets_alices_cached_output(alice, bob):
    # given alice's completed job
    alices = _drain(_submit(alice, PROMPTS[:1], hashes=["0x1"]))

    # when bob generates the very same input
    bobs = _drain(_submit(bob, PROMPTS[:1], hashes=["0x1"]))

    # then his step ran for him (same key, different owner: a miss) and he paid for it
    mine, his = _runs(alices)[0], _runs(bobs)[0]
    assert his.cache_key == mine.cache_key
    assert his.cached_from_id is None
    assert his.output.get("cached") is None
    assert _charges(bobs) == [(0, Decimal(1))]
    assert his.output_files["prompt.txt"]["key"].startswith(f"generations/{bob.id}/")


def test_no_cache_runs_every_step_again(alice):
    # given a completed job
    _drain(_submit(alice, PROMPTS[:2], hashes=["0x1"]))

    # when the same input is generated with no_cache
    again = _drain(_submit(alice, PROMPTS[:2], hashes=["0x1"], no_cache=True))

    # then both steps ran and were charged
    assert [r.cached_from_id for r in _runs(again)] == [None, None]
    assert _reasons(again) == [[(1, "ran", 1.0), (2, "ran", 1.0)]]
    assert _charges(again) == [(0, Decimal(2))]


def test_the_request_bodies_take_no_cache(api_for, alice):
    # when a unified request asks for no_cache
    response = api_for(alice).post(
        "/api/collections/generate",
        {"workflow_name": "prompt", "inputs": {"prompt": "a cat"}, "no_cache": True},
        format="json")

    # then its job runs without the cache, and the schema documents the field on both bodies
    assert response.status_code == 202, response.content
    job = Job.objects.get(user=alice)
    assert job.data["noCache"] is True
    schema = api_for(alice).get("/api/schema", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    for body in ("UnifiedGenerateInputRequest", "GenerationRequestInputRequest"):
        assert components[body]["properties"]["no_cache"]["type"] == "boolean"


# ---- itemised costs -------------------------------------------------------------------------------

def test_the_itemised_cost_is_in_the_job_detail_the_webhooks_and_the_ledger(api_for, alice):
    # given a standing webhook, and a first run whose step 3 a second job reuses
    webhooks.webhook_endpoint_create(user=alice, url="https://hooks.example.com/emprops")
    _drain(_submit(alice, PROMPTS[2:], hashes=["0x1"]))
    job = _drain(_submit(alice, PROMPTS, hashes=["0x1"]))

    # when the job detail is read
    detail = api_for(alice).get(f"/api/jobs/{job.id}").json()["data"]

    # then each step's charge and its reason are in the detail, the output, both webhooks and
    # the ledger rows, which name their job and generation
    steps = [{"stepId": 1, "nodeName": "prompt", "quoted": 1.0, "charged": 1.0, "reason": "ran"},
             {"stepId": 2, "nodeName": "prompt", "quoted": 1.0, "charged": 1.0, "reason": "ran"},
             {"stepId": 3, "nodeName": "prompt", "quoted": 1.0, "charged": 0.0, "reason": "cached",
              "cachedFrom": _runs(job)[2].output["cachedFrom"]}]
    generation_cost = {"quoted": 3.0, "charged": 2.0, "released": 1.0, "steps": steps}
    assert detail["cost"] == {"quoted": 3.0, "charged": 2.0, "released": 1.0,
                              "generations": [{"gid": 0, "status": "completed",
                                               **generation_cost}]}
    assert detail["data"]["outputs"][0]["cost"] == generation_cost
    done = WebhookDelivery.objects.get(job=job, event="generation_completed")
    assert done.payload["data"]["output"]["cost"] == generation_cost
    completed = WebhookDelivery.objects.get(job=job, event="completed")
    assert completed.payload["data"]["cost"] == detail["cost"]
    history = api_for(alice).get("/api/credits/history").json()["data"]["items"]
    rows = [r for r in history if r["job_id"] == str(job.id)]
    assert [(r["gid"], r["amount"]) for r in rows] == [(0, "2.0000")]


def test_a_failed_generation_lists_its_steps_as_released(alice):
    # given a job whose only step cannot resolve its $ref
    steps = [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "x"}},
             {"id": 2, "nodeName": "prompt",
              "nodePayload": {"prompt": {"$ref": 1, "path": ".data | error(\"no\")"}}}]

    # when it runs
    job = _drain(_submit(alice, steps, hashes=["0x1"]))

    # then nothing is charged and the generation's steps say why
    assert job.status == Job.Status.FAILED
    assert _charges(job) == []
    assert _reasons(job) == [[(1, "failed: released", 0.0), (2, "failed: released", 0.0)]]
    assert job.data["cost"]["generations"][0]["status"] == "failed"


# ---- replay ---------------------------------------------------------------------------------------

def test_replay_api_runs_again_without_the_cache_and_reports_identical(
        api_for, alice, purge_broker, django_capture_on_commit_callbacks):
    # given a completed prompt job, and no replay of it yet
    source = _drain(_submit(alice, PROMPTS[:2], hashes=["0x1"]))
    url = f"/api/jobs/{source.id}/generations/0/replay"
    assert api_for(alice).get(url).status_code == 404

    # when alice replays generation 0 and it runs (the verdict is taken after the commit)
    response = api_for(alice).post(url)
    assert response.status_code == 202, response.content
    replay = Job.objects.get(pk=response.json()["data"]["jobId"])
    with django_capture_on_commit_callbacks(execute=True):
        _drain(replay)

    # then it re-ran every step at its own keys, was charged like a generation, and says
    # identical
    assert (replay.job_type, replay.data["replay"]) == (
        "replay", {"jobId": str(source.id), "gid": 0, "hash": "0x1"})
    assert [r.cached_from_id for r in _runs(replay)] == [None, None]
    assert _charges(replay) == [(0, Decimal(2))]
    body = api_for(alice).get(url).json()["data"]
    assert body["jobId"] == str(replay.id)
    assert body["replayOf"] == {"jobId": str(source.id), "gid": 0}
    assert body["verdict"]["verdict"] == "identical"
    assert [(s["stepId"], s["verdict"]) for s in body["verdict"]["steps"]] == [
        (1, "identical"), (2, "identical")]
    assert JobHistory.objects.filter(job=replay, message="Replay verdict: identical").count() == 1


def test_bob_cannot_replay_alices_generation(api_for, alice, bob):
    # given alice's completed job
    source = _drain(_submit(alice, PROMPTS[:1], hashes=["0x1"]))
    jobs_before = Job.objects.count()

    # when bob asks to replay it or for its verdict
    url = f"/api/jobs/{source.id}/generations/0/replay"
    posted, got = api_for(bob).post(url), api_for(bob).get(url)

    # then both are 404 and nothing was created or held
    assert (posted.status_code, got.status_code) == (404, 404)
    assert Job.objects.count() == jobs_before
    assert not CreditsHold.objects.filter(user=bob).exists()


def test_a_missing_or_unfinished_generation_cannot_be_replayed(api_for, alice):
    # given a job that has not run yet
    job = _submit(alice, PROMPTS[:1], hashes=["0x1"])

    # when alice replays its generation 0 and a generation it does not have
    pending = api_for(alice).post(f"/api/jobs/{job.id}/generations/0/replay")
    missing = api_for(alice).post(f"/api/jobs/{job.id}/generations/7/replay")

    # then 409 and 404, and no replay job exists
    assert (pending.status_code, missing.status_code) == (409, 404)
    assert not Job.objects.filter(job_type="replay").exists()


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def _stored_run(key: str, content: bytes, env: dict[str, str]) -> NodeRun:
    import hashlib

    storage.save_overwrite(key, content)
    return NodeRun(step_id=1, node_name="p5", output={"mimeType": "image/png"}, env=env,
                   output_files={"p5.png": {"key": key, "mimeType": "image/png",
                                            "sha256": hashlib.sha256(content).hexdigest()}})


def test_images_within_the_tolerance_are_equivalent_and_beyond_it_drifted():
    # given an original PNG and replays off by the tolerance and by more, in a newer Chromium
    env = {"chromium": "156", "p5": "1.11.9"}
    original = _stored_run("tests/replay/a.png", _png((100, 100, 100)), env)
    close = _stored_run("tests/replay/b.png", _png((100, 100 + EQUIVALENT_MAX_DIFF, 100)), env)
    far = _stored_run("tests/replay/c.png", _png((100, 140, 100)), {**env, "chromium": "157"})

    # when each is compared with the original
    near = _compare(original, close, source_job="j1", replay_job="j2")
    drifted = _compare(original, far, source_job="j1", replay_job="j2")

    # then the measured difference decides, and a drift names what changed in the environment
    assert near == {"stepId": 1, "nodeName": "p5", "verdict": "equivalent",
                    "differs": ["p5.png"],
                    "pixels": {"p5.png": {"maxDiff": float(EQUIVALENT_MAX_DIFF),
                                          "meanDiff": round(EQUIVALENT_MAX_DIFF / 4, 4)}}}
    assert drifted["verdict"] == "drifted"
    assert drifted["pixels"] == {"p5.png": {"maxDiff": 40.0, "meanDiff": 10.0}}
    assert drifted["env"] == {"chromium": {"original": "156", "replay": "157"}}


# ---- the real thing: p5 in this process's Chromium ------------------------------------------------

P5 = [{"id": 1, "nodeName": "p5", "nodePayload": {"code": SKETCH}}]
UNSEEDED = [{"id": 1, "nodeName": "p5", "nodePayload": {"code": UNSEEDED_SKETCH}}]


def _finished(job: Job, timeout: float = 180) -> Job:
    from tests.workers import wait_for

    def done() -> Job | None:
        job.refresh_from_db()
        return job if job.status in Job.FINISHED else None

    finished: Job = wait_for(done, timeout=timeout)
    assert finished.status == Job.Status.COMPLETED, finished.error_message
    return finished


def _verdict(job: Job) -> dict[str, Any]:
    from tests.workers import wait_for

    def taken() -> dict[str, Any] | None:
        job.refresh_from_db()
        return (job.data or {}).get("verdict")

    verdict: dict[str, Any] = wait_for(taken, timeout=30)
    return verdict


@pytest.mark.browser
def test_p5_generated_again_is_cached_and_replays_identical_unseeded_randomness_drifts(
        worker, alice):
    # given a p5 job over two hashes, rendered by a real worker's Chromium, and a one-hash job
    # of a sketch that colours its canvas from crypto.getRandomValues (which the page cannot
    # seed)
    first, unseeded = _submit(alice, P5), _submit(alice, UNSEEDED, hashes=["0x1"])
    first, unseeded = _finished(first), _finished(unseeded)
    rendered = [_bytes(r)["p5.png"] for r in _runs(first)]
    assert Image.open(io.BytesIO(rendered[0])).size == (64, 64)
    assert rendered[0] != rendered[1]  # the hash decides the picture
    assert _runs(first)[0].env["p5"] == "1.11.9"

    # when the first is generated again with the same hashes, generation 1 of that is
    # replayed, and the unseeded one is replayed
    drift = generation_replay(user=alice, job_id=unseeded.id, gid=0)
    second = _finished(_submit(alice, P5))
    replay = _finished(generation_replay(user=alice, job_id=second.id, gid=1))
    drift = _finished(drift)

    # then the second job rendered nothing, cost nothing and has the same bytes
    assert [r.cached_from_id for r in _runs(second)] == [r.id for r in _runs(first)]
    assert [_bytes(r)["p5.png"] for r in _runs(second)] == rendered
    assert _charges(second) == []
    assert [o["cost"]["charged"] for o in second.data["outputs"]] == [0, 0]
    # the replay rendered again (its clock and Math.random are the page's own, seeded by the
    # hash) and is identical to the cached output it replays
    assert [r.cached_from_id for r in _runs(replay)] == [None]
    assert _bytes(_runs(replay)[0])["p5.png"] == rendered[1]
    assert _verdict(replay)["verdict"] == "identical"
    # the unseeded sketch drifted, measured, in an unchanged environment
    verdict = _verdict(drift)
    step = verdict["steps"][0]
    assert verdict["verdict"] == "drifted"
    assert step["differs"] == ["p5.png"]
    assert step["pixels"]["p5.png"]["maxDiff"] > EQUIVALENT_MAX_DIFF
    assert step["env"] == {}
    assert "environment fingerprint is the same" in step["note"]
