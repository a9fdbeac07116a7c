"""The hash PRNG, bit-exact with the existing platform's JavaScript (SPEC section 3).

A hash seeds sfc32 with four base58 decodings of its quarters, so the same hash reproduces the same
variable picks, seeds and sketch randomness everywhere. Every step below mirrors the JavaScript:
32-bit integer arithmetic is done on Python ints masked to 32 bits, and the helpers work on
floats, which are IEEE doubles exactly like JavaScript numbers.

Hashes are expected to be ASCII (hex, UUIDs, "oo" hashes). JavaScript slices strings in UTF-16
code units; for characters outside the Basic Multilingual Plane the two would disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, TypeVar

from collections_app.generation_input import ALPHABET
from collections_app.generation_input import new_hash as new_hash

__all__ = ["ALPHABET", "HashRandom", "generation_seed", "hash_seeds", "new_hash"]

T = TypeVar("T")

_INDEX: Final = {char: i for i, char in enumerate(ALPHABET)}
_BASE: Final = len(ALPHABET)
_MASK: Final = 0xFFFFFFFF
_TWO_32: Final = 4294967296.0
SEED_MAX: Final = 4294967295


def _int32(value: int) -> int:
    """JavaScript's ToInt32 (`x | 0`) for an integer."""
    value &= _MASK
    return value - 0x100000000 if value & 0x80000000 else value


def _decode(chunk: str) -> int:
    # `acc = (acc * 58 + alphabet.indexOf(c)) | 0`: the wrap happens at every step, and a character
    # outside the alphabet counts as -1. acc * 58 stays below 2**53, so no precision is lost.
    acc = 0
    for char in chunk:
        acc = _int32(acc * _BASE + _INDEX.get(char, -1))
    return acc


def hash_seeds(hash: str) -> tuple[int, int, int, int]:
    """The four signed 32-bit sfc32 seeds of a hash.

    `rest` is the hash without its first two characters; the seeds decode `rest` in four chunks of
    `len(rest) // 4` characters (the remainder is ignored; a hash shorter than 6 characters gives
    empty chunks, which decode to 0).
    """
    rest = hash[2:]
    n = len(rest) // 4
    a, b, c, d = (_decode(rest[i * n : (i + 1) * n]) for i in range(4))
    return a, b, c, d


class HashRandom:
    """sfc32 seeded from a hash, with the platform's pseudorandom helpers.

    A fresh instance always replays the same stream for the same hash; each helper consumes draws
    exactly as its JavaScript namesake does.
    """

    __slots__ = ("_a", "_b", "_c", "_d")

    def __init__(self, hash: str) -> None:
        self._a, self._b, self._c, self._d = (seed & _MASK for seed in hash_seeds(hash))

    def rand(self) -> float:
        """The next draw in [0, 1): one sfc32 step, no warm-up."""
        a, b, c, d = self._a, self._b, self._c, self._d
        t = (a + b + d) & _MASK
        d = (d + 1) & _MASK
        a = b ^ (b >> 9)
        b = (c + (c << 3)) & _MASK
        c = ((c << 21) | (c >> 11)) & _MASK
        c = (c + t) & _MASK
        self._a, self._b, self._c, self._d = a, b, c, d
        # t / 2**32 is exact in a double, as in JavaScript.
        return t / _TWO_32

    def pseudorandom(self, min: float = 0, max: float = 1) -> float:
        """`min + (max - min) * rand()`, in doubles."""
        low = float(min)
        return low + (float(max) - low) * self.rand()

    def pseudorandoms(self, n: int, min: float = 0, max: float = 1) -> list[float]:
        """`n` draws of `pseudorandom(min, max)`."""
        return [self.pseudorandom(min, max) for _ in range(n)]

    def pseudorandom_integer(self, min: float, max: float) -> int:
        """`floor(pseudorandom(min, max + 1))`: an integer in [min, max] for integer bounds."""
        return math.floor(self.pseudorandom(min, float(max) + 1.0))

    def pseudorandom_integers(self, n: int, min: float, max: float) -> list[int]:
        """`n` draws of `pseudorandom_integer(min, max)`."""
        return [self.pseudorandom_integer(min, max) for _ in range(n)]

    def pseudorandom_boolean(self) -> bool:
        """`pseudorandom() < 0.5`."""
        return self.pseudorandom() < 0.5

    def pseudorandom_pick(self, items: Sequence[T]) -> T | None:
        """A uniform pick; consumes one draw. An empty list gives None (JavaScript's undefined)."""
        index = self.pseudorandom_integer(0, len(items) - 1)
        return items[index] if 0 <= index < len(items) else None

    def pseudorandom_weighted_pick(self, items: Sequence[T], weights: Sequence[float]) -> T | None:
        """A pick weighted by `weights`; consumes one draw.

        `r = pseudorandom(0, sum(weights))`, then walk while `running + weights[i] < r`; the result
        is `items[min(len(items) - 1, i)]`. Empty weights raise ValueError before any draw, as
        JavaScript's `reduce` throws; an empty list gives None after the draw.
        """
        if not weights:
            raise ValueError("weighted pick needs at least one weight")
        total = 0.0
        for weight in weights:
            total += float(weight)
        r = self.pseudorandom(0, total)
        index, running = 0, 0.0
        while index < len(weights) and running + float(weights[index]) < r:
            running += float(weights[index])
            index += 1
        if not items:
            return None
        return items[min(len(items) - 1, index)]

    def pseudorandom_pick_but_not(self, items: Sequence[T], excluded: Sequence[T]) -> T | None:
        """A pick that is not in `excluded`, drawing again while it is.

        Mirrors the platform exactly, including its loop guard (its counter advances twice per
        try): with a single item it returns that item without a draw, and after 5 * len + 1 tries
        that all hit `excluded` it gives up with `items[0]`. Empty `items` gives None.
        """
        if not items:
            return None
        if len(items) == 1:
            return items[0]
        guard = 0
        while True:
            picked = self.pseudorandom_pick(items)
            guard += 1
            if guard > len(items) * 10:
                return items[0]
            guard += 1
            if picked not in excluded:
                return picked


def generation_seed(hash: str) -> int:
    """A generation's seed: `pseudorandom_integer(1, 4294967295)` from a fresh generator."""
    return HashRandom(hash).pseudorandom_integer(1, SEED_MAX)
