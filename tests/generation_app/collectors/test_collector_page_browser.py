"""The /collector page in a real browser (headless Chromium on a real uvicorn): a wallet signs in
through the page (EIP-4361 over `personal_sign`) and the page lists what the collector bought and
collected."""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account import Account

from generation_app.collectors.models import MiniappGeneration, MiniappPayment, MiniappUser
from tests.generation_app.collectors.conftest import PRICE_WEI, sign
from tests.workers import WebProcess, outside_playwright

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(60)]

# a stand-in EIP-1193 wallet: the page asks it for an account, a chain and a signature, which
# Python makes with the account's key (window.pySign)
WALLET = """window.ethereum = {request: async ({method, params}) => {
  if (method === 'eth_requestAccounts') return ['%s'];
  if (method === 'eth_chainId') return '0x%x';
  if (method === 'personal_sign') return await window.pySign(params[0]);
  throw new Error('unsupported ' + method);
}};"""


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Any:
    with django_db_blocker.unblock():
        server = WebProcess(tmp_path_factory.mktemp("collector-page")).start()
    yield server
    server.stop()


def _collected(wallet: str, collection: Any) -> None:
    """Three paid generations of `collection` for the collector of `wallet`, one collected."""
    collector = MiniappUser.objects.get(wallet_address=wallet)
    payment = MiniappPayment.objects.create(
        user=collector, collection=collection, amount=3 * PRICE_WEI,
        payment_status=MiniappPayment.Status.CONFIRMED, generations_allowed=3,
        generations_used=1, transaction_hash="0x" + "ab" * 32, blockchain="BASE", chain_id=1,
        method=MiniappPayment.Method.DIRECT)
    MiniappGeneration.objects.create(
        user=collector, collection=collection, payment=payment,
        status=MiniappGeneration.Status.COMPLETED,
        output_data={"steps": [{"id": 1, "nodeName": "prompt",
                                "nodeResponse": {"data": "a cat", "mimeType": "text/plain"}}]})


def test_a_wallet_signs_in_on_the_collector_page_and_sees_its_generations(
        chain, make_sale, transactional_db, web):
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("EMPROPS_CHROMIUM_PATH", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium}")
    # given a collection for sale on the test chain and a wallet in the browser
    sale = make_sale()
    account = Account.create()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context()
            context.expose_function("pySign", lambda message: sign(account, message))
            context.add_init_script(WALLET % (account.address, chain.chain_id))
            page = context.new_page()
            page.goto(web.url + "/collector")
            before = page.inner_text("#collector-status")

            # when the collector signs in with the wallet, then collects, and the page reloads
            page.click("#collector-sign-in")
            page.locator("#collector-sign-out").wait_for(state="visible", timeout=10_000)
            signed_in = page.inner_text("#collector-status")
            outside_playwright(lambda: _collected(account.address, sale.collection))
            page.reload()
            page.locator("#collector-generations figure").wait_for(timeout=10_000)
            seen = {"status": page.inner_text("#collector-status"),
                    "purchases": page.locator("#collector-purchases li").all_inner_texts(),
                    "cards": page.locator("#collector-generations figure").all_inner_texts()}
        finally:
            browser.close()

    # then the page signed the wallet in as a collector and shows its purchase and generation
    assert before == "Not signed in."
    assert signed_in == (f"Signed in as {account.address}: 0 paid, 0 collected, 0 pending.")
    assert seen == {
        "status": f"Signed in as {account.address}: 3 paid, 1 collected, 0 pending.",
        "purchases": ["0xababababab… confirmed: 1 of 3 used"],
        "cards": ["a cat\nFor sale · completed"]}
