"""Picking variable values for a generation from its hash."""

from generation_app.engine.prng import HashRandom
from generation_app.engine.variables import pick_variables

GOLDEN = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"


def pick(name, values, **extra):
    return {
        "name": name,
        "type": "pick",
        "value_type": "strings",
        "value": {"values": values},
        **extra,
    }


def weighted(name, values, weights, **extra):
    return {
        "name": name,
        "type": "weighted_pick",
        "value_type": "strings",
        "value": {"values": values, "weights": weights},
        **extra,
    }


def test_golden_pick():
    assert pick_variables([pick("name", ["John", "Mary", "Peter"])], GOLDEN) == {"name": "Mary"}


def test_golden_weighted_pick_then_pick_draw_in_list_order():
    variables = [
        weighted("name", ["John", "Mary", "Peter"], [1, 1, 98]),
        pick("job", ["Engineer", "Other"]),
    ]

    assert pick_variables(variables, GOLDEN) == {"name": "Peter", "job": "Engineer"}


def test_locked_variable_with_test_value_takes_it_and_consumes_no_draw():
    # Given a locked variable before the golden pick
    variables = [
        pick("mood", ["happy", "sad"], lock_value=True, test_value="sad"),
        pick("name", ["John", "Mary", "Peter"]),
    ]

    # Then the lock takes its test value and the next variable sees the first draw
    assert pick_variables(variables, GOLDEN) == {"mood": "sad", "name": "Mary"}


def test_locked_variable_without_test_value_draws_like_any_other():
    variables = [
        pick("mood", ["happy", "sad"], lock_value=True, test_value=None),
        pick("name", ["John", "Mary", "Peter"]),
    ]
    rng = HashRandom(GOLDEN)
    mood = rng.pseudorandom_pick(["happy", "sad"])
    name = rng.pseudorandom_pick(["John", "Mary", "Peter"])

    assert pick_variables(variables, GOLDEN) == {"mood": mood, "name": name}


def test_test_value_of_unlocked_variable_is_ignored():
    variables = [pick("name", ["John", "Mary", "Peter"], lock_value=False, test_value="Zed")]

    assert pick_variables(variables, GOLDEN) == {"name": "Mary"}


def test_override_replaces_value_and_keeps_other_picks_unchanged():
    variables = [
        weighted("name", ["John", "Mary", "Peter"], [1, 1, 98]),
        pick("job", ["Engineer", "Other"]),
    ]

    picked = pick_variables(variables, GOLDEN, {"name": "Alice"})

    assert picked == {"name": "Alice", "job": "Engineer"}


def test_override_of_locked_variable_still_consumes_no_draw():
    variables = [
        pick("mood", ["happy", "sad"], lock_value=True, test_value="sad"),
        pick("name", ["John", "Mary", "Peter"]),
    ]

    assert pick_variables(variables, GOLDEN, {"mood": "calm"}) == {"mood": "calm", "name": "Mary"}


def test_override_for_unknown_name_is_ignored():
    variables = [pick("name", ["John", "Mary", "Peter"])]

    assert pick_variables(variables, GOLDEN, {"ghost": "boo"}) == {"name": "Mary"}


def test_weights_given_as_strings_are_numbers():
    variables = [weighted("name", ["John", "Mary", "Peter"], ["1", "1", "98"])]

    assert pick_variables(variables, GOLDEN) == {"name": "Peter"}


def test_empty_values_give_empty_string_and_consume_a_draw():
    variables = [pick("nothing", []), pick("name", ["x", "John", "Mary", "Peter"])]
    rng = HashRandom(GOLDEN)
    rng.rand()
    expected = rng.pseudorandom_pick(["x", "John", "Mary", "Peter"])

    assert pick_variables(variables, GOLDEN) == {"nothing": "", "name": expected}


def test_empty_weighted_values_give_empty_string():
    assert pick_variables([weighted("w", [], [])], GOLDEN) == {"w": ""}


def test_weighted_pick_without_weights_is_an_even_pick_with_one_draw():
    variables = [
        {"name": "w", "type": "weighted_pick", "value": {"values": ["a", "b"]}},
        pick("name", ["John", "Mary", "Peter"]),
    ]
    rng = HashRandom(GOLDEN)
    first = rng.pseudorandom_weighted_pick(["a", "b"], [1.0, 1.0])
    second = rng.pseudorandom_pick(["John", "Mary", "Peter"])

    assert pick_variables(variables, GOLDEN) == {"w": first, "name": second}


def test_non_string_test_value_becomes_text():
    variables = [pick("n", ["1", "2"], value_type="integers", lock_value=True, test_value=7)]

    assert pick_variables(variables, GOLDEN) == {"n": "7"}


def test_same_hash_same_picks_and_no_variables_no_picks():
    variables = [pick(f"v{i}", [str(j) for j in range(10)]) for i in range(8)]

    assert pick_variables(variables, "oo" + "k" * 49) == pick_variables(variables, "oo" + "k" * 49)
    assert pick_variables([], GOLDEN) == {}


def test_picks_follow_the_stream_one_draw_per_variable():
    values = [str(j) for j in range(100)]
    variables = [pick(f"v{i}", values) for i in range(5)]
    rng = HashRandom(GOLDEN)
    expected = {f"v{i}": rng.pseudorandom_pick(values) for i in range(5)}

    assert pick_variables(variables, GOLDEN) == expected
