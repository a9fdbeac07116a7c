"""A real EVM on loopback, a published collection for sale on it, and wallet sign-in helpers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from generation_app.collectors import eth

_LIMIT = sys.getrecursionlimit()
eth.load()
from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402

from tests.peers.evm_chain import MINT_ABI, EvmChain  # noqa: E402

# py-evm (the test chain) raises the recursion limit on import too; the rest of the suite runs
# with the interpreter's own, as the platform's processes do
sys.setrecursionlimit(_LIMIT)

PRICE_WEI = 10**15  # 0.001 ETH
ONCHAIN_ID = 42


@pytest.fixture(scope="module")
def chain() -> Iterator[EvmChain]:
    with EvmChain() as evm:
        yield evm


def siwe_message(*, address: str, domain: str, chain_id: int, nonce: str,
                 expiration: str | None = None) -> str:
    """An EIP-4361 message as a wallet would be asked to sign it."""
    issued = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    lines = [f"{domain} wants you to sign in with your Ethereum account:", address, "",
             "Collect generations.", "", f"URI: http://{domain}/", "Version: 1",
             f"Chain ID: {chain_id}", f"Nonce: {nonce}", f"Issued At: {issued}"]
    if expiration:
        lines.append(f"Expiration Time: {expiration}")
    return "\n".join(lines)


def sign(account: LocalAccount, message: str) -> str:
    return "0x" + account.sign_message(encode_defunct(text=message)).signature.hex()


@dataclass
class Sale:
    owner: Any
    collection: Any
    chain_config: Any
    listing: Any
    payout: str
    mint_contract: str


@pytest.fixture
def make_sale(chain: EvmChain, make_user: Callable[..., Any]) -> Callable[..., Sale]:
    """A published one-step collection of a new owner, listed on the test chain."""
    from collections_app.models import Collection
    from collections_app.services import collection_create, collection_publish
    from generation_app.collectors.models import ChainConfig, CollectionListing

    def make(*, owner: Any = None, blockchain: str = "BASE", editions: int | None = 100,
             batch_max_tokens: int | None = None, confirmations: int = 1,
             publish: bool = True) -> Sale:
        owner = owner or make_user(f"owner-{Account.create().address[2:10].lower()}")
        data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a $who"}}],
                "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                               "value": {"values": ["cat", "owl"]}}]}
        collection = collection_create(user=owner, data=data, fields={"title": "For sale"})
        Collection.objects.filter(pk=collection.pk).update(
            blockchain=blockchain, editions=editions, price="0.001",
            batch_mint_enabled=batch_max_tokens is not None, batch_max_tokens=batch_max_tokens)
        if publish:
            collection_publish(user=owner, collection_id=collection.pk)
        collection.refresh_from_db()
        mint_contract = Account.create().address
        config, _ = ChainConfig.objects.update_or_create(
            blockchain=blockchain if blockchain != "TEZOS" else "BASE",
            defaults={"rpc_url": chain.url, "chain_id": chain.chain_id,
                      "required_confirmations": confirmations,
                      "mint_contract_address": mint_contract, "mint_contract_abi": MINT_ABI})
        payout = Account.create().address
        listing = CollectionListing.objects.create(collection=collection, price_wei=PRICE_WEI,
                                                   onchain_collection_id=ONCHAIN_ID,
                                                   payout_address=payout)
        return Sale(owner=owner, collection=collection, chain_config=config, listing=listing,
                    payout=payout, mint_contract=mint_contract)

    return make


@pytest.fixture
def sign_in(chain: EvmChain) -> Callable[..., Any]:
    """Sign `account` in through the API (nonce, EIP-4361 message, signature): the response."""

    def do(client: Any, account: LocalAccount, *, domain: str = "testserver",
           **extra: Any) -> Any:
        nonce = client.get("/api/collectors/nonce").json()["data"]["nonce"]
        message = siwe_message(address=account.address, domain=domain, chain_id=chain.chain_id,
                               nonce=nonce)
        return client.post("/api/collectors/login",
                           {"message": message, "signature": sign(account, message), **extra},
                           format="json")

    return do


@pytest.fixture
def collector_client(chain: EvmChain, sign_in: Callable[..., Any]) -> Callable[..., Any]:
    """(API client authenticated as a new collector, its funded account)."""
    from rest_framework.test import APIClient

    def make() -> tuple[APIClient, LocalAccount]:
        account = chain.funded_account()
        client = APIClient()
        token = sign_in(client, account).json()["data"]["access"]
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client, account

    return make
