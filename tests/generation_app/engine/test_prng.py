"""The hash PRNG: golden values from the SPEC, and bit-exactness against a real JavaScript engine."""

import json
import math
import random
import string
import uuid

import pytest
from py_mini_racer import MiniRacer

from collections_app.generation_input import ALPHABET
from generation_app.engine.prng import HashRandom, generation_seed, hash_seeds, new_hash

GOLDEN = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"

# The platform's algorithm, written the way its JavaScript is: regex chunking of hash.slice(2),
# `| 0` accumulation, sfc32 over `| 0` / `>>> 0`, and the helpers with their own loops.
JS_REFERENCE = r"""
function makeRandom(seed) {
  const alphabet = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
  const b58dec = (str) => [...str].reduce((p, c) => (p * alphabet.length + alphabet.indexOf(c)) | 0, 0);
  const hashSlice = seed.slice(2);
  const regex = new RegExp(".{" + ((hashSlice.length / 4) | 0) + "}", "g");
  const hashes = hashSlice.match(regex).map((h) => b58dec(h));
  let [a, b, c, d] = hashes;
  return () => {
    a |= 0; b |= 0; c |= 0; d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}
function helpers(seed) {
  const r = makeRandom(seed);
  const self = {
    pseudorandom: (min = 0, max = 1) => min + (max - min) * r(),
    pseudorandomInteger: (min, max) => Math.floor(self.pseudorandom(min, max + 1)),
    pseudorandomPick: (list) => list[self.pseudorandomInteger(0, list.length - 1)],
    pseudorandomWeightedPick: (list, weights) => {
      const total = weights.reduce((x, y) => x + y);
      const pick = self.pseudorandom(0, total);
      let index = 0, sum = 0;
      while (index < weights.length && sum + weights[index] < pick) { sum += weights[index]; index++; }
      return list[Math.min(list.length - 1, index)];
    },
    pseudorandomPickButNot: (list, stinky) => {
      if (list.length == 0) return undefined;
      if (list.length == 1) return list[0];
      let picked, safety = 0;
      do {
        picked = self.pseudorandomPick(list);
        safety++;
        if (safety++ > list.length * 10) { picked = list[0]; break; }
      } while (stinky.includes(picked));
      return picked;
    },
  };
  return self;
}
function draws(seed, n) {
  const r = makeRandom(seed);
  const out = [];
  for (let i = 0; i < n; i++) out.push(r());
  return JSON.stringify(out);
}
function mixed(seed) {
  const h = helpers(seed);
  const out = [];
  out.push(helpers(seed).pseudorandomInteger(1, 4294967295));
  out.push(h.pseudorandom(-3.5, 7.25));
  out.push(h.pseudorandomInteger(0, 9));
  out.push(h.pseudorandomPick(["a", "b", "c", "d", "e"]));
  out.push(h.pseudorandomWeightedPick(["x", "y", "z"], [0.5, 2, 7.5]));
  out.push(h.pseudorandomPickButNot(["p", "q", "r", "s"], ["q", "s"]));
  out.push(h.pseudorandomPickButNot(["p", "q", "r"], ["p", "q", "r"]));
  out.push(h.pseudorandom() < 0.5);
  out.push(h.pseudorandom());
  return JSON.stringify(out);
}
"""


@pytest.fixture(scope="module")
def js() -> MiniRacer:
    ctx = MiniRacer()
    ctx.eval(JS_REFERENCE)
    return ctx


def _hashes() -> list[str]:
    """A fixed, varied set of hashes: every shape the platform meets, and odd ones."""
    rnd = random.Random(20240611)
    hashes = [GOLDEN, "", "o", "oo", "ooa", "ooab", "ooabc", "ooabcd", "ooabcde", "ooZZZZZZZ"]
    hashes += [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(15)]
    hashes += ["0x" + "".join(rnd.choice("0123456789abcdef") for _ in range(64)) for _ in range(15)]
    hashes += ["oo" + "".join(rnd.choice(ALPHABET) for _ in range(49)) for _ in range(30)]
    # Characters outside the alphabet (index -1): 0, O, I, l, punctuation, non-ASCII.
    hashes += [
        "oo0OIl0OIl0OIl0OIl",
        "0O" + "0" * 40,
        "llllllllllll",
        "ooIIII-____ ~~~~",
        "ooé€ßабвгд12",
    ]
    printable = string.ascii_letters + string.digits + "-_.:/ "
    hashes += ["".join(rnd.choice(printable) for _ in range(rnd.randint(0, 90))) for _ in range(40)]
    # Long chunks make the accumulator wrap many times.
    hashes += ["oo" + "Z" * 400, "oo" + "z" * 257, "xx" + ALPHABET * 5]
    return hashes


def test_golden_first_draws():
    rng = HashRandom(GOLDEN)

    first = [round(rng.rand(), 12) for _ in range(3)]

    assert first == [0.503112898208, 0.240322665777, 0.683175766608]


def test_golden_seed():
    assert generation_seed(GOLDEN) == 2160853444


def test_golden_pick_from_fresh_generator():
    assert HashRandom(GOLDEN).pseudorandom_pick(["John", "Mary", "Peter"]) == "Mary"


def test_golden_weighted_pick_then_pick_from_same_generator():
    rng = HashRandom(GOLDEN)

    person = rng.pseudorandom_weighted_pick(["John", "Mary", "Peter"], [1, 1, 98])
    job = rng.pseudorandom_pick(["Engineer", "Other"])

    assert (person, job) == ("Peter", "Engineer")


@pytest.mark.parametrize("hash_", _hashes())
def test_first_20_draws_are_bit_exact_with_javascript(js, hash_):
    expected = json.loads(js.call("draws", hash_, 20))
    rng = HashRandom(hash_)

    actual = [rng.rand() for _ in range(20)]

    assert actual == expected  # exact float equality, not approx


@pytest.mark.parametrize("hash_", _hashes()[::3])
def test_helpers_are_bit_exact_with_javascript(js, hash_):
    expected = json.loads(js.call("mixed", hash_))
    rng = HashRandom(hash_)

    actual = [
        generation_seed(hash_),
        rng.pseudorandom(-3.5, 7.25),
        rng.pseudorandom_integer(0, 9),
        rng.pseudorandom_pick(["a", "b", "c", "d", "e"]),
        rng.pseudorandom_weighted_pick(["x", "y", "z"], [0.5, 2, 7.5]),
        rng.pseudorandom_pick_but_not(["p", "q", "r", "s"], ["q", "s"]),
        rng.pseudorandom_pick_but_not(["p", "q", "r"], ["p", "q", "r"]),
        rng.pseudorandom_boolean(),
        rng.pseudorandom(),
    ]

    assert actual == expected


def test_short_hashes_seed_all_zero():
    # rest shorter than 4 characters gives zero-length chunks.
    for hash_ in ["", "o", "oo", "ooa", "ooabc"]:
        assert hash_seeds(hash_) == (0, 0, 0, 0)


def test_seed_accumulation_wraps_to_signed_int32_each_step():
    # Given a long chunk of the alphabet's last character (index 57)
    chunk = "Z" * 12
    acc = 0
    for _ in chunk:
        acc = ((acc * 58 + 57 + 2**31) % 2**32) - 2**31

    # When its seeds are computed, then each seed equals the wrapped accumulation
    assert hash_seeds("oo" + chunk * 4) == (acc, acc, acc, acc)
    assert -(2**31) <= acc < 2**31


def test_characters_outside_alphabet_count_as_minus_one():
    # "0" is not in the alphabet: 0*58-1 = -1, then -1*58-1 = -59
    assert hash_seeds("oo0000") == (-1, -1, -1, -1)
    assert hash_seeds("oo00000000") == (-59, -59, -59, -59)


def test_remainder_after_four_chunks_is_ignored():
    assert hash_seeds("oo1234") == hash_seeds("oo1234zzz")  # n = 1 for both


def test_fresh_generators_replay_the_same_stream():
    a, b = HashRandom(GOLDEN), HashRandom(GOLDEN)

    assert [a.rand() for _ in range(50)] == [b.rand() for _ in range(50)]


def test_draws_are_in_unit_interval():
    rng = HashRandom(new_hash())

    draws = [rng.rand() for _ in range(2000)]

    assert all(0.0 <= d < 1.0 for d in draws)


def test_pseudorandoms_and_integers_consume_one_draw_each():
    rng, ref = HashRandom(GOLDEN), HashRandom(GOLDEN)

    floats = rng.pseudorandoms(3, 10, 20)
    ints = rng.pseudorandom_integers(4, 1, 6)

    expected = [10 + 10 * ref.rand() for _ in range(3)]
    assert floats == expected
    assert ints == [math.floor(1.0 + (7.0 - 1.0) * ref.rand()) for _ in range(4)]
    assert all(1 <= i <= 6 for i in ints)


def test_pseudorandom_integer_stays_in_bounds():
    rng = HashRandom("oo" + "a" * 49)

    values = {rng.pseudorandom_integer(3, 5) for _ in range(500)}

    assert values == {3, 4, 5}


def test_pick_of_empty_list_is_none_and_consumes_a_draw():
    rng, ref = HashRandom(GOLDEN), HashRandom(GOLDEN)

    assert rng.pseudorandom_pick([]) is None
    ref.rand()
    assert rng.rand() == ref.rand()


def test_weighted_pick_with_no_weights_raises_before_drawing():
    rng, ref = HashRandom(GOLDEN), HashRandom(GOLDEN)

    with pytest.raises(ValueError):
        rng.pseudorandom_weighted_pick(["a"], [])

    assert rng.rand() == ref.rand()


def test_weighted_pick_zero_weight_items_are_never_picked_after_the_first():
    rng = HashRandom(GOLDEN)

    picks = {rng.pseudorandom_weighted_pick(["a", "b", "c"], [0, 5, 0]) for _ in range(200)}

    assert picks == {"b"}


def test_weighted_pick_with_fewer_items_than_weights_clamps_to_last_item():
    rng = HashRandom(GOLDEN)

    picks = {rng.pseudorandom_weighted_pick(["a"], [1, 1000]) for _ in range(20)}

    assert picks == {"a"}


def test_pick_but_not_avoids_excluded_values():
    rng = HashRandom(GOLDEN)

    picks = {rng.pseudorandom_pick_but_not(["a", "b", "c"], ["b"]) for _ in range(200)}

    assert picks == {"a", "c"}


def test_pick_but_not_gives_up_with_first_item_after_5n_plus_1_draws():
    rng, ref = HashRandom(GOLDEN), HashRandom(GOLDEN)

    picked = rng.pseudorandom_pick_but_not(["a", "b"], ["a", "b"])

    assert picked == "a"
    for _ in range(5 * 2 + 1):
        ref.rand()
    assert rng.rand() == ref.rand()


def test_pick_but_not_trivial_lists_draw_nothing():
    rng, ref = HashRandom(GOLDEN), HashRandom(GOLDEN)

    assert rng.pseudorandom_pick_but_not([], ["a"]) is None
    assert rng.pseudorandom_pick_but_not(["only"], ["only"]) == "only"
    assert rng.rand() == ref.rand()


def test_new_hash_shape():
    hashes = {new_hash() for _ in range(50)}

    assert len(hashes) == 50
    for hash_ in hashes:
        assert len(hash_) == 51
        assert hash_.startswith("oo")
        assert set(hash_[2:]) <= set(ALPHABET)
