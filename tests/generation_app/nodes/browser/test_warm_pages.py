"""Pre-warmed single-use pages (renderer.py): the same bytes as a page opened cold, for every
demo sketch, and nothing of one render visible to the next."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from collections_app.demo import Demo, demos
from generation_app.nodes.base import Node, RunContext
from generation_app.nodes.browser import renderer, settings
from generation_app.nodes.browser.js_node import JsNode
from generation_app.nodes.browser.p5_node import P5Node
from generation_app.nodes.browser.p52vid_node import P52VidNode

from .conftest import png_of

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

HASHES = [
    "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697",
    "ooQx3pC4cM1NvKbzS8mqxV7JdRwYtF2gHiu9LkE5aWnB6sPj",
]
KIND = {"p5": "p5", "p52vid": "p5", "js": "page"}


@pytest.fixture
def warm_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    def use(enabled: bool) -> None:
        monkeypatch.setenv(settings.WARM_PAGES_ENV, "1" if enabled else "0")

    yield use
    renderer.shutdown()


def _node(name: str) -> Node:
    # Orbits at 10 fps (20 frames) keeps the test short; the frames are stepped the same way
    return {"p5": P5Node(), "p52vid": P52VidNode(fps=10), "js": JsNode()}[name]


def _first_values(demo: Demo) -> dict[str, Any]:
    return {v["name"]: v["value"]["values"][0] for v in demo.data["variables"]}


@pytest.mark.parametrize("demo", demos(), ids=lambda d: d.key)
def test_every_demo_sketch_gives_the_same_bytes_on_a_cold_and_on_a_warm_page(
    demo: Demo, make_ctx: Callable[..., RunContext], warm_pages: Callable[[bool], None],
) -> None:
    # given the demo's one step and two hashes
    (step,) = demo.data["steps"]
    name, payload = step["nodeName"], step["nodePayload"]
    ctxs = [make_ctx(h, seed=1000 + i, variables=_first_values(demo), node_name=name)
            for i, h in enumerate(HASHES)]

    # when each renders on a page opened for it (cold) and on a pre-warmed one
    warm_pages(False)
    cold = [_node(name).run(payload, ctx) for ctx in ctxs]
    warm_pages(True)
    warm = []
    for ctx in ctxs:
        assert renderer.prewarm([KIND[name]]) == {KIND[name]}
        warm.append(_node(name).run(payload, ctx))

    # then every file is byte for byte the same (the p52vid MP4 too: x264 is bit-exact), and the
    # two hashes differ
    def files(output: Any) -> dict[str, bytes]:
        return {f.filename: f.content for f in output.files}

    assert [files(o) for o in warm] == [files(o) for o in cold]
    assert files(cold[0]) != files(cold[1])


def test_a_sketch_sees_nothing_of_the_previous_render(
    make_ctx: Callable[..., RunContext], warm_pages: Callable[[bool], None],
) -> None:
    # given a render that leaves a global, storage, a cookie and a drawing behind
    warm_pages(True)
    renderer.prewarm(["p5"])
    P5Node().run({"code": """
        window.leftBehind = 1;
        var alsoLeft = 2;
        function setup() {
          createCanvas(8, 8);
          localStorage.setItem('left', '1');
          sessionStorage.setItem('left', '1');
          document.cookie = 'left=1';
          background(255, 0, 0);
          noLoop();
        }
    """}, make_ctx())

    # when the next render runs on a warm page
    assert renderer.prewarm(["p5"]) == {"p5"}
    out = P5Node().run({"code": """
        function setup() {
          createCanvas(8, 8);
          const clean = typeof leftBehind === 'undefined' && typeof alsoLeft === 'undefined'
            && localStorage.length === 0 && sessionStorage.length === 0
            && document.cookie === '' && get(4, 4)[3] === 0;
          background(clean ? color(0, 255, 0) : color(255, 0, 0));
          noLoop();
        }
    """}, make_ctx())

    # then it saw none of it (green)
    assert png_of(out.files[0].content).convert("RGB").getpixel((4, 4)) == (0, 255, 0)


def test_a_warm_page_runs_on_the_hash_it_is_given_not_the_one_it_was_opened_for(
    make_ctx: Callable[..., RunContext], warm_pages: Callable[[bool], None],
) -> None:
    # given a warm page opened before any generation was known
    warm_pages(True)
    assert renderer.prewarm(["p5"]) == {"p5"}
    code = """
        function setup() { createCanvas(4, 1); noLoop(); }
        function draw() {
          background(0);
          set(0, 0, color(pseudorandomInteger(0, 255), 0, 0));
          set(1, 0, color(Math.floor(Math.random() * 256), 0, 0));
          set(2, 0, color(Math.floor(random(256)), 0, 0));
          set(3, 0, color(getVariable('v') === 'x' ? 255 : 0, 0, 0));
          updatePixels();
        }
    """

    # when a render claims it, and the same render runs cold
    warm = P5Node().run({"code": code}, make_ctx(HASHES[1], variables={"v": "x"}))
    warm_pages(False)
    cold = P5Node().run({"code": code}, make_ctx(HASHES[1], variables={"v": "x"}))

    # then the PRNGs (pseudorandom*, Math.random after p5's own draws, p5's seeded random())
    # and the variables are the claimed generation's
    assert warm.files[0].content == cold.files[0].content
    pixels = png_of(warm.files[0].content).convert("RGB")
    assert pixels.getpixel((3, 0)) == (255, 0, 0)
