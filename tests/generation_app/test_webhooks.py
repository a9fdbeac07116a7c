"""Webhooks: signed deliveries of a real job's events through a real worker to loopback
receivers, retries with every attempt recorded, the SSRF guard, and per-user scoping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
from django.db import transaction

from generation_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from generation_app.services import webhooks
from jobs_app.models import Job
from tests.peers.webhook_receiver import WebhookReceiver
from tests.workers import wait_for


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written independently of the service."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


def _prompt_collection(client) -> dict:
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a cat"}}]}
    response = client.post("/api/projects/collections", {"title": "Cats", "data": data},
                           format="json")
    assert response.status_code == 201, response.json()
    return response.json()["data"]


def test_the_signature_matches_the_standard_webhooks_example():
    # the example of the Standard Webhooks specification
    signature = webhooks.sign(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              webhook_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330,
                              body=b'{"test": 2432232314}')

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.worker
@pytest.mark.timeout(90)
def test_a_real_job_sends_signed_events_and_refuses_a_loopback_url(api_for, alice, settings,
                                                                    start_worker, receiver):
    # given: an allow-listed receiver for completed + generation_completed, and a second
    # loopback receiver that is not allow-listed: refused when created through the API, and
    # refused again at delivery when its row exists anyway (saved before the allow-list changed)
    client = api_for(alice)
    settings.OUTBOUND_ALLOW_HOSTS = [f"127.0.0.1:{receiver.port}"]
    with WebhookReceiver() as forbidden:
        start_worker(env={"OUTBOUND_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}"})
        secret = client.get("/api/webhooks/secret").json()["data"]["secret"]
        created = client.post("/api/webhooks/endpoints", {
            "url": receiver.url, "events": ["completed", "generation_completed"]}, format="json")
        assert created.status_code == 201, created.json()
        refused_at_creation = client.post("/api/webhooks/endpoints",
                                          {"url": forbidden.url, "events": ["completed"]},
                                          format="json")
        assert refused_at_creation.status_code == 400, refused_at_creation.json()
        WebhookEndpoint.objects.create(user=alice, url=forbidden.url, events=["completed"])
        collection = _prompt_collection(client)

        # when
        job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                             format="json").json()["data"]["jobId"]

        # then: two generation_completed and one completed arrive, each signed with the secret
        wait_for(lambda: len(receiver.requests) >= 3 and not WebhookDelivery.objects.filter(
            status="pending").exists(), 60)
        refused = WebhookDelivery.objects.get(url=forbidden.url)
        assert forbidden.requests == []
    assert Job.objects.get(pk=job_id).status == "completed"
    received = sorted(receiver.requests, key=lambda r: json.loads(r.body)["type"])
    assert [json.loads(r.body)["type"] for r in received] == [
        "completed", "generation_completed", "generation_completed"]
    for request in received:
        assert _verify(secret, request.headers, request.body)
        assert request.headers["content-type"] == "application/json"
    completed = json.loads(received[0].body)["data"]
    assert completed["job"]["id"] == job_id
    assert completed["job"]["status"] == "completed"
    assert completed["job"]["progress"] == 100
    assert sorted(o["generation"]["id"] for o in completed["outputs"]) == [0, 1]
    gens = sorted(json.loads(r.body)["data"]["generation"]["id"] for r in received[1:])
    assert gens == [0, 1]
    ok = WebhookDelivery.objects.filter(url=receiver.url)
    assert {str(d.webhook_id) for d in ok} == {r.headers["webhook-id"] for r in received}
    assert all(d.status == "succeeded" and d.attempts == 1 and d.last_status_code == 200
               for d in ok)
    # the SSRF guard: a permanent failure, recorded, nothing sent
    assert refused.status == "failed"
    assert refused.attempts == 1
    assert "loopback" in refused.last_error
    assert list(refused.attempt_rows.values_list("status_code", flat=True)) == [None]


@pytest.mark.worker
@pytest.mark.timeout(90)
def test_a_failing_receiver_gets_retries_until_it_answers(api_for, alice, settings,
                                                          start_worker):
    # given: a receiver answering 500 twice, then 200; small backoff for the worker
    client = api_for(alice)
    with WebhookReceiver(statuses=[500, 500]) as flaky:
        settings.OUTBOUND_ALLOW_HOSTS = [f"127.0.0.1:{flaky.port}"]
        start_worker(env={"OUTBOUND_ALLOW_HOSTS": f"127.0.0.1:{flaky.port}",
                          "WEBHOOK_BACKOFF_SECONDS": "0.2"})
        client.post("/api/webhooks/endpoints", {"url": flaky.url, "events": ["completed"]},
                    format="json")
        collection = _prompt_collection(client)

        # when
        client.post(f"/api/collections/{collection['id']}/generations", {}, format="json")

        # then: three attempts, the same webhook-id each time, and the delivery succeeds
        delivery = wait_for(lambda: WebhookDelivery.objects.filter(status="succeeded").first(),
                            60)
        requests = list(flaky.requests)
    assert delivery.attempts == 3
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {str(delivery.webhook_id)}
    detail = client.get(f"/api/webhooks/deliveries/{delivery.id}").json()["data"]
    assert detail["status"] == "succeeded"
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 500, 200]
    assert [a["error"] for a in detail["attempt_log"]] == ["HTTP 500", "HTTP 500", None]


@pytest.mark.worker
@pytest.mark.timeout(90)
def test_a_per_request_webhook_of_the_unified_endpoint_is_delivered(api_for, alice, settings,
                                                                     start_worker, receiver):
    # given: no standing endpoint, only the request's own webhook
    client = api_for(alice)
    settings.OUTBOUND_ALLOW_HOSTS = [f"127.0.0.1:{receiver.port}"]
    start_worker(env={"OUTBOUND_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}"})
    secret = client.get("/api/webhooks/secret").json()["data"]["secret"]

    # when
    response = client.post("/api/collections/generate", {
        "workflow_name": "prompt", "inputs": {"prompt": "a cat"}, "count": 1,
        "webhook": {"url": receiver.url, "events": ["completed"]}}, format="json")

    # then: exactly the completed event, signed
    assert response.status_code == 202, response.json()
    job_id = response.json()["data"]["job"]["id"]
    delivery = wait_for(lambda: WebhookDelivery.objects.filter(status="succeeded").first(), 60)
    assert [(d.event, d.endpoint_id) for d in WebhookDelivery.objects.all()] == [
        ("completed", None)]
    [request] = receiver.requests
    assert _verify(secret, request.headers, request.body)
    body = json.loads(request.body)
    assert body["type"] == "completed" and body["data"]["job"]["id"] == job_id
    assert str(delivery.job_id) == job_id


def _job_with_delivery(user, url: str) -> WebhookDelivery:
    job = Job.objects.create(user=user, name="Collection Generation: x", status="completed",
                             progress=100)
    WebhookEndpoint.objects.create(user=user, url=url, events=["completed"])
    with transaction.atomic():
        webhooks.job_finished(job=job)
    return WebhookDelivery.objects.get(job=job)


def test_another_users_deliveries_and_endpoints_are_404(api_for, alice, bob):
    delivery = _job_with_delivery(alice, "https://example.com/hook")
    endpoint = WebhookEndpoint.objects.get(user=alice)
    client = api_for(bob)

    detail = client.get(f"/api/webhooks/deliveries/{delivery.id}")
    listed = client.get("/api/webhooks/deliveries")
    deleted = client.delete(f"/api/webhooks/endpoints/{endpoint.id}")

    assert detail.status_code == 404
    assert listed.json()["data"]["total"] == 0
    assert deleted.status_code == 404
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, active=True).exists()
    mine = api_for(alice).get("/api/webhooks/deliveries").json()["data"]
    assert [d["id"] for d in mine["items"]] == [str(delivery.id)]


def test_the_secret_is_read_and_rotated(api_for, alice, bob):
    client = api_for(alice)

    first = client.get("/api/webhooks/secret").json()["data"]
    again = client.get("/api/webhooks/secret").json()["data"]
    rotated = client.post("/api/webhooks/secret").json()["data"]

    assert first["secret"] == again["secret"]
    assert first["secret"].startswith("whsec_")
    assert len(base64.b64decode(first["secret"][6:])) == 32
    assert rotated["secret"] != first["secret"] and rotated["rotated_at"] is not None
    assert api_for(bob).get("/api/webhooks/secret").json()["data"]["secret"] != rotated["secret"]


def test_endpoint_input_is_validated(api_for, alice):
    client = api_for(alice)

    bad_event = client.post("/api/webhooks/endpoints",
                            {"url": "https://example.com/h", "events": ["started"]}, format="json")
    bad_scheme = client.post("/api/webhooks/endpoints", {"url": "ftp://example.com/h"},
                             format="json")

    assert bad_event.status_code == 400
    assert bad_scheme.status_code == 400
    assert not WebhookEndpoint.objects.exists()


def test_progress_is_throttled_and_request_webhooks_filter_events(alice, settings):
    settings.WEBHOOK_PROGRESS_INTERVAL_SECONDS = 60
    job = Job.objects.create(user=alice, name="x", status="processing", progress=10,
                             data={"webhook": {"url": "https://example.com/req",
                                               "events": ["progress"]}})
    WebhookEndpoint.objects.create(user=alice, url="https://example.com/all", events=[])

    with transaction.atomic():
        webhooks.job_progress(job=job)
        webhooks.job_progress(job=job)
        job.status = "failed"
        webhooks.job_finished(job=job)
        webhooks.job_finished(job=job)  # the same change recorded twice enqueues once

    rows = sorted(WebhookDelivery.objects.values_list("event", "url"))
    assert rows == [("failed", "https://example.com/all"),
                    ("progress", "https://example.com/all"),
                    ("progress", "https://example.com/req")]


def test_backoff_grows_and_a_delivery_past_its_window_fails(alice, settings):
    settings.WEBHOOK_BACKOFF_SECONDS = [5, 30, 120]
    assert [webhooks.backoff_seconds(n) for n in (1, 2, 3, 4, 9)] == [5, 30, 120, 120, 120]
    settings.WEBHOOK_MAX_AGE_SECONDS = 0
    settings.OUTBOUND_ALLOW_HOSTS = []
    delivery = _job_with_delivery(alice, "http://does-not-resolve.invalid/hook")

    status = webhooks.webhook_deliver(delivery_id=delivery.id)
    again = webhooks.webhook_deliver(delivery_id=delivery.id)

    delivery.refresh_from_db()
    assert status == "failed" and again is None
    assert delivery.status == "failed" and delivery.attempts == 1
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 1
