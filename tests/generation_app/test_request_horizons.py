"""Refused at creation, not later: an API key born expired, a `run_at` past MAX_RUN_AT_DAYS, and
a webhook URL the SSRF guard would refuse at delivery. Each is an enveloped 400 naming the field,
and a refused request leaves no row and holds no credits."""

from __future__ import annotations

import ipaddress
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from collections_app.models import Collection, Component, Project
from emprops.accounts.models import CreditsHistory, CreditsHold, UserApiKey
from emprops.errors import ValidationFailed
from generation_app.models import WebhookEndpoint
from generation_app.services import webhooks
from jobs_app.models import Job

GENERATE = "/api/collections/generate"
ENDPOINTS = "/api/webhooks/endpoints"
# literal non-public addresses, in the spellings the guard knows, and loopback names
REFUSED_URLS = [
    "http://127.0.0.1:9/hook",
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://localhost:8000/hook",
    "http://api.localhost/hook",
]


def _counts() -> dict[str, int]:
    return {"projects": Project.objects.count(), "collections": Collection.objects.count(),
            "components": Component.objects.count(), "jobs": Job.objects.count(),
            "holds": CreditsHold.objects.count(), "credits": CreditsHistory.objects.count(),
            "endpoints": WebhookEndpoint.objects.count()}


def _generate(**extra: object) -> dict[str, object]:
    return {"workflow_name": "prompt", "inputs": {"prompt": "a cat"}, **extra}


def _assert_400(response, details=None):
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["data"] is None and body["error"]
    if details is not None:
        assert body["details"] == details
    return body


@pytest.fixture
def no_dns(monkeypatch):
    """Creation decides without resolving names: a lookup of one fails the test (addresses,
    such as the test Redis's, still connect)."""
    real = socket.getaddrinfo

    def literals_only(host, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise AssertionError(f"a DNS lookup at creation: {host!r}") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", literals_only)


# ---- API keys -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expires_at", [
    (timezone.now() - timedelta(days=1)).isoformat(),
    "2001-01-01T00:00:00Z",
], ids=["yesterday", "2001"])  # stable ids: pytest-xdist requires every process to collect alike
def test_an_api_key_cannot_be_created_already_expired(api_for, alice, expires_at):
    client = api_for(alice)
    keys = UserApiKey.objects.count()

    response = client.post("/api/api-keys", {"name": "old", "expires_at": expires_at},
                           format="json")

    _assert_400(response, {"expires_at": ["Must be a time in the future."]})
    assert UserApiKey.objects.count() == keys


def test_an_api_key_may_expire_in_the_future_near_or_far(api_for, alice):
    client = api_for(alice)
    soon = timezone.now() + timedelta(minutes=5)

    near = client.post("/api/api-keys", {"expires_at": soon.isoformat()}, format="json")
    far = client.post("/api/api-keys", {"expires_at": "9999-12-31T23:59:59Z"}, format="json")
    overflow = client.post("/api/api-keys", {"expires_at": "9999-12-31T23:59:59-05:00"},
                           format="json")

    assert near.status_code == 201 and far.status_code == 201, (near.json(), far.json())
    assert UserApiKey.objects.get(pk=near.json()["data"]["id"]).expires_at == soon
    assert far.json()["data"]["expires_at"].startswith("9999-12-31T23:59:59")
    _assert_400(overflow)
    assert UserApiKey.objects.filter(user=alice).count() == 3  # the test client's key too


# ---- run_at -------------------------------------------------------------------------------------

def test_a_run_at_further_than_max_run_at_days_is_refused_and_holds_nothing(api_for, alice,
                                                                            settings):
    settings.MAX_RUN_AT_DAYS = 30
    before = _counts()
    too_far = timezone.now() + timedelta(days=30, minutes=5)

    responses = [api_for(alice).post(GENERATE, _generate(run_at=run_at), format="json")
                 for run_at in (too_far.isoformat(), "9999-12-31T23:59:59Z")]

    for response in responses:
        body = _assert_400(response, {"run_at": ["Must be at most 30 days ahead."]})
        assert body["error"] == "run_at is more than 30 days ahead."
    assert _counts() == before


def test_a_run_at_within_the_horizon_is_accepted_with_credits_held(api_for, alice, settings):
    settings.MAX_RUN_AT_DAYS = 30
    run_at = timezone.now() + timedelta(days=29)

    response = api_for(alice).post(GENERATE, _generate(run_at=run_at.isoformat()), format="json")

    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["data"]["job"]["id"])
    assert job.not_before == run_at
    assert CreditsHold.objects.filter(job_id=job.id).count() == 1


def test_a_batch_item_with_a_run_at_too_far_refuses_the_whole_batch(api_for, alice, settings):
    settings.MAX_RUN_AT_DAYS = 1
    before = _counts()
    items = [_generate(), _generate(run_at=(timezone.now() + timedelta(days=2)).isoformat())]

    response = api_for(alice).post(f"{GENERATE}/batch", {"items": items}, format="json")

    body = _assert_400(response)
    assert body["details"]["items"][1]["details"] == {"run_at": ["Must be at most 1 days ahead."]}
    assert _counts() == before


# ---- webhook URLs -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_webhook_endpoint_the_guard_would_refuse_is_refused_at_creation(api_for, alice,
                                                                          no_dns, url):
    before = _counts()

    response = api_for(alice).post(ENDPOINTS, {"url": url, "events": ["completed"]},
                                   format="json")

    _assert_400(response)
    assert _counts() == before


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_request_webhook_the_guard_would_refuse_is_refused_and_holds_nothing(api_for, alice,
                                                                               no_dns, url):
    before = _counts()

    response = api_for(alice).post(GENERATE, _generate(webhook={"url": url}), format="json")

    _assert_400(response)
    assert _counts() == before


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:9/hook", "non-public address (loopback)"),
    ("http://0x7f000001/hook", "non-public address (loopback)"),
    ("http://0177.0.0.1/hook", "not a valid URL"),
    ("http://[fd00:ec2::254]/", "non-public address (cloud metadata)"),
    ("http://100.64.0.1/", "non-public address (shared (carrier-grade NAT))"),
    ("http://localhost./hook", "the host is a loopback name"),
    ("ftp://example.com/hook", "scheme 'ftp' is not allowed (http or https only)"),
])
def test_the_check_is_the_guards_decision(no_dns, settings, url, reason):
    settings.OUTBOUND_ALLOW_HOSTS = []

    with pytest.raises(ValidationFailed) as caught:
        webhooks.webhook_url_check(url=url, field="webhook.url")

    message = f"Webhooks cannot be sent to this URL: {reason}."
    assert caught.value.details == {"webhook.url": [message]}
    assert caught.value.message == f"Invalid input: webhook.url: {message}"


def test_allow_listed_receivers_and_host_names_are_accepted_without_dns(api_for, alice, no_dns,
                                                                       settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1:8123"]
    client = api_for(alice)

    listed = client.post(ENDPOINTS, {"url": "http://127.0.0.1:8123/hook"}, format="json")
    named = client.post(ENDPOINTS, {"url": "https://hooks.example.com/x?token=t"}, format="json")
    other_port = client.post(ENDPOINTS, {"url": "http://127.0.0.1:8124/hook"}, format="json")
    request_hook = client.post(GENERATE, _generate(
        webhook={"url": "http://127.0.0.1:8123/hook"}), format="json")

    assert (listed.status_code, named.status_code) == (201, 201), (listed.json(), named.json())
    _assert_400(other_port)
    assert request_hook.status_code == 202, request_hook.json()
    assert sorted(WebhookEndpoint.objects.values_list("url", flat=True)) == [
        "http://127.0.0.1:8123/hook", "https://hooks.example.com/x?token=t"]
