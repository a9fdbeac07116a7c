"""Rate limits: exact under concurrency (one atomic Redis count per request, shared by every web
process), and failed authentication throttled per client address."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from django.core.cache import cache
from django.test import Client, RequestFactory

from collections_app.models import Project
from emprops import api
from emprops.accounts.models import User
from emprops.accounts.services import api_key_create
from tests.workers import WebProcess

THREADS, PER_THREAD = 12, 5  # 60 requests, released together, against limits of 20


def _redis() -> Any:
    return api._throttle_redis().client


# ---- real concurrency: two uvicorn processes on one Redis ----------------------------------------


@pytest.fixture
def webs(transactional_db: Any, tmp_path: Any) -> Iterator[list[WebProcess]]:
    """Two web processes (production runs several), started side by side to save time."""
    env = {"RATE_LIMIT_USER": "20/min", "RATE_LIMIT_ANON": "20/min",
           "RATE_LIMIT_AUTH_FAIL": "20/min"}
    procs = [WebProcess(tmp_path, env=env), WebProcess(tmp_path, env=env)]
    starters = [threading.Thread(target=p.start) for p in procs]
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    yield procs
    for proc in procs:
        proc.stop()


def _fire(urls: list[str], headers: dict[str, str]) -> list[httpx.Response]:
    """THREADS x PER_THREAD GETs released together from a barrier, alternating between servers."""
    barrier = threading.Barrier(THREADS)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            barrier.wait(timeout=30)
            for i in range(PER_THREAD):
                response = client.get(urls[(n + i) % len(urls)])
                with lock:
                    responses.append(response)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(responses) == THREADS * PER_THREAD
    return responses


def _assert_enveloped_429s(responses: list[httpx.Response], error_start: str) -> None:
    for refused in (r for r in responses if r.status_code == 429):
        body = refused.json()
        assert body["data"] is None
        assert body["error"].startswith(error_start), body["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60


@pytest.mark.server
@pytest.mark.timeout(120)
def test_concurrent_requests_admit_exactly_the_limit_and_so_do_failed_authentications(alice,
                                                                                       webs):
    # one pair of servers for both limits: starting them is most of this test's time
    _, key = api_key_create(user=alice)
    urls = [f"{w.url}/api/me" for w in webs]

    # when 60 requests with a valid key race against 20/min
    responses = _fire(urls, {"X-API-Key": key})

    # then exactly 20 get through (DRF's stock throttle let 29 through here)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20, sorted(statuses)
    assert statuses.count(429) == 40
    _assert_enveloped_429s(responses, "Request was throttled.")

    # when 60 wrong keys race against 20 failed authentications a minute from this address
    responses = _fire(urls, {"X-API-Key": "ek_wrong"})

    # then exactly 20 are checked (401) and the rest are refused before any check
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) == 20, sorted(statuses)
    assert statuses.count(429) == 40
    _assert_enveloped_429s(responses, "Too many failed authentication attempts")
    # only failures count (the 60 valid keys before them counted nothing): the 20 checked, plus
    # those in flight past the limit that failed and were answered 429 instead of 401
    assert 20 <= int(_redis().get(f"{api.THROTTLE_KEY_PREFIX}auth_fail:127.0.0.1")) <= 60


# ---- the throttle in-process ------------------------------------------------------------------


class ThreePerMinute(api.UserRateThrottle):
    rate = "3/min"


class OnePerMinuteAnon(api.AnonRateThrottle):
    rate = "1/min"


def _request(user: Any = None, **meta: str) -> Any:
    from django.contrib.auth.models import AnonymousUser

    request = RequestFactory().get("/api/me", **meta)
    request.user = user if user is not None else AnonymousUser()
    return request


def _admitted(throttle_class: type[api.RedisRateThrottle], request: Any) -> bool:
    return throttle_class().allow_request(request, None)


def test_the_limit_is_admitted_then_refused_until_the_window_ends(alice):
    request = _request(alice)
    key = f"{api.THROTTLE_KEY_PREFIX}user:{alice.pk}"

    admitted = [_admitted(ThreePerMinute, request) for _ in range(3)]
    refused = ThreePerMinute()

    assert admitted == [True, True, True]
    assert refused.allow_request(request, None) is False
    assert 0 < refused.wait() <= 60
    assert 0 < _redis().pttl(key) <= 60_000
    # the refusal did not push the window's end back
    assert int(_redis().get(key)) == 4

    # when the window ends (its key expires)
    _redis().pexpire(key, 1)
    for _ in range(100):
        if not _redis().exists(key):
            break
        time.sleep(0.01)

    # then a new window admits again
    assert [_admitted(ThreePerMinute, request) for _ in range(4)] == [True, True, True, False]


def test_each_user_and_each_anonymous_address_has_its_own_count(alice, bob):
    for _ in range(3):
        _admitted(ThreePerMinute, _request(alice))
    _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR="10.0.0.1"))

    assert _admitted(ThreePerMinute, _request(alice)) is False
    assert _admitted(ThreePerMinute, _request(bob)) is True
    assert _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR="10.0.0.1")) is False
    assert _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR="10.0.0.2")) is True
    # an authenticated user is not counted by the anonymous rate at all
    assert _admitted(OnePerMinuteAnon, _request(alice)) is True
    assert not _redis().exists(f"{api.THROTTLE_KEY_PREFIX}anon:{alice.pk}")


def test_a_forged_forwarded_for_does_not_give_a_fresh_count(settings):
    _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1"))

    forged = _request(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="2.2.2.2")

    assert _admitted(OnePerMinuteAnon, forged) is False


def test_behind_trusted_proxies_the_address_the_outermost_proxy_saw_counts(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.1"  # REMOTE_ADDR: the proxy; it appended the client's address

    first = _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR=proxy,
                                                 HTTP_X_FORWARDED_FOR="9.9.9.9, 1.1.1.1"))
    other_client = _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR=proxy,
                                                        HTTP_X_FORWARDED_FOR="2.2.2.2"))
    forged_left_hop = _admitted(OnePerMinuteAnon, _request(REMOTE_ADDR=proxy,
                                                           HTTP_X_FORWARDED_FOR="8.8.8.8, 1.1.1.1"))

    assert (first, other_client, forged_left_hop) == (True, True, False)
    assert _redis().exists(f"{api.THROTTLE_KEY_PREFIX}anon:1.1.1.1")


def test_a_count_that_lost_its_expiry_gets_one_back(alice):
    key = f"{api.THROTTLE_KEY_PREFIX}user:{alice.pk}"
    _redis().set(key, 1000)  # no TTL: without repair it would refuse alice for ever

    assert _admitted(ThreePerMinute, _request(alice)) is False
    assert 0 < _redis().pttl(key) <= 60_000


def test_clearing_the_cache_clears_the_counts_too(alice):
    _admitted(ThreePerMinute, _request(alice))
    assert _redis().keys(f"{api.THROTTLE_KEY_PREFIX}*")

    cache.clear()  # what the autouse `_clean_redis` fixture does between tests

    assert _redis().keys(f"{api.THROTTLE_KEY_PREFIX}*") == []


@pytest.fixture
def unresponsive_redis(monkeypatch: Any) -> Iterator[None]:
    """The throttles' Redis accepts connections and never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes the handshakes; nobody ever reads
        hung = api._ThrottleRedis(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        monkeypatch.setattr(api, "_throttle_redis", lambda: hung)
        monkeypatch.setattr(api, "_redis_down_until", 0.0)  # restored to "up" afterwards
        yield
        hung.client.close()


def test_an_unreachable_redis_admits_requests_and_never_answers_500(api_for, alice,
                                                                   unresponsive_redis, caplog):
    client = api_for(alice)

    with caplog.at_level(logging.ERROR, logger="emprops.api"):
        started = time.monotonic()
        first = client.get("/api/me")
        first_seconds = time.monotonic() - started
        started = time.monotonic()
        later = [client.get("/api/me").status_code for _ in range(3)]
        later_seconds = time.monotonic() - started
        wrong_key = Client(HTTP_X_API_KEY="ek_wrong").get("/api/me")

    assert first.status_code == 200
    assert later == [200, 200, 200]
    assert wrong_key.status_code == 401
    # one socket timeout, then Redis is left alone for a while instead of stalling each request
    assert first_seconds < 2
    assert later_seconds < 1
    outages = [r for r in caplog.records if "rate limits not enforced" in r.getMessage()]
    assert len(outages) == 1


# ---- failed authentication, per client address -----------------------------------------------


def _badly_signed_jwt() -> str:
    return jwt.encode({"sub": "someone", "exp": int(time.time()) + 60}, "not-the-key" * 4,
                      algorithm="HS256")


def _good_jwt(settings: Any, sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, settings.JWT_SIGNING_KEY,
                      algorithm="HS256")


def test_after_too_many_failures_an_address_is_refused_even_with_a_correct_credential(
        alice, settings):
    settings.RATE_LIMIT_AUTH_FAIL = "4/min"
    key, raw = api_key_create(user=alice)
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    users_before = User.objects.count()

    # given four failed checks from one address: wrong keys and a badly signed JWT
    failures = [
        attacker.get("/api/me", HTTP_X_API_KEY="ek_guess1").status_code,
        attacker.get("/api/me", HTTP_AUTHORIZATION="Bearer ek_guess2").status_code,
        attacker.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {_badly_signed_jwt()}").status_code,
        attacker.get("/api/me", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code,
    ]

    # when the same address then presents correct credentials
    with_key = attacker.post("/api/projects", {"name": "Mine"}, content_type="application/json",
                             HTTP_X_API_KEY=raw)
    with_jwt = attacker.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {_good_jwt(settings, 'new')}")

    # then they are refused before being checked, and nothing was created or touched
    assert failures == [401, 401, 401, 401]
    assert with_key.status_code == 429
    assert with_key.json()["data"] is None
    assert with_key.json()["error"].startswith("Too many failed authentication attempts")
    assert 1 <= int(with_key["Retry-After"]) <= 60
    assert with_jwt.status_code == 429
    assert not Project.objects.exists()
    assert User.objects.count() == users_before  # the new `sub` was not provisioned
    key.refresh_from_db()
    assert key.last_used_at is None

    # and another address is unaffected
    elsewhere = Client(REMOTE_ADDR="198.51.100.1").get("/api/me", HTTP_X_API_KEY=raw)
    assert elsewhere.status_code == 200


def test_successful_and_anonymous_requests_do_not_count_as_failures(alice, settings):
    settings.RATE_LIMIT_AUTH_FAIL = "3/min"
    _, raw = api_key_create(user=alice)
    client = Client(REMOTE_ADDR="203.0.113.8")

    ok = [client.get("/api/me", HTTP_X_API_KEY=raw).status_code for _ in range(10)]
    anonymous = [client.get("/api/me").status_code for _ in range(5)]
    wrong = [client.get("/api/me", HTTP_X_API_KEY="ek_guess").status_code for _ in range(4)]

    assert ok == [200] * 10
    assert anonymous == [401] * 5
    assert wrong == [401, 401, 401, 429]


def test_a_blocked_address_is_refused_by_the_event_stream_too(transactional_db, alice, settings):
    # transactional: the stream's view closes its database connection when it is done
    settings.RATE_LIMIT_AUTH_FAIL = "1/min"
    _, raw = api_key_create(user=alice)
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    attacker.get("/api/me", HTTP_X_API_KEY="ek_guess")

    response = attacker.get(f"/api/jobs/{uuid.uuid4()}/events", HTTP_X_API_KEY=raw)

    # the stream authenticates outside DRF's views: the same 429, never a 500
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"].startswith("Too many failed authentication attempts")


def test_password_guessing_is_limited_per_address(alice, settings):
    settings.RATE_LIMIT_AUTH_FAIL = "3/min"
    alice.set_password("right-password")
    alice.save()
    guesser = Client(REMOTE_ADDR="203.0.113.20")
    neighbour = Client(REMOTE_ADDR="203.0.113.21")

    guesses = [guesser.post("/api/auth/token", {"username": "alice", "password": f"guess{i}"},
                            content_type="application/json").status_code for i in range(4)]
    right = guesser.post("/api/auth/token", {"username": "alice", "password": "right-password"},
                         content_type="application/json")
    other = neighbour.post("/api/auth/token", {"username": "alice", "password": "right-password"},
                           content_type="application/json")

    assert guesses == [401, 401, 401, 429]
    assert right.status_code == 429 and int(right["Retry-After"]) >= 1
    assert other.status_code == 200


def test_valid_keys_in_flight_together_never_count_as_failed_authentications(alice, settings):
    # given a strict failed-authentication limit and an address already holding 2 failures
    settings.RATE_LIMIT_AUTH_FAIL = "3/min"
    settings.RATE_LIMIT_USER = "1000/min"
    _, key = api_key_create(user=alice)
    client = Client(REMOTE_ADDR="203.0.113.77")
    wrong = [client.get("/api/me", HTTP_X_API_KEY="ek_wrong").status_code for _ in range(2)]

    # when the same address makes many requests with a valid key
    valid = [client.get("/api/me", HTTP_X_API_KEY=key).status_code for _ in range(10)]

    # then none of them is refused or counted, and the next failures hit the limit exactly
    later = [client.get("/api/me", HTTP_X_API_KEY="ek_wrong").status_code for _ in range(2)]
    assert (wrong, valid, later) == ([401, 401], [200] * 10, [401, 429])
    assert int(_redis().get(f"{api.THROTTLE_KEY_PREFIX}auth_fail:203.0.113.77")) == 3
