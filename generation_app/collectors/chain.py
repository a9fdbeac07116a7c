"""Reading an EVM chain (web3.py over the SSRF guard) and judging a payment transaction.

The RPC URL is staff-configured and trusted like a staff-registered ComfyUI server: its own
host:port (and OUTBOUND_ALLOW_HOSTS) may be loopback or private, nothing else is, and a redirect
is refused rather than followed. Nothing in a transaction (its input, its logs) is ever fetched.
Reads happen outside any database transaction. web3 loads on first use (it is heavy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from emprops.errors import DomainError
from emprops.netguard import UnsafeURL, safe_client
from generation_app.collectors.eth import load as load_eth

# a JSON-RPC answer about one transaction is a few KiB; anything far larger is not one
MAX_RPC_RESPONSE_BYTES = 1 << 20
# generations one direct payment may buy (value // price), so a huge overpayment stays a number
# the payment row can hold
MAX_DIRECT_QUANTITY = 1_000_000


class ChainUnavailable(DomainError):
    """The configured node could not be read: the purchase is neither accepted nor refused."""

    status_code = 503
    code = "chain_unavailable"


class PaymentRefused(DomainError):
    """A transaction that does not pay for this collection; `reason` names why, for clients."""

    status_code = 422
    code = "payment_refused"

    def __init__(self, reason: str, message: str, *, status_code: int = 422) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.status_code = status_code


def rpc_url_errors(url: str) -> list[str]:
    """Why `url` cannot be a chain's JSON-RPC URL (empty when it can)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ["Not a valid URL."]
    if parsed.scheme not in ("http", "https"):
        return ["Must start with http:// or https://."]
    if not parsed.host:
        return ["The URL has no host."]
    if parsed.userinfo or parsed.fragment:
        return ["An RPC URL has no credentials or fragment (put keys in the path or query)."]
    return []


def _trusted_hosts(url: str) -> list[str]:
    parsed = httpx.URL(url)
    host = parsed.host.lower()
    shown = f"[{host}]" if ":" in host else host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return [*settings.OUTBOUND_ALLOW_HOSTS, f"{shown}:{port}"]


def _rpc_post(url: str, body: bytes) -> bytes:
    """POST one JSON-RPC request to the staff-configured node; ChainUnavailable on any failure."""
    errors = rpc_url_errors(url)
    if errors:
        raise ChainUnavailable(f"The chain's RPC URL is misconfigured: {errors[0]}")
    try:
        # max_redirects=0: a node that redirects is misconfigured, not followed
        with safe_client(allow_hosts=_trusted_hosts(url), max_redirects=0,
                         timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS) as client, \
                client.stream("POST", url, content=body,
                              headers={"Content-Type": "application/json"}) as response:
            if response.status_code != 200:
                raise ChainUnavailable(f"The chain's node answered HTTP {response.status_code}.")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_RPC_RESPONSE_BYTES:
                    raise ChainUnavailable("The chain's node sent an oversized answer.")
                chunks.append(chunk)
            return b"".join(chunks)
    except UnsafeURL as exc:
        raise ChainUnavailable(f"The chain's node may not be reached: {exc.reason}") from None
    except httpx.HTTPError as exc:
        raise ChainUnavailable(f"The chain's node could not be read: {type(exc).__name__}") from None


def _web3(url: str) -> Any:
    load_eth()
    from web3 import Web3
    from web3.providers.base import JSONBaseProvider
    from web3.types import RPCEndpoint, RPCResponse

    class GuardedProvider(JSONBaseProvider):
        def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
            raw = _rpc_post(url, self.encode_rpc_request(method, params))
            try:
                return self.decode_rpc_response(raw)
            except (ValueError, UnicodeDecodeError):
                raise ChainUnavailable("The chain's node sent an answer that is not JSON.") \
                    from None

    return Web3(GuardedProvider())


@dataclass(frozen=True)
class ChainReading:
    """What the node says about one transaction (plain Python values, no web3 types)."""

    tx: dict[str, Any] | None
    receipt: dict[str, Any] | None
    head: int


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value


def chain_read(*, rpc_url: str, tx_hash: str) -> ChainReading:
    """eth_getTransactionByHash, eth_getTransactionReceipt and eth_blockNumber for `tx_hash`;
    ChainUnavailable when the node cannot be read."""
    load_eth()
    from web3.exceptions import TransactionNotFound, Web3Exception

    w3 = _web3(rpc_url)
    try:
        try:
            tx = _plain(w3.eth.get_transaction(tx_hash))
        except TransactionNotFound:
            return ChainReading(tx=None, receipt=None, head=int(w3.eth.block_number))
        try:
            receipt = _plain(w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            receipt = None
        head = int(w3.eth.block_number)
    except ChainUnavailable:
        raise
    except (Web3Exception, ValueError, TypeError, KeyError) as exc:
        raise ChainUnavailable(f"The chain's node gave an unusable answer: {exc}"[:300]) from None
    return ChainReading(tx=tx, receipt=receipt, head=head)


def checksum(address: str) -> str | None:
    """The EIP-55 form of an address, None when it is not one."""
    load_eth()
    from web3 import Web3

    try:
        return str(Web3.to_checksum_address(address)) if Web3.is_address(address) else None
    except (ValueError, TypeError):
        return None


def abi_errors(abi: Any) -> list[str]:
    """Why `abi` cannot be the mint contract's ABI (empty when it can)."""
    if not isinstance(abi, list) or not all(isinstance(i, dict) for i in abi):
        return ["The ABI must be a JSON list of objects."]
    mints = [i for i in abi if i.get("type") == "function" and i.get("name") == "mint"]
    if not mints:
        return ["The ABI has no `mint` function."]
    names = {p.get("name") for m in mints for p in m.get("inputs") or []}
    missing = sorted({"collectionId", "owner", "quantity"} - names)
    if missing:
        return [f"`mint` has no input named {', '.join(missing)}."]
    return []


@dataclass(frozen=True)
class Expectation:
    """What a payment for one collection by one collector must look like."""

    chain_id: int
    wallet: str  # checksummed
    price_wei: int
    required_confirmations: int
    payout_address: str | None  # checksummed; None: direct payments are not accepted
    mint_contract: str | None  # checksummed; None: no mint contract configured
    mint_abi: Sequence[Mapping[str, Any]]
    onchain_collection_id: int | None
    max_quantity: int  # batch_max_tokens when batch minting is enabled, else 1


@dataclass(frozen=True)
class Verdict:
    method: str  # "direct" | "mint"
    quantity: int
    amount: int  # wei
    block_number: int | None
    confirmations: int
    confirmed: bool


def _decode_mint(expect: Expectation, data: str) -> dict[str, Any]:
    load_eth()
    from web3 import Web3

    contract = Web3().eth.contract(abi=list(expect.mint_abi))
    try:
        function, args = contract.decode_function_input(data)
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        raise PaymentRefused("not_a_mint_call",
                             "The transaction to the mint contract is not a call the mint "
                             f"contract's ABI decodes ({type(exc).__name__}).") from None
    if function.fn_name != "mint":
        raise PaymentRefused("not_a_mint_call",
                             f"The transaction calls {function.fn_name}(...), not mint(...).")
    return dict(args)


def payment_judge(*, reading: ChainReading, expect: Expectation) -> Verdict:
    """Whether the transaction pays for the collection, and for how many generations; raises
    PaymentRefused naming the reason. A transaction not yet mined, or with fewer confirmations
    than required, is a Verdict with confirmed=False."""
    tx, receipt = reading.tx, reading.receipt
    if tx is None:
        raise PaymentRefused("unknown_transaction",
                             "The chain's node does not know this transaction.")
    if tx.get("chainId") is None or int(tx["chainId"]) != expect.chain_id:
        raise PaymentRefused("wrong_chain",
                             f"The transaction is for chain {tx.get('chainId')}, the collection "
                             f"sells on chain {expect.chain_id}.")
    if checksum(str(tx.get("from") or "")) != expect.wallet:
        raise PaymentRefused("wrong_sender", "The transaction was not sent from your wallet.")
    to = checksum(str(tx.get("to") or ""))
    value = int(tx.get("value") or 0)
    if to is not None and to == expect.mint_contract:
        method = "mint"
        args = _decode_mint(expect, str(tx.get("input") or "0x"))
        if expect.onchain_collection_id is None or \
                int(args.get("collectionId", -1)) != expect.onchain_collection_id:
            raise PaymentRefused("wrong_collection",
                                 f"The mint is for on-chain collection {args.get('collectionId')}, "
                                 f"not this collection ({expect.onchain_collection_id}).")
        if checksum(str(args.get("owner") or "")) != expect.wallet:
            raise PaymentRefused("wrong_owner", "The mint is for another owner than your wallet.")
        quantity = int(args.get("quantity", 0))
        if quantity < 1 or quantity > expect.max_quantity:
            raise PaymentRefused("bad_quantity",
                                 f"The mint's quantity is {quantity}; this collection allows 1 to "
                                 f"{expect.max_quantity} per transaction.")
        if value < expect.price_wei * quantity:
            raise PaymentRefused("underpaid",
                                 f"The transaction paid {value} wei; {quantity} at "
                                 f"{expect.price_wei} wei cost {expect.price_wei * quantity} wei.")
    elif to is not None and to == expect.payout_address:
        method = "direct"
        quantity = value // expect.price_wei
        if quantity > MAX_DIRECT_QUANTITY:
            raise PaymentRefused("bad_quantity",
                                 f"The transaction pays for {quantity} generations; at most "
                                 f"{MAX_DIRECT_QUANTITY} are sold in one payment.")
        if quantity < 1:
            raise PaymentRefused("underpaid",
                                 f"The transaction paid {value} wei; one generation costs "
                                 f"{expect.price_wei} wei.")
    else:
        raise PaymentRefused("wrong_recipient",
                             f"The transaction pays {to or 'no address'}, which is neither the "
                             "collection's payout address nor its mint contract.")
    if receipt is None or receipt.get("blockNumber") is None:
        return Verdict(method=method, quantity=quantity, amount=value, block_number=None,
                       confirmations=0, confirmed=False)
    if int(receipt.get("status", 0)) != 1:
        raise PaymentRefused("reverted", "The transaction reverted on chain.")
    block = int(receipt["blockNumber"])
    confirmations = max(0, reading.head - block + 1)
    return Verdict(method=method, quantity=quantity, amount=value, block_number=block,
                   confirmations=confirmations,
                   confirmed=confirmations >= max(1, expect.required_confirmations))

