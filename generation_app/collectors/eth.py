"""Loading the Ethereum libraries without changing the interpreter.

`py_ecc` (under eth_account, web3 and siwe) and `eth` (py-evm) raise the interpreter's recursion
limit to 100,000 when first imported. With it, a deeply nested JSON document overflows the C
stack of the decoder (the process dies with a segmentation fault) instead of raising
RecursionError. Every import of these libraries goes through `load()`, which imports them once
and puts the limit back.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_loaded = False


def load() -> None:
    """Import web3, eth_account, eth_keys and siwe once, keeping the recursion limit."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        limit = sys.getrecursionlimit()
        try:
            import eth_account  # noqa: F401
            import eth_keys  # noqa: F401
            import siwe  # noqa: F401
            import web3  # noqa: F401
        finally:
            sys.setrecursionlimit(limit)
        _loaded = True
