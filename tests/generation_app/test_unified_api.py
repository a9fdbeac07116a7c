"""The unified API: a collection from a workflow, generated in one call; refusals leave nothing;
Idempotency-Key; batches accepted all together or not at all."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.utils import timezone

from collections_app.models import Collection, Component, Project
from emprops.accounts.models import CreditsBalance, CreditsHold, IdempotencyKey
from generation_app.engine.prng import HashRandom
from generation_app.models import Generation, NodeRun
from jobs_app.models import Job
from tests.peers.http_api import HttpApiPeer
from tests.workers import WebProcess, wait_for
from workflows_app.models import Workflow

URL = "/api/collections/generate"
BATCH = "/api/collections/generate/batch"
GOLDEN = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"
ANIMALS = ["cat", "dog", "owl"]
ANIMAL = {"name": "animal", "type": "pick", "value_type": "strings", "value": {"values": ANIMALS}}
CREDITS = "function computeCost(c){ return {cost: Math.ceil(parseInt(c.steps||20)/10)} }"
FORM = {"config": {"maxNumberOfGenerations": 5}, "fields": [
    {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
    {"id": "steps", "name": "Steps", "type": "slider", "default": 20,
     "constraints": {"min": 1, "max": 50}},
]}


def _prompt_request(**extra: Any) -> dict[str, Any]:
    return {"workflow_name": "prompt", "inputs": {"prompt": "a $animal"}, "variables": [ANIMAL],
            "title": "Animals", **extra}


def _fetch_workflow(name: str = "flux", *, url: str = "http://127.0.0.1:9/wait",
                    display: bool = True) -> Workflow:
    return Workflow.objects.create(
        name=name, label=name.title(), type="fetch_api", output_mime_type="image/png",
        display=display,
        data={"form": FORM, "credits_script": CREDITS,
              "body": {"input": {"prompt": "", "steps": 0}},
              "inputs": [{"id": "prompt", "pathJq": ".input.prompt"},
                         {"id": "steps", "pathJq": ".input.steps"}],
              "api": {"url": url, "method": "POST", "successResponseCode": 200,
                      "fetchType": "wait", "wait": {"outputExprJq": ".output.url"}}})


def _counts() -> dict[str, int]:
    return {"projects": Project.objects.count(), "collections": Collection.objects.count(),
            "components": Component.objects.count(), "jobs": Job.objects.count(),
            "generations": Generation.objects.count(), "node_runs": NodeRun.objects.count(),
            "holds": CreditsHold.objects.count()}


def _set_balance(user: Any, amount: int) -> None:
    CreditsBalance.objects.filter(user=user, credit_type="permanent").update(balance=amount)


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_prompt_request_creates_the_collection_and_its_generations_follow_the_hashes(
        api_for, alice, worker):
    hashes = [GOLDEN, "oo" + "b" * 49, "0x" + "e" * 64]

    response = api_for(alice).post(URL, _prompt_request(hashes=hashes, priority=100),
                                   format="json")

    assert response.status_code == 202, response.json()
    body = response.json()["data"]
    collection, job = body["collection"], body["job"]
    step = collection["data"]["steps"][0]
    assert step["nodeName"] == "prompt"
    assert step["id"] >= 1_000_000 and step["fromId"] == 1
    assert step["nodePayload"] == {"prompt": "a $animal"}
    assert collection["title"] == "Animals"
    assert collection["data"]["variables"][0]["name"] == "animal"
    assert Component.objects.filter(collection_id=collection["id"]).count() == 1
    assert job["name"] == "Collection Generation: Animals"
    assert job["priority"] == 9
    assert job["data"]["collectionId"] == collection["id"]
    assert body["cost"] == {"per_generation": 1.0, "total": 3.0,
                            "breakdown": [{"nodeName": "prompt", "stepId": step["id"], "cost": 1.0}]}
    gallery = body["urls"].pop("gallery")
    assert gallery.startswith(f"http://testserver/c/{collection['id']}?g=")
    assert body["urls"] == {
        "collection": f"http://testserver/api/collections/{collection['id']}",
        "job": f"http://testserver/api/jobs/{job['id']}",
        "events": f"http://testserver/api/jobs/{job['id']}/events",
        "public": f"http://testserver/api/collections/{collection['id']}/public"}
    done = wait_for(lambda: Job.objects.filter(pk=job["id"], status__in=Job.FINISHED).first(), 90)
    assert done.status == "completed", (done.error_message, worker.output()[-3000:])
    outputs = done.data["outputs"]
    assert [o["generation"] for o in outputs] == [
        {"id": i, "hash": h, "features": {"animal": HashRandom(h).pseudorandom_pick(ANIMALS)},
         "feature_labels": {}} for i, h in enumerate(hashes)]
    texts = [o["steps"][0]["nodeResponse"]["data"] for o in outputs]
    assert texts == [f"a {HashRandom(h).pseudorandom_pick(ANIMALS)}" for h in hashes]
    assert CreditsBalance.objects.get(user=alice, credit_type="permanent").balance == 10 - 3
    assert CreditsHold.objects.get(job_id=job["id"]).status == "settled"


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_fetch_api_workflow_by_id_runs_with_form_defaults_under_the_inputs(
        api_for, alice, start_worker, settings):
    with HttpApiPeer() as api:
        settings.OUTBOUND_ALLOW_HOSTS = [api.host]
        worker = start_worker()
        wf = _fetch_workflow(url=api.url + "/wait")

        response = api_for(alice).post(URL, {"workflow_id": str(wf.id),
                                             "inputs": {"prompt": "a red fox"}, "count": 2},
                                       format="json")

        assert response.status_code == 202, response.json()
        body = response.json()["data"]
        assert body["collection"]["title"] == "Flux"
        assert body["collection"]["data"]["steps"][0]["nodePayload"] == {
            "prompt": "a red fox", "steps": 20}
        assert body["cost"]["per_generation"] == 2.0 and body["cost"]["total"] == 4.0
        job = wait_for(lambda: Job.objects.filter(pk=body["job"]["id"],
                                                  status__in=Job.FINISHED).first(), 90)
        assert job.status == "completed", (job.error_message, worker.output()[-3000:])
        assert api.count("POST", "/wait") == 2
        submitted = json.loads(next(api.recorded("/wait")).body)
        assert submitted == {"input": {"prompt": "a red fox", "steps": 20}}


# ---- refusals leave nothing ---------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize(("body", "details"), [
    ({"workflow_name": "prompt", "inputs": {}},
     {"inputs.prompt": ["This field is required (a non-empty string)."]}),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x", "promt": "y"}},
     {"inputs.promt": ["The prompt node has no input 'promt'."]}),
    ({"workflow_name": "flux", "inputs": {"prompt": "x", "steps": "500"}},
     {"inputs.steps": ["Ensure this value is less than or equal to 50."]}),
    ({"workflow_name": "flux", "inputs": {"steps": 10}},
     {"inputs.prompt": ["This field is required."]}),
    ({"workflow_name": "flux", "inputs": {"prompt": "x"}, "count": 6},
     {"count": ["At most 5 generations per request."]}),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"},
      "variables": [{"name": "v", "type": "shuffle", "value": {"values": ["a"]}}]},
     None),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"}, "hashes": [1]},
     {"hashes[0]": ["Must be a non-empty string of at most 200 characters."]}),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"}, "count": 2, "hashes": ["a"]},
     {"hashes": ["Give count or hashes, not both."]}),
    ({"workflow_id": None, "inputs": {"prompt": "x"}},
     {"workflow_id": ["Give exactly one of workflow_id and workflow_name."]}),
    ({"workflow_name": "prompt", "input": {"prompt": "x"}}, {"input": ["Unknown field."]}),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"}, "priority": 101}, None),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"},
      "webhook": {"url": "ftp://example.com/hook"}}, None),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"},
      "webhook": {"url": "https://example.com/hook", "events": ["done"]}}, None),
    ({"workflow_name": "prompt", "inputs": {"prompt": "x"}, "run_at": "2001-01-01T00:00:00Z"},
     {"run_at": ["Must be a time in the future."]}),
])
def test_invalid_requests_are_400_naming_the_field_and_create_nothing(api_for, alice, body,
                                                                      details):
    _fetch_workflow()
    before = _counts()

    response = api_for(alice).post(URL, body, format="json")

    assert response.status_code == 400, response.json()
    if details is not None:
        assert response.json()["details"] == details
    else:
        assert response.json()["details"]
    assert _counts() == before
    assert not IdempotencyKey.objects.exists()


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_future_run_at_waits_with_credits_held_then_runs(api_for, alice, worker):
    from jobs_app.models import Job
    from tests.workers import wait_for

    run_at = timezone.now() + timedelta(seconds=3)

    response = api_for(alice).post(URL, _prompt_request(run_at=run_at.isoformat()), format="json")

    assert response.status_code == 202
    job_id = response.json()["data"]["job"]["id"]
    assert response.json()["data"]["job"]["run_at"] is not None
    time.sleep(1)
    job = Job.objects.get(pk=job_id)
    assert job.status == "pending"
    assert set(job.generations.values_list("status", flat=True)) == {"waiting"}
    assert api_for(alice).get("/api/me").json()["data"]["held"] != "0"
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 60)
    assert job.status == "completed"
    assert job.started_at >= run_at


@pytest.mark.django_db
def test_over_the_balance_is_402_with_the_quote_and_leaves_no_default_project(api_for, alice):
    _fetch_workflow()
    before = _counts()
    assert before["projects"] == 0

    response = api_for(alice).post(URL, {"workflow_name": "flux", "inputs": {
        "prompt": "x", "steps": 50}, "count": 3}, format="json")

    assert response.status_code == 402
    details = response.json()["details"]
    assert details["required"] == "15.0000" and details["available"] == "10.0000"
    assert details["quote"]["total_cost"] == 15.0 and details["quote"]["per_generation"] == 5.0
    assert _counts() == before
    assert CreditsBalance.objects.get(user=alice, credit_type="permanent").balance == 10


@pytest.mark.django_db
def test_unknown_or_hidden_workflows_and_others_projects_are_404_naming_the_field(
        api_for, alice, bob, staff):
    hidden = _fetch_workflow("secret-flux", display=False)
    bobs_project = Project.objects.create(user=bob, name="Bob's")
    client = api_for(alice)
    before = _counts()

    responses = {
        "workflow_id": client.post(URL, {"workflow_id": "00000000-0000-0000-0000-000000000001",
                                         "inputs": {"prompt": "x"}}, format="json"),
        "workflow_name": client.post(URL, {"workflow_name": "nope", "inputs": {}}, format="json"),
        "hidden": client.post(URL, {"workflow_id": str(hidden.id), "inputs": {"prompt": "x"}},
                              format="json"),
        "project_id": client.post(URL, _prompt_request(project_id=str(bobs_project.id)),
                                  format="json"),
        "unknown project": client.post(
            URL, _prompt_request(project_id="00000000-0000-0000-0000-000000000002"),
            format="json"),
    }

    assert {k: r.status_code for k, r in responses.items()} == dict.fromkeys(responses, 404)
    # a workflow's 404 names the built-in nodes, which need no workflow
    builtin = ["js", "p5", "p52vid", "prompt"]
    assert responses["workflow_id"].json()["details"] == {"workflow_id": ["No such workflow."],
                                                          "builtin_nodes": builtin}
    assert responses["workflow_name"].json()["details"] == {
        "workflow_name": ["No such workflow."], "builtin_nodes": builtin}
    assert responses["hidden"].json()["details"] == {"workflow_id": ["No such workflow."],
                                                     "builtin_nodes": builtin}
    assert responses["project_id"].json()["details"] == {"project_id": ["No such project."]}
    assert responses["unknown project"].json()["details"] == {"project_id": ["No such project."]}
    assert _counts() == before
    # staff may run a hidden workflow
    staff_response = api_for(staff).post(URL, {"workflow_id": str(hidden.id),
                                               "inputs": {"prompt": "x"}}, format="json")
    assert staff_response.status_code == 202, staff_response.json()


@pytest.mark.django_db
def test_collection_fields_project_and_webhook_are_kept(api_for, alice):
    project = Project.objects.create(user=alice, name="Mine")

    response = api_for(alice).post(URL, _prompt_request(
        project_id=str(project.id), description="d", editions=7, price="0.5", count=2,
        webhook={"url": "https://example.com/hook", "events": ["completed", "progress"]}),
        format="json")

    assert response.status_code == 202, response.json()
    body = response.json()["data"]
    collection = Collection.objects.get(pk=body["collection"]["id"])
    assert (collection.project_id, collection.description, collection.editions) == (
        project.id, "d", 7)
    assert collection.price == Decimal("0.5")
    job = Job.objects.get(pk=body["job"]["id"])
    assert job.data["webhook"] == {"url": "https://example.com/hook",
                                   "events": ["completed", "progress"]}
    assert job.generations.count() == 2
    assert Project.objects.filter(user=alice).count() == 1  # no default project made


@pytest.mark.django_db
def test_a_webhook_without_events_gets_every_event(api_for, alice):
    response = api_for(alice).post(URL, _prompt_request(
        webhook={"url": "https://example.com/hook"}), format="json")

    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["data"]["job"]["id"])
    assert job.data["webhook"] == {"url": "https://example.com/hook", "events": [
        "completed", "failed", "progress", "generation_completed"]}


# ---- Idempotency-Key ----------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_same_key_and_body_replays_the_first_response_and_creates_nothing(api_for, alice):
    client = api_for(alice)
    body = _prompt_request(count=2)

    first = client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    # the same body spelt differently (key order, whitespace) is the same request
    respelt = json.dumps(dict(reversed(list(body.items()))), indent=2)
    second = client.post(URL, respelt, content_type="application/json",
                         HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == second.status_code == 202
    assert second.json()["data"] == first.json()["data"]
    assert second["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1 and Collection.objects.count() == 1
    assert CreditsHold.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_409_and_a_new_key_is_a_new_request(api_for, alice):
    client = api_for(alice)
    client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    reused = client.post(URL, _prompt_request(count=2), format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    other_key = client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-3")

    assert reused.status_code == 409
    assert reused.json()["details"] == {"code": "key_reused"}
    assert other_key.status_code == 202
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_keys_are_per_user_and_per_endpoint(api_for, alice, bob):
    body = _prompt_request()

    a = api_for(alice).post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    b = api_for(bob).post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    batch = api_for(alice).post(BATCH, {"items": [body]}, format="json",
                                HTTP_IDEMPOTENCY_KEY="shared")

    assert [a.status_code, b.status_code, batch.status_code] == [202, 202, 202]
    assert Job.objects.count() == 3


@pytest.mark.django_db
def test_a_refused_request_frees_its_key_for_a_retry(api_for, alice):
    client = api_for(alice)
    _set_balance(alice, 0)

    refused = client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-4")
    _set_balance(alice, 10)
    retried = client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-4")

    assert refused.status_code == 402
    assert retried.status_code == 202
    assert "Idempotent-Replayed" not in retried
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_a_key_older_than_24_hours_is_replaced(api_for, alice):
    client = api_for(alice)
    client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-5")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))

    again = client.post(URL, _prompt_request(count=2), format="json", HTTP_IDEMPOTENCY_KEY="k-5")

    assert again.status_code == 202
    assert Job.objects.count() == 2
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db
def test_a_key_still_in_flight_is_409_in_progress(api_for, alice):
    client = api_for(alice)
    client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-6")
    # as if the first request had claimed the key and not finished yet
    IdempotencyKey.objects.update(status="in_progress", response_status=None, response_body=None)

    duplicate = client.post(URL, _prompt_request(), format="json", HTTP_IDEMPOTENCY_KEY="k-6")

    assert duplicate.status_code == 409
    assert duplicate.json()["details"] == {"code": "in_progress"}
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_the_collection_generations_endpoint_honours_the_key(api_for, alice):
    client = api_for(alice)
    collection = client.post(URL, _prompt_request(), format="json").json()["data"]["collection"]
    url = f"/api/collections/{collection['id']}/generations"

    first = client.post(url, {"count": 2}, format="json", HTTP_IDEMPOTENCY_KEY="g-1")
    second = client.post(url, {"count": 2}, format="json", HTTP_IDEMPOTENCY_KEY="g-1")
    changed = client.post(url, {"count": 3}, format="json", HTTP_IDEMPOTENCY_KEY="g-1")

    assert [first.status_code, second.status_code, changed.status_code] == [202, 202, 409]
    assert second.json()["data"] == first.json()["data"]
    assert Job.objects.count() == 2  # the unified request's and one generations request's


@pytest.mark.django_db
def test_a_malformed_key_is_400(api_for, alice):
    response = api_for(alice).post(URL, _prompt_request(), format="json",
                                   HTTP_IDEMPOTENCY_KEY="x" * 256)

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["Idempotency-Key"]
    assert Job.objects.count() == 0


def _fire_together(url: str, body: dict[str, Any], headers: dict[str, str],
                   n: int = 2) -> list[httpx.Response]:
    """`n` real HTTP requests released together from a barrier."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def fire() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait(timeout=30)
            response = client.post(url, json=body, headers=headers)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=fire) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.fixture
def web(transactional_db: Any, tmp_path: Any) -> Iterator[WebProcess]:
    proc = WebProcess(tmp_path).start()
    yield proc
    proc.stop()


@pytest.mark.server
@pytest.mark.timeout(120)
def test_concurrent_duplicates_never_make_two_jobs(alice, web):
    from emprops.accounts.services import api_key_create

    _, raw = api_key_create(user=alice, name="race")
    outcomes = []

    for round_ in range(4):
        results = _fire_together(f"{web.url}{URL}", _prompt_request(),
                                 {"X-API-Key": raw, "Idempotency-Key": f"race-{round_}"})

        codes = sorted(r.status_code for r in results)
        outcomes.append(codes)
        if codes == [202, 409]:
            conflict = next(r for r in results if r.status_code == 409)
            assert conflict.json()["details"] == {"code": "in_progress"}
        else:
            assert codes == [202, 202], [r.text for r in results]
            assert results[0].json()["data"] == results[1].json()["data"]
    assert Job.objects.filter(user=alice).count() == 4, outcomes
    assert Collection.objects.filter(project__user=alice).count() == 4
    assert CreditsHold.objects.filter(user=alice).count() == 4


# ---- batch --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_batch_is_accepted_whole(api_for, alice):
    _fetch_workflow()
    items = [_prompt_request(count=2), {"workflow_name": "flux", "inputs": {"prompt": "x"}},
             _prompt_request(hashes=[GOLDEN])]

    response = api_for(alice).post(BATCH, {"items": items}, format="json")

    assert response.status_code == 202, response.json()
    data = response.json()["data"]
    assert [i["cost"]["total"] for i in data["items"]] == [2.0, 2.0, 1.0]
    assert data["total_cost"] == 5.0
    jobs = [Job.objects.get(pk=i["job"]["id"]) for i in data["items"]]
    assert [j.generations.count() for j in jobs] == [2, 1, 1]
    assert Collection.objects.count() == 3
    assert CreditsHold.objects.filter(user=alice, status="held").count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "body", "items"), [
    (URL, {"workflow_name": "flux", "inputs": {"prompt": "x"}, "count": 2}, 1),
    (BATCH, {"items": [{"workflow_name": "flux", "inputs": {"prompt": "x"}, "count": 2},
                       {"workflow_name": "flux", "inputs": {"prompt": "y"}}]}, 2),
])
def test_each_request_is_validated_planned_and_quoted_once(api_for, alice, monkeypatch, url,
                                                            body, items):
    # quoting runs the credits script in the JS sandbox (up to 1 s a step): never twice
    from collections_app import services as collection_services
    from generation_app.services import quote, steps

    _fetch_workflow()
    calls: Counter[str] = Counter()

    def spy(module: Any, name: str) -> None:
        real = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    spy(collection_services, "node_form_lookup")  # once per GenerationInput validation
    spy(steps, "workflows_by_name")  # once per plan
    spy(quote, "credits_cost")  # once per quoted step

    response = api_for(alice).post(url, body, format="json")

    assert response.status_code == 202, response.json()
    assert calls == {"node_form_lookup": items, "workflows_by_name": items, "credits_cost": items}
    assert Job.objects.count() == items


@pytest.mark.django_db
def test_one_bad_item_refuses_the_whole_batch_with_each_items_result(api_for, alice):
    items = [_prompt_request(), {"workflow_name": "nope", "inputs": {}},
             _prompt_request(inputs={}), "not an object", _prompt_request(bogus=1)]
    before = _counts()

    response = api_for(alice).post(BATCH, {"items": items}, format="json")

    assert response.status_code == 400
    results = response.json()["details"]["items"]
    assert results[0] == {"index": 0, "ok": True, "cost": {"per_generation": 1.0, "total": 1.0}}
    assert results[1] == {"index": 1, "status": 404, "error": "Workflow not found.",
                          "details": {"workflow_name": ["No such workflow."],
                                      "builtin_nodes": ["js", "p5", "p52vid", "prompt"]}}
    assert results[2]["status"] == 400
    assert results[2]["details"] == {
        "inputs.prompt": ["This field is required (a non-empty string)."]}
    assert results[3]["status"] == 400
    assert results[4]["details"] == {"bogus": ["Unknown field."]}
    assert _counts() == before


@pytest.mark.django_db
def test_a_batch_whose_sum_exceeds_the_balance_is_402_and_creates_nothing(api_for, alice):
    items = [_prompt_request(count=4) for _ in range(3)]  # 4 each fits, 12 together does not
    before = _counts()

    response = api_for(alice).post(BATCH, {"items": items}, format="json")

    assert response.status_code == 402
    details = response.json()["details"]
    assert details["required"] == "12.0000"
    assert details["quote"]["total_cost"] == 12.0
    assert [i["total_cost"] for i in details["quote"]["items"]] == [4.0, 4.0, 4.0]
    assert _counts() == before


@pytest.mark.django_db
def test_a_batch_counts_holds_already_made(api_for, alice):
    client = api_for(alice)
    assert client.post(URL, _prompt_request(count=5), format="json").status_code == 202

    response = client.post(BATCH, {"items": [_prompt_request(count=3)] * 2}, format="json")

    assert response.status_code == 402
    assert response.json()["details"]["available"] == "5.0000"
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_batch_size_limits(api_for, alice):
    client = api_for(alice)

    empty = client.post(BATCH, {"items": []}, format="json")
    too_many = client.post(BATCH, {"items": [_prompt_request()] * 101}, format="json")

    assert [empty.status_code, too_many.status_code] == [400, 400]
    assert list(too_many.json()["details"]) == ["items"]
    assert Job.objects.count() == 0
