"""A collection generated through a real Celery worker: variables -> prompt -> prompt."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage

from collections_app.models import ComponentFlatFile, FlatFile
from emprops.accounts.models import CreditsBalance, CreditsHistory, CreditsHold
from generation_app.engine.prng import HashRandom
from generation_app.models import NodeRun
from jobs_app.models import Job, JobEvent, JobHistory
from tests.workers import wait_for

GOLDEN = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"


def _doc(*children):
    return json.dumps([{"type": "paragraph", "children": list(children)}])


def _collection(client, *, steps=None):
    data = {
        "steps": steps or [
            {"id": 1, "nodeName": "prompt", "alias": "Subject", "nodePayload": {"prompt": _doc(
                {"text": "a "}, {"type": "variable", "variable": {"name": "who"}},
                {"text": " who is an "}, {"type": "variable", "variable": {"name": "job"}})}},
            {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": _doc(
                {"text": "portrait of "}, {"type": "component", "component": {"id": 1}})}},
        ],
        "variables": [
            {"name": "who", "type": "weighted_pick", "value_type": "strings",
             "value": {"values": ["John", "Mary", "Peter"], "weights": [1, 1, 98]}},
            {"name": "job", "type": "pick", "value_type": "strings",
             "value": {"values": ["Engineer", "Other"]}},
        ],
    }
    response = client.post("/api/projects/collections", {"title": "People", "data": data},
                           format="json")
    assert response.status_code == 201, response.json()
    return response.json()["data"]


def _expected_features(h):
    rng = HashRandom(h)
    who = rng.pseudorandom_weighted_pick(["John", "Mary", "Peter"], [1, 1, 98])
    return {"who": who, "job": rng.pseudorandom_pick(["Engineer", "Other"])}


def _expected(h):
    return "a {who} who is an {job}".format(**_expected_features(h))


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_four_generations_follow_the_hashes(api_for, alice, worker):
    client = api_for(alice)
    collection = _collection(client)
    hashes = [GOLDEN, "oo" + "a" * 49, "0x" + "f" * 64, "123e4567-e89b-12d3-a456-426614174000"]

    response = client.post(f"/api/collections/{collection['id']}/generations",
                           {"hashes": hashes}, format="json")

    assert response.status_code == 202
    job_id = response.json()["data"]["jobId"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    assert job.progress == 100
    outputs = job.data["outputs"]
    assert [o["generation"] for o in outputs] == [
        {"id": i, "hash": h, "features": _expected_features(h), "feature_labels": {}}
        for i, h in enumerate(hashes)]
    first_ids = [s["id"] for s in collection["data"]["steps"]]
    for out, h in zip(outputs, hashes, strict=True):
        steps = {s["id"]: s for s in out["steps"]}
        assert steps[first_ids[0]]["nodeResponse"]["data"] == _expected(h)
        assert steps[first_ids[1]]["nodeResponse"]["data"] == "portrait of " + _expected(h)
        assert steps[first_ids[0]]["nodeAlias"] == "Subject"
        src = steps[first_ids[1]]["nodeResponse"]["src"]
        key = f"generations/{alice.id}/{job_id}/{out['generation']['id']}/{first_ids[1]}/prompt.txt"
        assert src.endswith(key)
        assert default_storage.open(key).read().decode() == "portrait of " + _expected(h)
    # the golden hash: weighted pick -> Peter, then Engineer
    assert outputs[0]["steps"][0]["nodeResponse"]["data"] == "a Peter who is an Engineer"
    assert FlatFile.objects.filter(job_id=job_id).count() == 8
    assert ComponentFlatFile.objects.filter(flat_file__job_id=job_id).count() == 8
    history = list(JobHistory.objects.filter(job_id=job_id).order_by("id"))
    assert history[0].message == "Job created and pending execution"
    assert sum(h.message == "Node started" for h in history) == 8
    assert sum(h.message == "Node prompt completed" for h in history) == 8
    assert sum(h.message == "Generation completed successfully" for h in history) == 4
    assert all("gid" in h.data for h in history[1:])
    # credits: 2 prompt steps x 4 generations charged once each from a hold
    balance = CreditsBalance.objects.get(user=alice, credit_type="permanent").balance
    assert balance == 10 - 8
    assert CreditsHistory.objects.filter(user=alice, flow="out").count() == 4
    assert CreditsHold.objects.get(job_id=job_id).status == "settled"
    seqs = list(JobEvent.objects.filter(job_id=job_id).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_failing_step_fails_its_generation_and_refunds_its_hold(api_for, alice, worker):
    client = api_for(alice)
    steps = [
        {"id": 1, "nodeName": "prompt", "alias": "Broken",
         "nodePayload": {"prompt": "x", "extra": {"$ref": 953, "path": ".data.nope | error(\"boom\")"}}},
    ]
    collection = _collection(client, steps=steps)

    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
    assert job.status == "failed"
    assert job.error_message.startswith("Error in component 'Broken': ")
    failed = JobHistory.objects.filter(job_id=job_id, status="failed")
    assert failed.count() == 2
    assert failed.first().data["failure_type"] == "VALIDATION_ERROR"
    assert failed.first().data["retryable"] is False
    assert CreditsBalance.objects.get(user=alice, credit_type="permanent").balance == 10
    assert CreditsHold.objects.get(job_id=job_id).status == "released"
    me = client.get("/api/me").json()["data"]
    assert me["held"] == "0"


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_runaway_jq_path_fails_its_step_once_and_leaves_the_worker_free(api_for, alice, worker):
    client = api_for(alice)
    first = {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a cat"}}
    runaway = _collection(client, steps=[first, {
        "id": 2, "nodeName": "prompt", "alias": "Runaway",
        "nodePayload": {"prompt": "x", "extra": {"$ref": 1, "path": "def f: f; f"}}}])
    fine = _collection(client, steps=[first, {
        "id": 2, "nodeName": "prompt",
        "nodePayload": {"prompt": "y", "extra": {"$ref": 1, "path": ".data"}}}])

    stuck_id = client.post(f"/api/collections/{runaway['id']}/generations", {"count": 2},
                           format="json").json()["data"]["jobId"]
    ok_id = client.post(f"/api/collections/{fine['id']}/generations", {"count": 1},
                        format="json").json()["data"]["jobId"]

    stuck = wait_for(lambda: Job.objects.filter(pk=stuck_id, status__in=Job.FINISHED).first(), 60)
    ok = wait_for(lambda: Job.objects.filter(pk=ok_id, status__in=Job.FINISHED).first(), 60)
    assert ok.status == "completed", (ok.error_message, worker.output()[-3000:])
    assert stuck.status == "failed"
    assert "time limit" in stuck.error_message
    failed = JobHistory.objects.filter(job_id=stuck_id, status="failed")
    assert failed.count() == 2
    assert {f.data["failure_type"] for f in failed} == {"VALIDATION_ERROR"}
    assert {f.data["retryable"] for f in failed} == {False}
    runs = NodeRun.objects.filter(job_id=stuck_id, alias="Runaway")
    assert sorted(r.attempt for r in runs) == [1, 1]
    assert CreditsHold.objects.get(job_id=stuck_id).status in ("released", "settled")


@pytest.mark.django_db
def test_unknown_variable_and_count_over_limit_are_400_before_any_job(api_for, alice):
    client = api_for(alice)
    collection = _collection(client)
    url = f"/api/collections/{collection['id']}/generations"

    responses = [
        client.post(url, {"variables": {"nope": "x"}}, format="json"),
        client.post(url, {"count": 11}, format="json"),
        client.post(url, {"hashes": [1, 2]}, format="json"),
        client.post(url, {"hashes": []}, format="json"),
        client.post(url, {"count": "many"}, format="json"),
    ]

    assert [r.status_code for r in responses] == [400] * 5
    assert Job.objects.count() == 0
    assert NodeRun.objects.count() == 0
    assert CreditsHold.objects.count() == 0


@pytest.mark.django_db
def test_a_bad_hash_is_named_as_the_unified_api_names_it(api_for, alice):
    client = api_for(alice)
    collection = _collection(client)

    response = client.post(f"/api/collections/{collection['id']}/generations",
                           {"hashes": ["0xab", "", "x" * 201]}, format="json")

    assert response.status_code == 400
    assert response.json()["details"] == {
        "hashes[1]": ["Must be a non-empty string of at most 200 characters."],
        "hashes[2]": ["Must be a non-empty string of at most 200 characters."]}
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_not_enough_credits_is_402_with_the_quote_and_creates_nothing(api_for, alice):
    client = api_for(alice)
    collection = _collection(client)

    response = client.post(f"/api/collections/{collection['id']}/generations", {"count": 6},
                           format="json")

    assert response.status_code == 402
    assert response.json()["details"]["quote"]["total_cost"] == 12
    assert Job.objects.count() == 0
    assert CreditsHold.objects.count() == 0


@pytest.mark.django_db
def test_bob_cannot_generate_alices_collection(api_for, alice, bob):
    collection = _collection(api_for(alice))

    response = api_for(bob).post(f"/api/collections/{collection['id']}/generations", {},
                                 format="json")

    assert response.status_code == 404
    assert Job.objects.count() == 0
