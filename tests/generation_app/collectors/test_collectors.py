"""Collectors in-process, against a real EVM on loopback (eth-tester's py-evm behind JSON-RPC):
wallet sign-in, both payment forms and every refusal, pending confirmations, collects."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from eth_account import Account
from rest_framework.test import APIClient

from emprops.accounts.models import CreditsBalance, CreditsHistory, User
from generation_app.collectors.models import (
    CollectionListing,
    MiniappGeneration,
    MiniappPayment,
    MiniappUser,
    SiweNonce,
)
from generation_app.collectors.services.collects import collects_settle
from generation_app.collectors.services.purchases import purchases_recheck_due
from generation_app.services.control import job_cancel
from jobs_app.models import Job
from tests.generation_app.collectors.conftest import (
    ONCHAIN_ID,
    PRICE_WEI,
    sign,
    siwe_message,
)
from tests.peers.evm_chain import REVERTING_CONTRACT

pytestmark = pytest.mark.timeout(120)


def _buy(client, collection, tx_hash):
    return client.post(f"/api/collections/{collection.pk}/purchases", {"tx_hash": tx_hash},
                       format="json")


def _nothing_recorded(listing, reserved=0):
    listing.refresh_from_db()
    return MiniappPayment.objects.count() == 0 and listing.editions_reserved == reserved


# ---- sign-in ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_wallet_signs_in_as_a_collector_with_no_credits(chain, make_sale, sign_in):
    make_sale()
    account = Account.create()
    client = APIClient()

    response = sign_in(client, account, farcaster_id=7, farcaster_username="ada")

    assert response.status_code == 200
    body = response.json()["data"]
    assert body["token_type"] == "Bearer"
    assert body["collector"]["wallet_address"] == account.address
    assert body["collector"]["farcaster_username"] == "ada"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    me = client.get("/api/collectors/me").json()["data"]
    assert me["collector"]["wallet_address"] == account.address
    assert (me["generations_paid"], me["generations_used"], me["generations_pending"]) == (0, 0, 0)
    user = User.objects.get(collector__wallet_address=account.address)
    assert not CreditsHistory.objects.filter(user=user).exists()
    assert sum(b.balance for b in CreditsBalance.objects.filter(user=user)) == Decimal(0)
    # the same wallet again is the same collector
    again = sign_in(APIClient(), account)
    assert again.json()["data"]["collector"]["id"] == body["collector"]["id"]
    assert MiniappUser.objects.filter(wallet_address=account.address).count() == 1


@pytest.mark.django_db
def test_sign_in_refusals_name_their_reason_and_create_no_collector(chain, make_sale):
    make_sale()
    account, other = Account.create(), Account.create()
    client = APIClient()

    def attempt(*, domain="testserver", chain_id=None, nonce=None, signer=account,
                expiration=None):
        nonce = nonce or client.get("/api/collectors/nonce").json()["data"]["nonce"]
        message = siwe_message(address=account.address, domain=domain,
                               chain_id=chain_id or chain.chain_id, nonce=nonce,
                               expiration=expiration)
        response = client.post("/api/collectors/login",
                               {"message": message, "signature": sign(signer, message)},
                               format="json")
        return response.status_code, (response.json().get("details") or {}).get("reason")

    expired = SiweNonce.objects.create(nonce="expired0nonce0000",
                                       expires_at=timezone.now() - timedelta(seconds=1))

    assert attempt(domain="evil.example") == (401, "wrong_domain")
    assert attempt(chain_id=1) == (401, "wrong_chain")
    assert attempt(signer=other) == (401, "bad_signature")
    assert attempt(nonce="neverissued12345") == (401, "bad_nonce")
    assert attempt(nonce=expired.nonce) == (401, "bad_nonce")
    assert attempt(expiration="2020-01-01T00:00:00.000Z") == (401, "expired")
    not_siwe = client.post("/api/collectors/login",
                           {"message": "hello", "signature": "0x" + "00" * 65}, format="json")
    assert not_siwe.status_code == 400
    assert not MiniappUser.objects.exists()
    # a nonce signs in once
    nonce = client.get("/api/collectors/nonce").json()["data"]["nonce"]
    assert attempt(nonce=nonce) == (200, None)
    assert attempt(nonce=nonce) == (401, "bad_nonce")
    assert MiniappUser.objects.count() == 1


# ---- purchases ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_direct_payment_buys_value_over_price_generations(chain, make_sale, collector_client):
    sale = make_sale(editions=10)
    client, account = collector_client()
    tx = chain.send(account, to=sale.payout, value=3 * PRICE_WEI + 123)

    response = _buy(client, sale.collection, tx)

    assert response.status_code == 201
    body = response.json()["data"]
    assert (body["payment_status"], body["method"], body["generations_allowed"],
            body["generations_left"], body["amount"]) == (
        "confirmed", "direct", 3, 3, str(3 * PRICE_WEI + 123))
    assert body["transaction_hash"] == tx.lower()
    # confirmed when it was recorded: one instant, not confirmed before it was created
    payment = MiniappPayment.objects.get(transaction_hash=tx.lower())
    assert payment.confirmed_at == payment.created_at
    sale.listing.refresh_from_db()
    assert sale.listing.editions_reserved == 3
    # the owner sees the sale and the collector
    owner = APIClient()
    owner.force_authenticate(sale.owner)
    sales = owner.get(f"/api/collections/{sale.collection.pk}/sales").json()["data"]
    assert [(s["transaction_hash"], s["collector"]["wallet_address"]) for s in sales["items"]] == [
        (tx.lower(), account.address)]
    collectors = owner.get(f"/api/collections/{sale.collection.pk}/collectors").json()["data"]
    assert [(c["wallet_address"], c["generations_paid"], c["wei_paid"])
            for c in collectors["items"]] == [(account.address, 3, str(3 * PRICE_WEI + 123))]


@pytest.mark.django_db
def test_a_mint_call_buys_its_quantity(chain, make_sale, collector_client):
    sale = make_sale(batch_max_tokens=5)
    client, account = collector_client()
    data = chain.mint_data(collection_id=ONCHAIN_ID, owner=account.address, quantity=4)
    tx = chain.send(account, to=sale.mint_contract, value=4 * PRICE_WEI, data=data)

    response = _buy(client, sale.collection, tx)

    assert response.status_code == 201
    body = response.json()["data"]
    assert (body["method"], body["generations_allowed"], body["payment_status"]) == (
        "mint", 4, "confirmed")


@pytest.mark.django_db
def test_every_refusal_names_its_reason_and_records_nothing(chain, make_sale, collector_client,
                                                            make_user):
    sale = make_sale(batch_max_tokens=3, editions=5)
    client, account = collector_client()
    stranger = chain.funded_account()
    reverting = chain.deploy(stranger, REVERTING_CONTRACT)

    def mint(quantity=1, *, value=None, collection_id=ONCHAIN_ID, owner=None, to=None,
             sender=account):
        data = chain.mint_data(collection_id=collection_id, owner=owner or account.address,
                               quantity=quantity)
        return chain.send(sender, to=to or sale.mint_contract,
                          value=PRICE_WEI * quantity if value is None else value, data=data)

    cases = {
        "wrong_recipient": (422, chain.send(account, to=Account.create().address,
                                            value=PRICE_WEI)),
        "underpaid": (422, chain.send(account, to=sale.payout, value=PRICE_WEI - 1)),
        "unknown_transaction": (422, "0x" + "ab" * 32),
        "wrong_sender": (422, chain.send(stranger, to=sale.payout, value=PRICE_WEI)),
        "wrong_collection": (422, mint(collection_id=ONCHAIN_ID + 1)),
        "wrong_owner": (422, mint(owner=stranger.address)),
        "bad_quantity": (422, mint(4)),
        "not_a_mint_call": (422, chain.send(account, to=sale.mint_contract, value=PRICE_WEI,
                                            data="0xdeadbeef")),
        "sold_out": (409, chain.send(account, to=sale.payout, value=6 * PRICE_WEI)),
    }
    for reason, (status, tx) in cases.items():
        response = _buy(client, sale.collection, tx)
        assert (reason, response.status_code, response.json()["details"]["reason"]) == (
            reason, status, reason)
        assert response.json()["error"]
        assert _nothing_recorded(sale.listing)
    underpaid_mint = _buy(client, sale.collection, mint(2, value=2 * PRICE_WEI - 1))
    assert (underpaid_mint.status_code, underpaid_mint.json()["details"]["reason"]) == (
        422, "underpaid")

    # reverted: the mint contract is a contract that reverts every call
    sale.chain_config.mint_contract_address = reverting
    sale.chain_config.save()
    reverted = _buy(client, sale.collection, mint(to=reverting))
    assert (reverted.status_code, reverted.json()["details"]["reason"]) == (422, "reverted")

    # wrong chain: a collection sold on another chain id (same node)
    other = make_sale(blockchain="ETHEREUM")
    other.chain_config.chain_id = 1
    other.chain_config.save()
    wrong_chain = _buy(client, other.collection,
                       chain.send(account, to=other.payout, value=PRICE_WEI))
    assert (wrong_chain.status_code, wrong_chain.json()["details"]["reason"]) == (
        422, "wrong_chain")
    assert _nothing_recorded(sale.listing)

    # already used: a hash pays once, ever
    tx = chain.send(account, to=sale.payout, value=PRICE_WEI)
    assert _buy(client, sale.collection, tx).status_code == 201
    again = _buy(client, sale.collection, tx)
    assert (again.status_code, again.json()["details"]["reason"]) == (409, "already_used")
    assert MiniappPayment.objects.count() == 1


@pytest.mark.django_db
def test_collections_not_sold_on_an_evm_chain_or_not_published_are_refused(
        chain, make_sale, collector_client, api_for, alice):
    sale = make_sale()
    client, account = collector_client()
    tx = chain.send(account, to=sale.payout, value=PRICE_WEI)
    tezos = make_sale(blockchain="TEZOS")
    draft = make_sale(publish=False)

    on_tezos = _buy(client, tezos.collection, tx)
    unpublished = _buy(client, draft.collection, tx)
    not_a_collector = _buy(api_for(alice), sale.collection, tx)

    assert (on_tezos.status_code, on_tezos.json()["details"]["reason"]) == (
        422, "unsupported_chain")
    assert unpublished.status_code == 404
    assert (not_a_collector.status_code, not_a_collector.json()["details"]["reason"]) == (
        403, "not_a_collector")
    assert not MiniappPayment.objects.exists()


@pytest.mark.django_db
def test_a_payment_waits_for_its_confirmations(chain, make_sale, collector_client):
    sale = make_sale(confirmations=3)
    client, account = collector_client()
    tx = chain.send(account, to=sale.payout, value=2 * PRICE_WEI)

    response = _buy(client, sale.collection, tx)

    assert response.status_code == 202
    assert response.json()["data"]["payment_status"] == "pending"
    assert response.json()["data"]["generations_left"] == 0
    refused = client.post(f"/api/collections/{sale.collection.pk}/collect")
    assert (refused.status_code, refused.json()["details"]["reason"]) == (
        409, "no_paid_generations")
    payment = MiniappPayment.objects.get()
    assert payment.next_attempt_at > timezone.now()
    assert purchases_recheck_due() == {"confirmed": 0, "failed": 0, "pending": 0}  # not due yet

    MiniappPayment.objects.update(next_attempt_at=timezone.now())
    assert purchases_recheck_due() == {"confirmed": 0, "failed": 0, "pending": 1}  # 1 of 3
    chain.mine(2)
    MiniappPayment.objects.update(next_attempt_at=timezone.now())
    assert purchases_recheck_due() == {"confirmed": 1, "failed": 0, "pending": 0}

    payment.refresh_from_db()
    assert (payment.payment_status, payment.generations_allowed, payment.attempts) == (
        "confirmed", 2, 3)
    assert client.post(f"/api/collections/{sale.collection.pk}/collect").status_code == 202


# ---- collects -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_collects_spend_paid_generations_as_owner_jobs(chain, make_sale, collector_client):
    sale = make_sale()
    client, account = collector_client()
    assert _buy(client, sale.collection,
                chain.send(account, to=sale.payout, value=2 * PRICE_WEI)).status_code == 201
    url = f"/api/collections/{sale.collection.pk}/collect"

    first, second, third = client.post(url), client.post(url), client.post(url)

    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 409)
    assert third.json()["details"] == {"reason": "no_paid_generations", "paid": 2}
    jobs = Job.objects.filter(user=sale.owner, job_type="collect")
    assert jobs.count() == 2
    assert all(account.address in j.name for j in jobs)
    rows = MiniappGeneration.objects.order_by("id")
    assert [(r.status, r.job.user_id) for r in rows] == [("processing", sale.owner.pk)] * 2
    mine = client.get("/api/collectors/me/generations").json()["data"]
    assert mine["total"] == 2
    assert MiniappPayment.objects.get().generations_used == 2

    # a collect whose job fails (here: the owner cancels it) gives its paid generation back
    job_cancel(user=sale.owner, job_id=rows[0].job_id)
    assert collects_settle() == {"completed": 0, "failed": 1}
    assert collects_settle() == {"completed": 0, "failed": 0}  # once
    rows[0].refresh_from_db()
    assert rows[0].status == "failed"
    assert MiniappPayment.objects.get().generations_used == 1
    assert client.post(url).status_code == 202


@pytest.mark.django_db
def test_an_owner_out_of_credits_makes_the_collect_a_402_that_spends_nothing(
        chain, make_sale, collector_client):
    sale = make_sale()
    CreditsBalance.objects.filter(user=sale.owner).update(balance=0)
    client, account = collector_client()
    assert _buy(client, sale.collection,
                chain.send(account, to=sale.payout, value=PRICE_WEI)).status_code == 201

    response = client.post(f"/api/collections/{sale.collection.pk}/collect")

    assert response.status_code == 402
    assert response.json()["details"] == {"reason": "owner_out_of_credits"}
    assert MiniappPayment.objects.get().generations_used == 0
    assert not MiniappGeneration.objects.exists()
    assert not Job.objects.filter(user=sale.owner).exists()


@pytest.mark.django_db
def test_collectors_see_only_their_own_and_owners_only_their_sales(
        chain, make_sale, collector_client, api_for, bob):
    sale = make_sale()
    client, account = collector_client()
    other, _ = collector_client()
    assert _buy(client, sale.collection,
                chain.send(account, to=sale.payout, value=PRICE_WEI)).status_code == 201
    assert client.post(f"/api/collections/{sale.collection.pk}/collect").status_code == 202

    assert other.get("/api/collectors/me/generations").json()["data"]["total"] == 0
    assert other.get("/api/collectors/me/purchases").json()["data"]["total"] == 0
    assert other.get(f"/api/collections/{sale.collection.pk}/sales").status_code == 404
    assert api_for(bob).get(f"/api/collections/{sale.collection.pk}/sales").status_code == 404
    assert api_for(bob).get("/api/collectors/me").status_code == 403
    # the collect's job is the owner's: the collector cannot read it
    job_id = MiniappGeneration.objects.get().job_id
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    assert CollectionListing.objects.get(pk=sale.listing.pk).editions_reserved == 1


# ---- admin --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_staff_configure_a_chain_in_admin_with_a_checked_url_address_and_abi(client, staff,
                                                                              chain):
    from generation_app.collectors.models import ChainConfig
    from tests.peers.evm_chain import MINT_ABI

    client.force_login(staff)
    form = {"blockchain": "BASE", "chain_id": chain.chain_id, "required_confirmations": 2,
            "enabled": "on"}

    bad = client.post("/admin/collectors/chainconfig/add/", {
        **form, "rpc_url": "file:///etc/passwd", "mint_contract_address": "0x123",
        "mint_contract_abi": '[{"type": "function", "name": "transfer", "inputs": []}]'})
    assert bad.status_code == 200  # the form again, with its errors
    errors = bad.context["adminform"].form.errors
    assert errors["rpc_url"] == ["Must start with http:// or https://."]
    assert errors["mint_contract_address"] == [
        "Not an Ethereum address (0x followed by 40 hex digits)."]
    assert errors["mint_contract_abi"] == ["The ABI has no `mint` function."]
    assert not ChainConfig.objects.exists()

    address = Account.create().address
    good = client.post("/admin/collectors/chainconfig/add/", {
        **form, "rpc_url": chain.url, "mint_contract_address": address.lower(),
        "mint_contract_abi": json.dumps(MINT_ABI)})
    assert good.status_code == 302
    config = ChainConfig.objects.get()
    assert (config.rpc_url, config.mint_contract_address, config.required_confirmations) == (
        chain.url, address, 2)
    assert client.get("/admin/collectors/miniapppayment/").status_code == 200


@pytest.mark.django_db
def test_staff_can_list_only_collections_on_an_evm_chain(client, staff, alice):
    from collections_app.models import Collection
    from collections_app.services import collection_create

    # given collections on no blockchain (as the demo's are), on TEZOS and on BASE
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a cat"}}]}
    unset, tezos, base = (collection_create(user=alice, data=data, fields={"title": title})
                          for title in ("Unset", "Tezos", "Base"))
    Collection.objects.filter(pk=tezos.pk).update(blockchain="TEZOS")
    Collection.objects.filter(pk=base.pk).update(blockchain="BASE")
    client.force_login(staff)
    form = {"price_wei": PRICE_WEI, "payout_address": Account.create().address}

    # when staff list each of them in admin
    refused = [client.post("/admin/collectors/collectionlisting/add/",
                           {**form, "collection": c.pk}) for c in (unset, tezos)]
    listed = client.post("/admin/collectors/collectionlisting/add/", {**form, "collection": base.pk})

    # then the two that could never be sold are the form again, saying why and what to do
    assert [r.status_code for r in refused] == [200, 200]
    assert [r.context["adminform"].form.errors["collection"] for r in refused] == [
        ["This collection is on no blockchain: set its blockchain to Ethereum or Base "
         "(Collections) before listing it."],
        ["This collection is on TEZOS, not an EVM chain: set its blockchain to Ethereum or Base "
         "(Collections) before listing it."]]
    assert listed.status_code == 302
    assert list(CollectionListing.objects.values_list("collection_id", flat=True)) == [base.pk]
    assert "<td class=\"field-blockchain\">BASE</td>" in client.get(
        "/admin/collectors/collectionlisting/").content.decode()


@pytest.mark.django_db
def test_the_collector_page_is_a_shell_under_the_gallery_csp(client):
    response = client.get("/collector")

    assert response.status_code == 200
    assert response["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'")
    content = response.content.decode()
    assert 'src="/static/collectors/collector.js"' in content
    assert 'id="collector-sign-in"' in content


@pytest.mark.django_db
@pytest.mark.parametrize("signature", ["0x" + "00" * 65, "0x" + "ff" * 65, "0x" + "11" * 64 + "05"])
def test_a_malformed_signature_is_a_401_not_a_500(chain, make_sale, signature):
    make_sale()
    account, client = Account.create(), APIClient()
    nonce = client.get("/api/collectors/nonce").json()["data"]["nonce"]
    message = siwe_message(address=account.address, domain="testserver",
                           chain_id=chain.chain_id, nonce=nonce)

    response = client.post("/api/collectors/login", {"message": message, "signature": signature},
                           format="json")

    assert (response.status_code, response.json()["details"]) == (401, {"reason": "bad_signature"})
    assert not MiniappUser.objects.exists()
    assert SiweNonce.objects.get(nonce=nonce).used_at is None


@pytest.mark.django_db
def test_a_pending_payment_that_reverts_when_mined_fails_and_frees_its_editions(
        make_sale, sign_in):
    from tests.peers.evm_chain import EvmChain

    with EvmChain(auto_mine=False) as unmined:
        sale = make_sale(editions=3)
        sale.chain_config.rpc_url, sale.chain_config.chain_id = unmined.url, unmined.chain_id
        sale.chain_config.save()
        account = unmined.funded_account()
        deployer = unmined.funded_account()
        reverting_tx = unmined.send(deployer, to=None, data=REVERTING_CONTRACT)
        unmined.mine(1)
        reverting = unmined.w3.eth.get_transaction_receipt(reverting_tx)["contractAddress"]
        sale.chain_config.mint_contract_address = reverting
        sale.chain_config.save()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer " + sign_in(client, account).json()[
            "data"]["access"])
        data = unmined.mint_data(collection_id=ONCHAIN_ID, owner=account.address, quantity=1)
        tx = unmined.send(account, to=reverting, value=PRICE_WEI, data=data)

        response = _buy(client, sale.collection, tx)  # not mined yet: pending

        assert (response.status_code, response.json()["data"]["payment_status"]) == (
            202, "pending")
        sale.listing.refresh_from_db()
        assert sale.listing.editions_reserved == 1
        unmined.mine(1)
        MiniappPayment.objects.update(next_attempt_at=timezone.now())
        assert purchases_recheck_due() == {"confirmed": 0, "failed": 1, "pending": 0}
        payment = MiniappPayment.objects.get()
        assert (payment.payment_status, payment.failure_reason) == (
            "failed", "The transaction reverted on chain.")
        sale.listing.refresh_from_db()
        assert sale.listing.editions_reserved == 0


def test_loading_the_ethereum_libraries_keeps_the_recursion_limit():
    # py_ecc raises it to 100,000 on import; a fresh process loading them through
    # collectors/eth.py keeps its own
    import subprocess
    import sys

    code = ("import sys; before = sys.getrecursionlimit(); "
            "from generation_app.collectors import eth; eth.load(); "
            "print(before, sys.getrecursionlimit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()

    assert out[0] == out[1] == "1000"
