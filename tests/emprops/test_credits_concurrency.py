"""Credits under real concurrency: 20 HTTP requests released together against 10 credits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from emprops.accounts.models import CreditsBalance, CreditsHistory, CreditsHold
from emprops.accounts.services import api_key_create
from jobs_app.models import Job
from tests.workers import WebProcess, wait_for


@pytest.fixture
def web(transactional_db: Any, tmp_path: Any) -> Iterator[WebProcess]:
    proc = WebProcess(tmp_path, env={"RATE_LIMIT_USER": "10000/min"}).start()
    yield proc
    proc.stop()


@pytest.mark.server
@pytest.mark.worker
@pytest.mark.timeout(180)
def test_twenty_requests_from_a_barrier_accept_exactly_ten(alice, web, worker):
    _, key = api_key_create(user=alice)
    headers = {"X-API-Key": key}
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "one credit"}}]}
    collection = httpx.post(f"{web.url}/api/projects/collections", headers=headers,
                            json={"title": "Cheap", "data": data}).json()["data"]
    url = f"{web.url}/api/collections/{collection['id']}/generations"
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait(timeout=30)
            status = client.post(url, headers=headers, json={"count": 1}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=fire) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sorted(statuses) == [202] * 10 + [402] * 10
    assert Job.objects.filter(user=alice).count() == 10
    wait_for(lambda: Job.objects.filter(user=alice, status="completed").count() == 10, 120)
    balance = CreditsBalance.objects.get(user=alice, credit_type="permanent").balance
    assert balance == Decimal(0)
    assert CreditsHistory.objects.filter(user=alice, flow="out").count() == 10
    assert not CreditsHold.objects.filter(user=alice, status="held").exists()
