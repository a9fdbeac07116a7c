"""The page contract: PRNG helpers bit-exact with SPEC section 3, and the other globals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from generation_app.nodes.base import RunContext
from generation_app.nodes.browser.renderer import PageEnv, evaluate_in_page

from .conftest import GOLDEN_HASH

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_pseudorandom_helpers_match_the_golden_values() -> None:
    env = PageEnv(hash=GOLDEN_HASH, seed=1)

    result = evaluate_in_page(
        """() => {
          const draws = [pseudorandom(), pseudorandom(), pseudorandom()];
          pseudorandomSeed();
          const pick = pseudorandomPick(['John', 'Mary', 'Peter']);
          pseudorandomSeed(hash);
          const weighted = pseudorandomWeightedPick(['John', 'Mary', 'Peter'], [1, 1, 98]);
          const then = pseudorandomPick(['Engineer', 'Other']);
          pseudorandomSeed();
          const seed = pseudorandomInteger(1, 4294967295);
          return {draws, pick, weighted, then, seed};
        }""",
        env=env,
        timeout_s=10,
    )

    assert [round(x, 12) for x in result["draws"]] == [
        0.503112898208,
        0.240322665777,
        0.683175766608,
    ]
    assert result["pick"] == "Mary"
    assert result["weighted"] == "Peter"
    assert result["then"] == "Engineer"
    assert result["seed"] == 2160853444


def test_globals_expose_variables_components_and_a_separate_math_random(
    make_ctx: Callable[..., RunContext],
) -> None:
    ctx = make_ctx(
        variables={"color": "red"},
        components={3: {"src": "http://x/generations/u1/j1/0/3/p5.png", "mimeType": "image/png"}},
        aliases={"upstream": 3},
    )

    result = evaluate_in_page(
        """() => ({
          hash, variable: getVariable('color'), direct: variables.color,
          byAlias: getComponentOutput('upstream'), byId: getComponentOutput(3),
          missing: getComponentOutput('nope'), component: components[3].mimeType,
          mathRandom: Math.random(), first: pseudorandom(),
          now: Date.now(), perf: performance.now(),
        })""",
        env=PageEnv.from_context(ctx),
        timeout_s=10,
    )

    assert result["hash"] == GOLDEN_HASH
    assert result["variable"] == result["direct"] == "red"
    assert result["byAlias"] == result["byId"] == "http://x/generations/u1/j1/0/3/p5.png"
    assert result["missing"] is None
    assert result["component"] == "image/png"
    assert round(result["first"], 12) == 0.503112898208  # Math.random did not consume it
    assert result["mathRandom"] != result["first"]
    assert result["now"] == 1704067200000
    assert result["perf"] == 0
