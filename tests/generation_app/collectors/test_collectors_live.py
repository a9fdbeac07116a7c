"""Collectors end to end over real HTTP (uvicorn + a Celery worker with its beat) against a real
EVM on loopback, and the two races: one transaction hash submitted by 10 requests at once, and
20 collects at once against 5 paid generations."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from emprops.client import Client
from emprops.client.errors import APIError
from emprops.client.errors import Conflict as ClientConflict
from generation_app.collectors.models import MiniappGeneration, MiniappPayment
from jobs_app.models import Job
from tests.generation_app.collectors.conftest import PRICE_WEI, sign, siwe_message
from tests.peers.evm_chain import EvmChain
from tests.workers import WebProcess, WorkerProcess, wait_for

pytestmark = [pytest.mark.server, pytest.mark.worker, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def platform(django_db_setup: Any, django_db_blocker: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    """One uvicorn server and one worker (its beat runs housekeeping every second)."""
    import redis
    from django.conf import settings

    tmp = tmp_path_factory.mktemp("collectors")
    with django_db_blocker.unblock():
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        worker = WorkerProcess(tmp).start()
        try:
            web = WebProcess(tmp, env={"RATE_LIMIT_USER": "10000/min"}).start()
        except BaseException:
            worker.stop()
            raise
    yield web
    web.stop()
    worker.stop()


@pytest.fixture(autouse=True)
def _jobs_settled(platform: WebProcess, transactional_db: Any) -> Iterator[None]:
    """The shared worker finishes a test's jobs before the database is emptied for the next:
    a TRUNCATE racing the worker's writes deadlocks."""
    yield
    wait_for(lambda: not Job.objects.exclude(status__in=Job.FINISHED).exists(), 120)


def _login(web: WebProcess, chain: EvmChain, account: LocalAccount) -> dict[str, str]:
    host = web.url.removeprefix("http://")
    nonce = httpx.get(f"{web.url}/api/collectors/nonce").json()["data"]["nonce"]
    message = siwe_message(address=account.address, domain=host, chain_id=chain.chain_id,
                           nonce=nonce)
    response = httpx.post(f"{web.url}/api/collectors/login", timeout=60,
                          json={"message": message, "signature": sign(account, message)})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['data']['access']}"}


def _together(n: int, call: Callable[[httpx.Client], int]) -> list[int]:
    """`call` from n threads released together by a barrier; the statuses, sorted."""
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait(timeout=30)
            status = call(client)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=fire) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return sorted(statuses)


@pytest.mark.django_db(transaction=True)
def test_a_collector_pays_for_three_and_collects_three_outputs(platform, chain, make_sale,
                                                               api_for):
    sale = make_sale(editions=10)
    account = chain.funded_account()
    collection_id = str(sale.collection.pk)
    # the Python client, as a collector would use it: sign in with the wallet key
    anonymous = Client(platform.url)
    message = siwe_message(address=account.address, domain=platform.url.removeprefix("http://"),
                           chain_id=chain.chain_id, nonce=anonymous.collectors.nonce())
    login = anonymous.collectors.login(message, sign(account, message))
    collector = Client(platform.url, token=login["access"], timeout=60)
    tx = chain.send(account, to=sale.payout, value=3 * PRICE_WEI)

    bought = collector.collectors.purchase(collection_id, tx)

    assert (bought["payment_status"], bought["generations_allowed"]) == ("confirmed", 3)
    started = [collector.collectors.collect(collection_id) for _ in range(3)]
    assert [g["status"] for g in started] == ["processing"] * 3
    with pytest.raises(ClientConflict) as fourth:
        collector.collectors.collect(collection_id)
    assert (fourth.value.status, fourth.value.details["reason"]) == (409, "no_paid_generations")
    assert "No paid generations left" in str(fourth.value)
    # the worker runs the owner's jobs; housekeeping records each output on its collect
    wait_for(lambda: [g["status"] for g in collector.collectors.generations()]
             == ["completed"] * 3, 120)
    outputs = [g["output_data"] for g in collector.collectors.generations()]
    assert all(o["steps"][0]["nodeResponse"]["data"] in ("a cat", "a owl") for o in outputs)
    assert Job.objects.filter(user=sale.owner, job_type="collect", status="completed").count() == 3
    assert collector.collectors.me()["generations_used"] == 3
    # a reused or underpaid transaction is refused
    with pytest.raises(ClientConflict) as reused:
        collector.collectors.purchase(collection_id, tx)
    assert reused.value.details["reason"] == "already_used"
    cheap = chain.send(account, to=sale.payout, value=PRICE_WEI // 2)
    with pytest.raises(APIError) as underpaid:
        collector.collectors.purchase(collection_id, cheap)
    assert (underpaid.value.status, underpaid.value.details["reason"]) == (422, "underpaid")
    assert MiniappPayment.objects.count() == 1
    # the owner sees the sale
    sales = api_for(sale.owner).get(f"/api/collections/{collection_id}/sales").json()
    assert [(s["transaction_hash"], s["generations_used"], s["collector"]["wallet_address"])
            for s in sales["data"]["items"]] == [(tx.lower(), 3, account.address)]


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_purchases_of_one_transaction_grant_once(platform, chain, make_sale):
    sale = make_sale(editions=10)
    account = chain.funded_account()
    headers = _login(platform, chain, account)
    url = f"{platform.url}/api/collections/{sale.collection.pk}/purchases"
    tx = chain.send(account, to=sale.payout, value=2 * PRICE_WEI)

    statuses = _together(10, lambda c: c.post(url, headers=headers,
                                              json={"tx_hash": tx}).status_code)

    assert statuses == [201] + [409] * 9
    payment = MiniappPayment.objects.get()
    assert payment.generations_allowed == 2
    sale.listing.refresh_from_db()
    assert sale.listing.editions_reserved == 2


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_collects_spend_exactly_five_paid(platform, chain, make_sale):
    sale = make_sale()
    account = chain.funded_account()
    headers = _login(platform, chain, account)
    base = f"{platform.url}/api/collections/{sale.collection.pk}"
    tx = chain.send(account, to=sale.payout, value=5 * PRICE_WEI)
    assert httpx.post(f"{base}/purchases", headers=headers, json={"tx_hash": tx},
                      timeout=60).status_code == 201

    statuses = _together(20, lambda c: c.post(f"{base}/collect", headers=headers).status_code)

    assert statuses == [202] * 5 + [409] * 15
    assert Job.objects.filter(user=sale.owner, job_type="collect").count() == 5
    assert MiniappGeneration.objects.count() == 5
    assert MiniappPayment.objects.get().generations_used == 5
