"""A p5 page that tries every way out of the browser to a loopback listener: fetch, XHR, a
WebSocket, an image and a worker (a cross-origin worker script, and a blob worker that fetches
from inside). The listener is a raw TCP socket, so it counts connections, not just HTTP requests
a route saw: it must accept none. Real Chromium through the renderer, no Django."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from generation_app.nodes.base import RunContext
from generation_app.nodes.browser.p5_node import P5Node

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """No Redis or Django here: the suite-wide cleanup does not apply."""


@pytest.fixture(autouse=True, scope="module")
def _close_browser_after_module() -> Iterator[None]:
    # Playwright's sync API keeps an asyncio loop on this thread while a browser is open
    yield
    from generation_app.nodes.browser import renderer

    renderer.shutdown()


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that records every connection it accepts (and its first bytes)."""

    def __init__(self) -> None:
        self.connections: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.5)
                try:
                    self.connections.append(conn.recv(200))
                except OSError:
                    self.connections.append(b"")

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[ConnectionRecorder]:
    recorder = ConnectionRecorder()
    # the listener does record: one connection of our own first, then a clean slate
    with socket.create_connection(("127.0.0.1", recorder.port)) as probe:
        probe.sendall(b"probe")
    deadline = time.monotonic() + 5
    while not recorder.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.connections == [b"probe"]
    recorder.connections.clear()
    yield recorder
    recorder.close()


def _ctx() -> RunContext:
    def read_output(key: str) -> bytes:
        raise KeyError(key)

    return RunContext(user_id="u1", job_id="j1", gid=0, step_id=1, node_name="p5", alias=None,
                      hash="0x" + "ab" * 32, seed=1, variables={}, components={}, aliases={},
                      read_output=read_output)


ATTEMPTS = """
const target = 'http://127.0.0.1:PORT';
const outcomes = {};
const settle = (name, promise) => promise.then((v) => { outcomes[name] = v; },
                                               () => { outcomes[name] = 'refused'; });
const event = (setup) => new Promise((resolve) => setup(resolve));
settle('fetch', fetch(target + '/fetch').then(() => 'loaded'));
settle('xhr', event((done) => {
  const xhr = new XMLHttpRequest();
  xhr.onload = () => done('loaded');
  xhr.onerror = () => done('refused');
  xhr.open('GET', target + '/xhr');
  xhr.send();
}));
settle('websocket', event((done) => {
  const ws = new WebSocket('ws://127.0.0.1:PORT/ws');
  ws.onopen = () => done('loaded');
  ws.onerror = () => done('refused');
  ws.onclose = () => done('refused');
}));
settle('image', event((done) => {
  const img = new Image();
  img.onload = () => done('loaded');
  img.onerror = () => done('refused');
  img.src = target + '/img.png';
}));
settle('worker', event((done) => {
  try {
    const w = new Worker(target + '/worker.js');
    w.onmessage = () => done('loaded');
    w.onerror = () => done('refused');
  } catch (e) { done('refused'); }
}));
settle('blob worker', event((done) => {
  const code = "fetch('" + target + "/from-worker').then(() => postMessage('loaded'), " +
               "() => postMessage('refused'))";
  try {
    const w = new Worker(URL.createObjectURL(new Blob([code], {type: 'text/javascript'})));
    w.onmessage = (m) => done(m.data);
    w.onerror = () => done('refused');
  } catch (e) { done('refused'); }
}));
function setup() { createCanvas(10, 10); }
function draw() {
  const names = Object.keys(outcomes);
  if (names.length === 6) {
    const refused = names.filter((n) => outcomes[n] === 'refused').length;
    background(refused * 40, 0, 0);
    capture();
  }
}
"""


def test_no_way_out_of_a_p5_page_reaches_a_loopback_listener(listener: ConnectionRecorder) -> None:
    code = ATTEMPTS.replace("PORT", str(listener.port))

    output = P5Node(frame_budget=100_000, timeout_s=30).run({"code": code}, _ctx())

    image = Image.open(io.BytesIO(output.files[0].content)).convert("RGB")
    # six attempts settled, all refused (the red channel counts them)
    assert image.getpixel((5, 5)) == (240, 0, 0)
    assert listener.connections == []
