"""Request bodies against a real uvicorn: a chunked body (no Content-Length) is counted against
MAX_BODY_BYTES and parsed like any other, never silently read as empty."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collections_app.models import Collection, Project
from emprops.accounts.models import CreditsHistory, CreditsHold
from emprops.accounts.services import api_key_create
from tests.workers import WebProcess

LIMIT = 8192


@pytest.fixture
def web(transactional_db: Any, tmp_path: Any) -> Iterator[WebProcess]:
    proc = WebProcess(tmp_path, env={"MAX_BODY_BYTES": str(LIMIT)}).start()
    yield proc
    proc.stop()


def _chunked(body: bytes, size: int = 1024) -> Iterator[bytes]:
    # a generator as content: httpx sends it with Transfer-Encoding: chunked, no Content-Length
    for start in range(0, len(body), size):
        yield body[start:start + size]


def _post_chunked(web: WebProcess, key: str, body: bytes) -> httpx.Response:
    response = httpx.post(f"{web.url}/api/projects/collections", content=_chunked(body),
                          headers={"X-API-Key": key, "Content-Type": "application/json"},
                          timeout=30)
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    return response


def _counts() -> tuple[int, ...]:
    return (Project.objects.count(), Collection.objects.count(), CreditsHold.objects.count(),
            CreditsHistory.objects.count())


@pytest.mark.server
@pytest.mark.timeout(60)
def test_a_chunked_json_body_within_the_limit_is_parsed(alice, web):
    _, key = api_key_create(user=alice)
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a cat"}}]}
    body = json.dumps({"title": "Chunked", "data": data, "description": "x" * 3000}).encode()
    assert 3000 < len(body) < LIMIT

    response = _post_chunked(web, key, body)

    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert created["title"] == "Chunked"
    assert created["description"] == "x" * 3000
    assert [s["nodePayload"] for s in created["data"]["steps"]] == [{"prompt": "a cat"}]
    assert Collection.objects.get(pk=created["id"]).title == "Chunked"


@pytest.mark.server
@pytest.mark.timeout(60)
def test_a_chunked_body_over_the_limit_is_an_enveloped_413_and_creates_nothing(alice, web):
    _, key = api_key_create(user=alice)
    body = json.dumps({"title": "Too big", "description": "x" * (LIMIT + 1)}).encode()
    before = _counts()

    response = _post_chunked(web, key, body)

    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["data"] is None
    assert payload["error"] == f"Request body too large: the limit is {LIMIT} bytes."
    assert payload["details"] == {"limit": LIMIT}
    assert _counts() == before



@pytest.mark.server
@pytest.mark.timeout(60)
def test_an_oversized_chunked_upload_is_refused_as_it_arrives_not_after(alice, tmp_path):
    import socket

    # the hard cap is the largest body any route takes: MAX_UPLOAD_BYTES + 1 MiB (here 1 MiB)
    web = WebProcess(tmp_path, env={"MAX_UPLOAD_BYTES": "0"}).start()
    _, key = api_key_create(user=alice)
    before = _counts()
    sent, answer = 0, b""
    try:
        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
            sock.sendall(b"POST /api/projects/collections HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nX-API-Key: " + key.encode() +
                         b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            sock.settimeout(0.05)
            while sent < 64 * 1024 * 1024:  # bounded: 64 MiB at most
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    pass
                if answer:
                    break
                try:
                    sock.sendall(chunk)
                except OSError:
                    break
                sent += 65536
            sock.settimeout(5)
            while b"Request body too large" not in answer and len(answer) < 65536:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
    finally:
        web.stop()

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"Request body too large" in answer
    assert sent < 8 * 1024 * 1024  # refused near the cap, not after the whole upload
    assert _counts() == before
