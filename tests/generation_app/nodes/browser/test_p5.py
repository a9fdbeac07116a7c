"""The p5 node against real Chromium and p5 1.11 from node_modules."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.browser import renderer
from generation_app.nodes.browser.p5_node import P5Node

from .conftest import RecordingServer, png_of, solid_png

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PRNG_SKETCH = """
function setup() {
  createCanvas(240, 160);
  noLoop();
}
function draw() {
  background(variables.background_color);
  noStroke();
  for (let i = 0; i < 40; i++) {
    fill(pseudorandomInteger(0, 255), pseudorandomInteger(0, 255), random(255));
    circle(pseudorandom(0, width), pseudorandom(0, height), pseudorandom(5, 60));
  }
  fill(Math.random() * 255);
  rect(0, 0, 20 + noise(1) * 20, 10);
}
"""


def test_three_hashes_give_three_different_pngs_at_the_sketch_size(
    make_ctx: Callable[..., RunContext],
) -> None:
    hashes = ["oo" + c * 49 for c in "abc"]

    outputs = [
        P5Node().run({"code": PRNG_SKETCH}, make_ctx(h, variables={"background_color": "#224"}))
        for h in hashes
    ]

    pngs = [output.files[0].content for output in outputs]
    assert len(set(pngs)) == 3
    for output, png in zip(outputs, pngs, strict=True):
        assert output.mime_type == "image/png"
        assert output.src_file == "p5.png"
        assert [(f.filename, f.mime_type) for f in output.files] == [("p5.png", "image/png")]
        assert png_of(png).size == (240, 160)


def test_the_same_hash_gives_the_same_bytes(make_ctx: Callable[..., RunContext]) -> None:
    animated = PRNG_SKETCH.replace("noLoop();", "").replace(
        "rect(0, 0,", "rect(millis() / 10 + frameCount, deltaTime,"
    )
    ctx = make_ctx(variables={"background_color": "#224"})

    first = P5Node().run({"code": animated}, ctx).files[0].content
    second = P5Node().run({"code": animated}, ctx).files[0].content

    assert first == second


def test_global_mode_saves_the_frame_that_calls_capture(
    make_ctx: Callable[..., RunContext],
) -> None:
    code = """
    function setup() { createCanvas(64, 32); }
    function draw() {
      background(variables.background_color);
      noStroke();
      fill(frameCount * 40, 0, 0);
      rect(32, 0, 32, 32);
      if (frameCount === 5) capture();
    }
    """

    output = P5Node().run({"code": code}, make_ctx(variables={"background_color": "#00ff00"}))

    image = png_of(output.files[0].content).convert("RGB")
    assert image.size == (64, 32)
    assert image.getpixel((8, 8)) == (0, 255, 0)
    assert image.getpixel((48, 16)) == (200, 0, 0)


def test_instance_mode_sketch_renders(make_ctx: Callable[..., RunContext]) -> None:
    code = """
    new p5((s) => {
      s.setup = () => { s.createCanvas(50, 40); s.noLoop(); };
      s.draw = () => { s.background(10, 20, 30); };
    });
    """

    output = P5Node().run({"code": code}, make_ctx())

    image = png_of(output.files[0].content).convert("RGB")
    assert image.size == (50, 40)
    assert image.getpixel((25, 20)) == (10, 20, 30)


def test_without_capture_or_noloop_the_frame_budget_decides(
    make_ctx: Callable[..., RunContext],
) -> None:
    code = """
    function setup() { createCanvas(10, 10); }
    function draw() { background(frameCount, 0, 0); }
    """

    output = P5Node(frame_budget=12).run({"code": code}, make_ctx())

    assert png_of(output.files[0].content).convert("RGB").getpixel((5, 5)) == (12, 0, 0)


def test_get_component_output_draws_an_upstream_image_read_from_storage(
    make_ctx: Callable[..., RunContext],
) -> None:
    key = "generations/u1/j1/0/3/p5.png"
    reads: list[str] = []
    ctx = make_ctx(
        components={
            3: {"src": f"http://localhost:8000/media/{key}?sig=abc", "mimeType": "image/png"}
        },
        aliases={"upstream": 3},
        stored={key: solid_png((8, 8), (0, 128, 255))},
        read_log=reads,
    )
    code = """
    let img;
    function preload() { img = loadImage(getComponentOutput('upstream')); }
    function setup() { createCanvas(40, 40); background(255); image(img, 0, 0, 20, 20); noLoop(); }
    """

    output = P5Node().run({"code": code}, ctx)

    image = png_of(output.files[0].content).convert("RGB")
    assert image.getpixel((10, 10)) == (0, 128, 255)
    assert image.getpixel((30, 30)) == (255, 255, 255)
    assert reads == [key]


@pytest.mark.parametrize("where", ["setup", "draw"])
def test_an_endless_loop_times_out_and_the_next_render_succeeds(
    make_ctx: Callable[..., RunContext], where: str
) -> None:
    code = f"""
    function setup() {{ createCanvas(10, 10); {"while (true) {}" if where == "setup" else ""} }}
    function draw() {{ {"while (true) {}" if where == "draw" else ""} }}
    """
    started = time.monotonic()

    with pytest.raises(NodeError) as failure:
        P5Node(timeout_s=2).run({"code": code}, make_ctx())

    assert time.monotonic() - started < 6
    assert failure.value.failure_type == "TIMEOUT"
    assert failure.value.retryable is False
    assert failure.value.message.startswith("Timed out after 2 s")
    after = P5Node().run({"code": "function setup(){createCanvas(12, 12)}"}, make_ctx())
    assert png_of(after.files[0].content).size == (12, 12)


def test_an_uncaught_exception_fails_with_its_message(make_ctx: Callable[..., RunContext]) -> None:
    code = """
    function setup() { createCanvas(10, 10); }
    function draw() { if (frameCount === 3) throw new Error('boom at frame ' + frameCount); }
    """

    with pytest.raises(NodeError) as failure:
        P5Node().run({"code": code}, make_ctx())

    assert failure.value.message == "Error: boom at frame 3"
    assert failure.value.retryable is False


def test_a_syntax_error_fails_with_its_message(make_ctx: Callable[..., RunContext]) -> None:
    with pytest.raises(NodeError) as failure:
        P5Node().run({"code": "function setup( {"}, make_ctx())

    assert failure.value.message.startswith("SyntaxError: ")
    assert failure.value.retryable is False


def test_console_error_alone_does_not_fail(make_ctx: Callable[..., RunContext]) -> None:
    code = """
    function setup() { createCanvas(10, 10); console.error('just saying'); noLoop(); }
    function draw() { background(1, 2, 3); console.error('again'); }
    """

    output = P5Node().run({"code": code}, make_ctx())

    assert png_of(output.files[0].content).convert("RGB").getpixel((5, 5)) == (1, 2, 3)


def test_requests_outside_the_job_are_refused_before_any_network(
    make_ctx: Callable[..., RunContext], recording_server: RecordingServer
) -> None:
    local = f"http://127.0.0.1:{recording_server.port}"
    code = f"""
    const outcomes = [];
    const tryFetch = (url) => fetch(url).then(() => 'loaded', () => 'refused');
    Promise.all([
      tryFetch('{local}/x'),
      tryFetch('https://example.com/'),
      tryFetch('http://localhost:{recording_server.port}/y'),
      new Promise((resolve) => {{
        const img = new Image();
        img.onload = () => resolve('loaded');
        img.onerror = () => resolve('refused');
        img.src = '{local}/img.png';
      }}),
      new Promise((resolve) => {{
        const ws = new WebSocket('ws://127.0.0.1:{recording_server.port}/ws');
        ws.onopen = () => resolve('loaded');
        ws.onerror = () => resolve('refused');
        ws.onclose = () => resolve('refused');
      }}),
    ]).then((all) => outcomes.push(...all));
    function setup() {{ createCanvas(10, 10); }}
    function draw() {{
      if (outcomes.length === 5) {{
        const refused = outcomes.filter((o) => o === 'refused').length;
        background(refused * 50, 0, 0);
        capture();
      }}
    }}
    """

    output = P5Node(frame_budget=100_000, timeout_s=20).run({"code": code}, make_ctx())

    assert png_of(output.files[0].content).convert("RGB").getpixel((5, 5)) == (250, 0, 0)
    assert recording_server.requests == []


def _browser_pid() -> int | None:
    """The Chromium this test process launched (a descendant with --remote-debugging-pipe)."""
    parents: dict[int, int] = {}
    browsers: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        if b"--remote-debugging-pipe" in cmdline:
            browsers.append(int(entry))
    for pid in browsers:
        ancestor = parents.get(pid)
        while ancestor and ancestor > 1:
            if ancestor == os.getpid():
                return pid
            ancestor = parents.get(ancestor)
    return None


def test_a_browser_crash_is_retryable_and_the_next_render_gets_a_fresh_browser(
    make_ctx: Callable[..., RunContext],
) -> None:
    P5Node().run({"code": "function setup(){createCanvas(5, 5)}"}, make_ctx())
    pid = _browser_pid()
    assert pid is not None
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
    killer.start()

    with pytest.raises(NodeError) as failure:
        P5Node(timeout_s=20).run({"code": "function draw(){ while (true) {} }"}, make_ctx())

    killer.join()
    assert failure.value.retryable is True
    after = P5Node().run({"code": "function setup(){createCanvas(6, 6)}"}, make_ctx())
    assert png_of(after.files[0].content).size == (6, 6)
    assert _browser_pid() not in (None, pid)


def test_a_forked_child_starts_its_own_browser(make_ctx: Callable[..., RunContext]) -> None:
    P5Node().run({"code": "function setup(){createCanvas(5, 5)}"}, make_ctx())
    parent_browser = _browser_pid()
    read_end, write_end = os.pipe()

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            out = P5Node().run({"code": "function setup(){createCanvas(7, 3)}"}, make_ctx())
            os.write(write_end, repr(png_of(out.files[0].content).size).encode())
            renderer.shutdown()
            code = 0
        finally:
            os._exit(code)

    os.close(write_end)
    _, status = os.waitpid(child, 0)
    reported = os.read(read_end, 100).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reported == "(7, 3)"
    assert _browser_pid() == parent_browser
    again = P5Node().run({"code": "function setup(){createCanvas(4, 4)}"}, make_ctx())
    assert png_of(again.files[0].content).size == (4, 4)
