"""A real EVM on loopback: eth-tester's py-evm backend behind a small JSON-RPC HTTP server.

Transactions are signed with eth-account keys and sent raw; blocks, receipts and reverts are
py-evm's. Each transaction is mined into its own block as it arrives (unless `auto_mine` is
off); `mine(n)` adds empty blocks, which is how confirmations grow.

    with EvmChain() as chain:
        buyer = chain.funded_account()
        tx_hash = chain.send(buyer, to=payout, value=3 * price)
        chain.url, chain.chain_id, chain.mine(2)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_typing import HexStr
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

# the mint call of the existing platform's contract (stakeordie/emprops-clients, base/v1.ts)
MINT_ABI: list[dict[str, Any]] = [{
    "type": "function", "name": "mint", "stateMutability": "payable", "outputs": [],
    "inputs": [
        {"name": "collectionId", "type": "uint256"},
        {"name": "owner", "type": "address"},
        {"name": "proof", "type": "bytes32[]"},
        {"name": "quantity", "type": "uint256"},
        {"name": "allowedToMint", "type": "uint256"},
    ],
}, {
    "type": "function", "name": "withdrawFunds", "stateMutability": "nonpayable", "outputs": [],
    "inputs": [{"name": "collectionId", "type": "uint256"}],
}]

# init code that deploys a contract whose every call reverts (runtime: PUSH1 0 PUSH1 0 REVERT)
REVERTING_CONTRACT = "0x6005600c60003960056000f3" + "60006000fd"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_wire(value: Any, *, key: str = "") -> Any:
    """eth-tester's Python values as JSON-RPC puts them: camelCase keys, quantities as hex."""
    if isinstance(value, Mapping):
        is_tx = "nonce" in value and "hash" in value and "data" in value
        return {("input" if is_tx and k == "data" else _camel(k)): to_wire(v, key=k)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value


class EvmChain:
    def __init__(self, *, auto_mine: bool = True) -> None:
        self.tester = EthereumTester(PyEVMBackend())
        if not auto_mine:
            self.tester.disable_auto_mine_transactions()
        self.provider = EthereumTesterProvider(self.tester)
        self.w3 = Web3(self.provider)
        self.chain_id = int(self.w3.eth.chain_id)
        self._lock = threading.Lock()
        self.calls: list[str] = []  # JSON-RPC methods asked, in order
        chain = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps(chain.handle(json.loads(raw))).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/rpc"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:  # eth-tester is not thread-safe
            self.calls.append(str(request.get("method")))
            response = self.provider.make_request(request["method"], request.get("params") or [])
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        if "error" in response:
            out["error"] = response["error"]
        else:
            out["result"] = to_wire(response.get("result"))
        return out

    def __enter__(self) -> EvmChain:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- helpers for tests ---------------------------------------------------------------------

    def funded_account(self, wei: int = 10**21) -> LocalAccount:
        """A new key holding `wei` from one of the tester's prefunded accounts."""
        account: LocalAccount = Account.create()
        with self._lock:
            self.tester.send_transaction({"from": self.tester.get_accounts()[0],
                                          "to": account.address, "value": wei, "gas": 21000})
            if not self._auto_mining():
                self.tester.mine_blocks(1)
        return account

    def _auto_mining(self) -> bool:
        return bool(self.tester.auto_mine_transactions)

    def send(self, account: LocalAccount, *, to: str | None, value: int = 0,
             data: str = "0x", gas: int = 300_000, chain_id: int | None = None) -> str:
        """Sign a transaction with `account`'s key and send it raw; its hash."""
        with self._lock:
            nonce = self.w3.eth.get_transaction_count(account.address, "pending")
            base = self.w3.eth.get_block("pending").get("baseFeePerGas", 10**9)
        tx: dict[str, Any] = {"value": value, "data": data, "gas": gas, "nonce": nonce,
                              "maxFeePerGas": int(base) * 2 + 10**9,
                              "maxPriorityFeePerGas": 10**9,
                              "chainId": self.chain_id if chain_id is None else chain_id}
        if to is not None:
            tx["to"] = to
        signed = account.sign_transaction(tx)
        with self._lock:
            return str(self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex())

    def deploy(self, account: LocalAccount, init_code: str) -> str:
        """Deploy `init_code` from `account`; the contract's address."""
        tx_hash = self.send(account, to=None, data=init_code)
        with self._lock:
            receipt = self.w3.eth.get_transaction_receipt(HexStr(tx_hash))
        return str(receipt["contractAddress"])

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            self.tester.mine_blocks(blocks)

    @staticmethod
    def mint_data(*, collection_id: int, owner: str, quantity: int,
                  proof: Sequence[bytes] = (), allowed_to_mint: int = 0) -> str:
        """The input of `mint(collectionId, owner, proof, quantity, allowedToMint)`."""
        contract = Web3().eth.contract(abi=MINT_ABI)
        return str(contract.encode_abi("mint", args=[collection_id, owner, list(proof),
                                                     quantity, allowed_to_mint]))
