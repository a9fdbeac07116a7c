"""Headless Chromium for the js, p5 and p52vid nodes.

One Chromium per worker process, launched on first use (never at import) and reused; every
render gets a fresh browser context (no shared cookies, storage or cache) that is closed
afterwards. A forked child starts its own browser on first use. Playwright's sync API is bound
to the thread that started it, so a worker that runs renders on several threads gets one
browser per thread.

Pre-warmed single-use pages. Starting a page and loading p5 into it, not drawing, is where a
render's time went (a fresh context and page per render with p5 loaded: ~0.8 s for a 512 px
still; the same sketch in a page that already has p5: ~20 ms). Reusing a page (or a page within
one job) would share a JavaScript realm, storage and canvas between sketches, and the browser's
code cache does not cross contexts; so instead every render still gets its own fresh context,
used once and closed, but that context is opened before the render is asked for: after each
render the browser thread opens the next one (its own context, the page contract installed,
p5 and p5hooks.js parsed and run) and leaves it waiting on the request for its env script
(`P5_ENV_URL`, held by the request router). A render claims it, answers the env script with
`__emprops.configure(env)` and the sketch, and goes on as on a cold page (runtime.js explains
why a page configured late runs a sketch the same way; tests/.../test_warm_pages.py compares
the bytes of the demo sketches on cold and warm pages). A `js` page gets a warm context and
page without navigation (its HTML is the user's). Nothing of one render is visible to the next:
no two renders ever share a context, and a warm page runs nothing but p5 before it is claimed.

The browser and its warm pages live on a thread of their own (one per calling thread), so the
next page warms while the worker stores this render's output; callers block on it and run the
render's callbacks (`resolve_url`, `on_frames`, `should_stop`) in their own thread.

Network: the page is served from a fake origin (`ORIGIN`) by request interception, never by a
server. Interception answers only the page's own documents, the p5 library from the project's
`node_modules`, and URLs for which `resolve_url` returns bytes (this job's outputs, read from
storage); every other request is aborted inside the browser before it reaches the network.
Behind that, Chromium is pointed at a proxy that does not exist, its host resolver resolves
nothing, and WebRTC may not send UDP, so a request that escaped interception could not leave
the machine either.

Failures (NodeError): an uncaught page exception -> its message, not retryable; the wall-time
limit -> failure_type TIMEOUT, not retryable, and the browser is kept; a crashed page or browser
-> retryable, and the browser is discarded so the next render launches a fresh one.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import math
import mimetypes
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.browser import settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, WebSocketRoute
    from playwright.sync_api import Error as PlaywrightError

ResolveUrl = Callable[[str], bytes | None]
"""Bytes for a URL the page may load (this job's outputs), or None to refuse the request."""

ORIGIN = "http://emprops.local"
PAGE_URL = f"{ORIGIN}/index.html"
SKETCH_URL = f"{ORIGIN}/sketch.js"
P5_URL = f"{ORIGIN}/static/p5.min.js"
P5_HOOKS_URL = f"{ORIGIN}/static/emprops-p5hooks.js"
P5_ENV_URL = f"{ORIGIN}/static/emprops-env.js"  # a warm p5 page's generation, sent when claimed

# Existing sketches load p5 from a CDN (jsdelivr, cdnjs, unpkg): any URL naming p5.js or
# p5.min.js gets the project's copy (1.11), never the network.
P5_CDN_PATH = re.compile(r"/p5(\.min)?\.js$")

CHROMIUM_PATH_ENV = "EMPROPS_CHROMIUM_PATH"
DEFAULT_CHROMIUM_PATH = "/usr/bin/chromium"
DEFAULT_VIEWPORT = (1024, 1024)
STILL_FRAME_MS = 1000 / 60  # virtual time between the frames of a still (p5's default rate)
LAUNCH_TIMEOUT_MS = 30_000

_HERE = Path(__file__).resolve().parent
P5_PATH = _HERE.parents[2] / "node_modules" / "p5" / "lib" / "p5.min.js"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    # WebGL sketches render with the software rasteriser.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


# ---- What can change the bytes of a render --------------------------------------------------------


@cache
def chromium_version() -> str:
    """The Chromium build renders run on (`chromium --version`, once per process), or
    "unknown" when it cannot be asked."""
    executable = os.environ.get(CHROMIUM_PATH_ENV, DEFAULT_CHROMIUM_PATH)
    try:
        out = subprocess.run(  # noqa: S603 - a fixed executable, no shell, no user input
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"(\d+(?:\.\d+)+)", out)
    return found.group(1) if found else "unknown"


@cache
def p5_version() -> str:
    """The version of the project's p5 library (node_modules/p5/package.json)."""
    try:
        return str(json.loads((P5_PATH.parents[1] / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def browser_env() -> dict[str, str]:
    """The environment fingerprint of a browser render: the Chromium major version (a minor
    update keeps the raster bit-identical in practice; a major one may not) and p5's version."""
    return {"chromium": chromium_version().split(".")[0], "p5": p5_version()}


# ---- What the page sees ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PageEnv:
    """The inputs of the page contract: the globals runtime.js defines before user code runs."""

    hash: str
    seed: int | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    components: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    aliases: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_context(cls, ctx: RunContext) -> PageEnv:
        return cls(
            hash=ctx.hash,
            seed=ctx.seed,
            variables=ctx.variables,
            components=ctx.components,
            aliases=ctx.aliases,
        )

    def init_script(self, *, live: bool = False) -> str:
        """runtime.js with this env; `live` keeps the real clock (for a page opened later)."""
        env = {
            "hash": self.hash,
            "seed": self.seed,
            "variables": dict(self.variables),
            "components": {str(k): dict(v) for k, v in self.components.items()},
            "aliases": dict(self.aliases),
            "live": live,
        }
        return f"window.__EMPROPS_ENV__ = {_json(env)};\n{_asset('runtime.js')}"

    def configure_script(self) -> str:
        """The env script of a warm p5 page: configures the page contract with this env."""
        env = {
            "hash": self.hash,
            "seed": self.seed,
            "variables": dict(self.variables),
            "components": {str(k): dict(v) for k, v in self.components.items()},
            "aliases": dict(self.aliases),
        }
        return f"window.__emprops.configure({_json(env)});\n"


def _json(value: Any) -> str:
    # `</` cannot end anything in a script file, but escaping keeps the JSON inert anywhere.
    return json.dumps(value, default=str).replace("</", "<\\/")


def _deferred_init_script() -> str:
    """runtime.js for a warm page: the clock and stepping now, the generation at `configure`."""
    return f"window.__EMPROPS_ENV__ = {{\"deferred\": true}};\n{_asset('runtime.js')}"


def job_output_resolver(ctx: RunContext) -> ResolveUrl:
    """A `resolve_url` that serves this job's outputs (the `src`/`altSrc` of ctx.components).

    Outputs are stored under `generations/{user}/{job}/{gid}/{step}/{filename}`, so a URL's
    storage key is its path from that prefix on, whatever host or query string (presigned S3
    URLs) it carries. Only keys of outputs listed in ctx.components are served, through
    ctx.read_output; anything else is refused.
    """
    marker = f"generations/{ctx.user_id}/{ctx.job_id}/"
    keys: set[str] = set()
    for output in ctx.components.values():
        for name in ("src", "altSrc"):
            url = output.get(name)
            if isinstance(url, str) and (key := _storage_key(url, marker)) is not None:
                keys.add(key)
    read_output = ctx.read_output

    def resolve(url: str) -> bytes | None:
        key = _storage_key(url, marker)
        if key is None or key not in keys or read_output is None:
            return None
        return read_output(key)

    return resolve


def _storage_key(url: str, marker: str) -> str | None:
    path = unquote(urlsplit(url).path)
    start = path.find(marker)
    return path[start:] if start >= 0 else None


def refuse_all(_url: str) -> bytes | None:
    """A `resolve_url` for pages that may load nothing but their own documents and p5."""
    return None


# ---- The browser of this process ----------------------------------------------------------------

_log = logging.getLogger(__name__)


@dataclass
class _Chromium:
    pid: int
    playwright: Playwright
    browser: Browser
    warm: dict[str, _WarmPage] = field(default_factory=dict)  # kind ("p5", "page") -> page
    wanted: set[str] = field(default_factory=set)  # kinds rendered so far: kept warm
    closing: list[BrowserContext] = field(default_factory=list)  # used, closed after the reply


_local = threading.local()


def _chromium() -> _Chromium:
    current: _Chromium | None = getattr(_local, "chromium", None)
    if current is not None:
        if current.pid != os.getpid():
            # Inherited through fork: the driver and browser belong to the parent; leave them be.
            current = None
        elif not current.browser.is_connected():
            _discard(current)
            current = None
    if current is None:
        current = _launch()
        _local.chromium = current
    return current


def _launch() -> _Chromium:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    executable = os.environ.get(CHROMIUM_PATH_ENV, DEFAULT_CHROMIUM_PATH)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
    except PlaywrightError as exc:
        playwright.stop()
        raise NodeError(
            f"Chromium could not start ({executable}): {exc.message}",
            retryable=True,
            failure_type="INTERNAL",
        ) from exc
    return _Chromium(pid=os.getpid(), playwright=playwright, browser=browser)


def _discard(chromium: _Chromium) -> None:
    if getattr(_local, "chromium", None) is chromium:
        _local.chromium = None
    chromium.warm.clear()
    chromium.closing.clear()
    # Closing a crashed or wedged browser can itself fail; stopping the driver kills it anyway.
    with suppress(Exception):
        chromium.browser.close()
    with suppress(Exception):
        chromium.playwright.stop()


def _close_used(chromium: _Chromium) -> None:
    from playwright.sync_api import Error as PlaywrightError

    while chromium.closing:
        context = chromium.closing.pop()
        try:
            context.close()
        except PlaywrightError:
            _discard(chromium)
            return


def _shutdown_here() -> None:
    current: _Chromium | None = getattr(_local, "chromium", None)
    if current is not None and current.pid == os.getpid():
        _discard(current)
    _local.chromium = None


# ---- The browser thread -------------------------------------------------------------------------

T = TypeVar("T")


class _Call:
    """One function run on the browser thread for a caller blocked in `_on_browser_thread`."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        # ("ok", value) | ("error", exception) | ("callback", _Callback), to the caller
        self.replies: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def execute(self) -> None:
        _local.call = self
        try:
            self.replies.put(("ok", self.fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            self.replies.put(("error", exc))
        finally:
            _local.call = None


class _Callback:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.outcome: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def run(self) -> None:
        try:
            self.outcome.put((True, self.fn(*self.args)))
        except Exception as exc:  # noqa: BLE001 - raised again on the browser thread
            self.outcome.put((False, exc))


def _in_caller(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` run in the thread that asked for the current call (storage reads, encoders, the
    cancel check belong to the worker's thread, not to the one that drives the browser)."""
    call: _Call | None = getattr(_local, "call", None)
    if call is None:
        return fn

    def run(*args: Any) -> T:
        callback = _Callback(fn, args)
        call.replies.put(("callback", callback))
        ok, value = callback.outcome.get()
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    return run


class _BrowserThread:
    """The thread that owns one calling thread's Playwright, browser and warm pages."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.requests: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # held while the thread warms or closes pages on its own; a fork waits for it
        # (_before_fork). Not during a call: its caller is blocked, or runs a callback that may
        # itself start a process (the p52vid encoder).
        self.busy = threading.Lock()
        self.held_for_fork = False
        self.thread = threading.Thread(target=self._run, name="emprops-browser", daemon=True)
        _threads.append(self)
        self.thread.start()

    def _run(self) -> None:
        while True:
            call = self.requests.get()
            if call is None:
                with self.busy:
                    _shutdown_here()
                return
            call.execute()
            chromium: _Chromium | None = getattr(_local, "chromium", None)
            if chromium is None:
                continue
            with self.busy:
                try:
                    _close_used(chromium)
                    if self.requests.empty() and chromium.browser.is_connected():
                        _top_up(chromium)
                except Exception:  # noqa: BLE001 - a broken browser is replaced on next use
                    _log.warning("browser housekeeping failed", exc_info=True)
                    _discard(chromium)

    def call(self, fn: Callable[[], T]) -> T:
        pending = _Call(fn)
        self.requests.put(pending)
        while True:
            try:
                kind, value = pending.replies.get(timeout=1.0)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise NodeError(
                        "The browser thread stopped", retryable=True, failure_type="INTERNAL"
                    ) from None
                continue
            if kind == "callback":
                value.run()
            elif kind == "ok":
                return value  # type: ignore[no-any-return]
            else:
                raise value

    def stop(self, timeout: float = 30.0) -> None:
        if self.pid == os.getpid() and self.thread.is_alive():
            self.requests.put(None)
            self.thread.join(timeout)
        with suppress(ValueError):
            _threads.remove(self)


_threads: list[_BrowserThread] = []  # this process's browser threads


def _before_fork() -> None:
    # A child must not inherit a browser thread stopped half-way through a Playwright call (its
    # locks would stay held in the child): wait until each is between calls, and hold it there.
    for worker in _threads:
        if worker.pid == os.getpid() and worker.thread.is_alive():
            worker.held_for_fork = worker.busy.acquire(timeout=LAUNCH_TIMEOUT_MS / 1000)


def _after_fork_in_parent() -> None:
    for worker in _threads:
        if worker.held_for_fork:
            worker.held_for_fork = False
            worker.busy.release()


def _after_fork_in_child() -> None:
    _threads.clear()  # the parent's; the child starts its own on first use


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def _on_browser_thread(fn: Callable[[], T]) -> T:
    """Run `fn` on this thread's browser thread (started on first use, again after a fork)."""
    worker: _BrowserThread | None = getattr(_local, "worker", None)
    if worker is None or worker.pid != os.getpid() or not worker.thread.is_alive():
        worker = _BrowserThread()
        _local.worker = worker
        atexit.register(worker.stop, 10.0)
    return worker.call(fn)


def prewarm(kinds: Iterable[str] = ("p5",)) -> set[str]:
    """Open a warm page of each kind ("p5", "page") now, launching the browser if needed, and
    return the kinds that have one waiting. Renders keep them topped up on their own; a worker
    may call this when it starts so that its first render is warm too."""

    def run() -> set[str]:
        chromium = _chromium()
        chromium.wanted.update(kinds)
        _top_up(chromium)
        return set(chromium.warm)

    return _on_browser_thread(run)


def shutdown() -> None:
    """Close this thread's browser and its warm pages, if a browser is running."""
    worker: _BrowserThread | None = getattr(_local, "worker", None)
    _local.worker = None
    if worker is not None:
        worker.stop()


# ---- Warm pages ---------------------------------------------------------------------------------


@dataclass
class _Routing:
    """What a context's request router serves. A warm page's router holds the requests in
    `hold` until the page is claimed, then answers them with the claimed documents."""

    documents: Mapping[str, tuple[bytes, str]]
    resolve_url: ResolveUrl
    render: _Render
    hold: frozenset[str] = frozenset()
    held: list[Route] = field(default_factory=list)
    handle: Callable[[Route], None] = lambda _route: None

    def claim(self, documents: Mapping[str, tuple[bytes, str]], resolve_url: ResolveUrl) -> None:
        self.documents, self.resolve_url, self.hold = documents, resolve_url, frozenset()
        held, self.held = self.held, []
        for route in held:
            self.handle(route)


@dataclass
class _WarmPage:
    kind: str
    context: BrowserContext
    render: _Render
    routing: _Routing


WARM_P5 = "p5"
WARM_PAGE = "page"

_P5_WARM_PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<style>html,body{margin:0;padding:0;overflow:hidden;background:#fff}canvas{display:block}</style>
<script>%(p5)s</script><script>%(hooks)s</script><script src="%(env)s"></script>
</head><body><script src="%(sketch)s"></script></body></html>
"""


@cache
def _p5_warm_document() -> bytes:
    library = _p5_library().decode()
    if "</script" in library.lower():  # it cannot be inlined; never the case for p5 1.x
        raise NodeError("p5 cannot be inlined in a page", failure_type="INTERNAL")
    page = _P5_WARM_PAGE % {"p5": library, "hooks": _asset("p5hooks.js"), "env": P5_ENV_URL,
                            "sketch": SKETCH_URL}
    return page.encode()


def _open_context(chromium: _Chromium, viewport: tuple[int, int]) -> BrowserContext:
    return chromium.browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        device_scale_factor=1,
        service_workers="block",
        color_scheme="light",
        locale="en-US",
        timezone_id="UTC",
    )


def _prepare(context: BrowserContext, routing: _Routing) -> Page:
    page = context.new_page()
    render = routing.render
    render.page = page
    page.on(
        "pageerror", lambda err: render.page_errors.append(_error_text(err.name, err.message))
    )
    page.on("crash", lambda _page: setattr(render, "crashed", True))
    routing.handle = _router(routing)
    context.route("**/*", routing.handle)
    context.route_web_socket("**/*", _refuse_websocket)
    return page


def _warm(chromium: _Chromium, kind: str) -> _WarmPage:
    """A fresh context for one render of `kind`, opened ahead of time (see the module doc)."""
    context = _open_context(chromium, DEFAULT_VIEWPORT)
    try:
        render = _Render(page=None, deadline=math.inf, timeout_s=0.0)  # type: ignore[arg-type]
        hold = frozenset({P5_ENV_URL, SKETCH_URL}) if kind == WARM_P5 else frozenset()
        routing = _Routing(documents={}, resolve_url=refuse_all, render=render, hold=hold)
        page = _prepare(context, routing)
        if kind == WARM_P5:
            routing.documents = {PAGE_URL: (_p5_warm_document(), _HTML)}
            context.add_init_script(script=_deferred_init_script())
            # "commit": the page goes on parsing p5 on its own and then waits for its env script
            page.goto(PAGE_URL, wait_until="commit", timeout=LAUNCH_TIMEOUT_MS)
            routing.documents = {}
    except BaseException:
        with suppress(Exception):
            context.close()
        raise
    return _WarmPage(kind=kind, context=context, render=render, routing=routing)


def _top_up(chromium: _Chromium) -> None:
    """Open a warm page of every kind this process renders that has none waiting."""
    if settings.warm_pages() <= 0:
        return
    for kind in sorted(chromium.wanted - chromium.warm.keys()):
        try:
            chromium.warm[kind] = _warm(chromium, kind)
        except Exception:  # noqa: BLE001 - the next render opens its page cold and reports
            _log.warning("could not warm a %s page", kind, exc_info=True)
            if not chromium.browser.is_connected():
                _discard(chromium)
            return


def _claim(chromium: _Chromium, kind: str, viewport: tuple[int, int]) -> _WarmPage | None:
    chromium.wanted.add(kind)
    warm = chromium.warm.pop(kind, None)
    if warm is None or viewport != DEFAULT_VIEWPORT or settings.warm_pages() <= 0:
        if warm is not None:
            chromium.warm[kind] = warm
        return None
    if warm.render.crashed or warm.render.page.is_closed():
        chromium.closing.append(warm.context)
        return None
    return warm


# ---- One render ---------------------------------------------------------------------------------


@dataclass
class _Render:
    """A page in a fresh context, with the deadline and the errors it has seen so far."""

    page: Page
    deadline: float
    timeout_s: float
    page_errors: list[str] = field(default_factory=list)
    storage_errors: list[str] = field(default_factory=list)
    crashed: bool = False
    warm: bool = False  # a pre-warmed page: already navigated

    def call(self, function: str, arg: Any = None) -> Any:
        """Run an async page function under the deadline and return its JSON result.

        `wait_for_function` rather than `evaluate`: its timeout is kept by the Playwright driver,
        so it fires even while the page's main thread is stuck in `while (true) {}`.
        """
        handle = self.page.wait_for_function(
            function, arg=arg, timeout=self.remaining_ms(), polling=100
        )
        try:
            return handle.json_value()
        finally:
            handle.dispose()

    def remaining_ms(self) -> float:
        remaining = (self.deadline - time.monotonic()) * 1000
        if remaining <= 0:
            raise _DeadlineReached
        return remaining

    def raise_if_failed(self, result: Mapping[str, Any] | None = None) -> None:
        # A failed storage read comes first: the page's own error is then only its symptom.
        if self.storage_errors:
            raise NodeError(self.storage_errors[0], retryable=True)
        errors = (result or {}).get("errors") or []
        if errors:
            first = errors[0]
            raise NodeError(_error_text(first.get("name"), first.get("message")), retryable=False)
        if self.page_errors:
            raise NodeError(self.page_errors[0], retryable=False)


class _DeadlineReached(Exception):
    pass


def _error_text(name: object, message: object) -> str:
    text = str(message or "").strip() or "Unknown error"
    return f"{name}: {text}" if name else text


@contextmanager
def _render(
    *,
    env: PageEnv,
    documents: Mapping[str, tuple[bytes, str]],
    resolve_url: ResolveUrl,
    timeout_s: float,
    viewport: tuple[int, int],
    warm_kind: str | None = None,
    warm_documents: Mapping[str, tuple[bytes, str]] | None = None,
) -> Iterator[_Render]:
    """A fresh context and page for one render, closed afterwards; errors mapped to NodeError.

    With `warm_kind`, a warm page of that kind is used when one is waiting: a p5 page is then
    already navigated (`render.warm`) and served `warm_documents`; a plain page gets the page
    contract and `documents` as a cold one would.
    """
    from playwright.sync_api import Error as PlaywrightError

    chromium = _chromium()
    context: BrowserContext | None = None
    render: _Render | None = None
    try:
        warm = _claim(chromium, warm_kind, viewport) if warm_kind else None
        if warm is not None:
            context, render = warm.context, warm.render
            render.deadline, render.timeout_s = time.monotonic() + timeout_s, timeout_s
            if warm.kind == WARM_P5:
                render.warm = True
                warm.routing.claim(warm_documents or {}, resolve_url)
            else:
                context.add_init_script(script=env.init_script())
                warm.routing.claim(documents, resolve_url)
        else:
            context = _open_context(chromium, viewport)
            render = _Render(page=None, deadline=math.inf, timeout_s=timeout_s)  # type: ignore[arg-type]
            routing = _Routing(documents=documents, resolve_url=resolve_url, render=render)
            _prepare(context, routing)
            render.deadline = time.monotonic() + timeout_s
            context.add_init_script(script=env.init_script())
        yield render
    except _DeadlineReached:
        raise _timeout_error(timeout_s) from None
    except PlaywrightError as exc:
        crashed = render is not None and render.page is not None and (
            render.crashed or render.page.is_closed())
        if crashed or "crash" in exc.message.lower() or not chromium.browser.is_connected():
            context = None
            _discard(chromium)
            raise NodeError(
                f"The browser crashed: {exc.message}", retryable=True, failure_type="INTERNAL"
            ) from exc
        if _is_timeout(exc):
            raise _timeout_error(timeout_s) from exc
        # The page is alive, so this is the page's own doing (e.g. a tainted canvas).
        raise NodeError(_strip_playwright_prefix(exc.message), retryable=False) from exc
    finally:
        if context is not None and chromium.browser.is_connected():
            # closed by the browser thread once the caller has its result (_close_used)
            chromium.closing.append(context)


def _is_timeout(exc: PlaywrightError) -> bool:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    return isinstance(exc, PlaywrightTimeoutError)


def _timeout_error(timeout_s: float) -> NodeError:
    return NodeError(
        f"Timed out after {timeout_s:g} s: the page did not finish rendering in time",
        retryable=False,
        failure_type="TIMEOUT",
    )


def _strip_playwright_prefix(message: str) -> str:
    # "Page.wait_for_function: Error: x" -> "Error: x"
    head, sep, tail = message.partition(": ")
    return tail if sep and "." in head and " " not in head else message


def _refuse_websocket(ws: WebSocketRoute) -> None:
    ws.close(code=1008, reason="Network access is not allowed")


def _router(routing: _Routing) -> Callable[[Route], None]:
    resolved: dict[str, tuple[bytes, str] | None] = {}  # p5's loadImage asks for a URL twice

    def handle(route: Route) -> None:
        url = route.request.url.split("#", 1)[0]
        if url in routing.hold:
            routing.held.append(route)  # answered when the page is claimed
            return
        try:
            found = routing.documents.get(url)
            if found is None and (url == P5_URL or P5_CDN_PATH.search(urlsplit(url).path)):
                library = _p5_library_or_none()
                found = None if library is None else (library, _JS)
            if found is None and url.startswith(("http://", "https://")):
                if url not in resolved:
                    resolved[url] = _resolve(url, routing.resolve_url, routing.render)
                found = resolved[url]
            if found is None:
                route.abort("blockedbyclient")
                return
            route.fulfill(
                status=200,
                body=found[0],
                headers={
                    "Content-Type": found[1],
                    # Job outputs live on another "origin" than the page; p5's loadImage asks for
                    # CORS so the canvas stays readable.
                    "Access-Control-Allow-Origin": "*",
                    "Cache-Control": "no-store",
                },
            )
        except Exception:  # noqa: BLE001 - the page or context went away mid-request
            with suppress(Exception):
                route.abort("failed")

    return handle


def _resolve(url: str, resolve_url: ResolveUrl, render: _Render) -> tuple[bytes, str] | None:
    try:
        body = resolve_url(url)
    except Exception as exc:  # noqa: BLE001 - storage trouble fails the render, retryably
        render.storage_errors.append(f"Could not read {url}: {exc}")
        return None
    return None if body is None else (body, _content_type(url, body))


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def _content_type(url: str, body: bytes) -> str:
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    if guessed:
        return guessed
    for magic, mime in _MAGIC:
        if body.startswith(magic):
            return mime
    return "application/octet-stream"


_assets: dict[str, str] = {}


def _asset(name: str) -> str:
    if name not in _assets:
        _assets[name] = (_HERE / name).read_text(encoding="utf-8")
    return _assets[name]


_p5_bytes: list[bytes] = []


def _p5_library_or_none() -> bytes | None:
    if not _p5_bytes:
        try:
            _p5_bytes.append(P5_PATH.read_bytes())
        except OSError:
            return None
    return _p5_bytes[0]


def _p5_library() -> bytes:
    library = _p5_library_or_none()
    if library is None:
        raise NodeError(
            f"p5 is not installed at {P5_PATH} (run `npm ci` in the project root)",
            retryable=True,
            failure_type="INTERNAL",
        )
    return library


def _data_url_bytes(data_url: str) -> bytes:
    return base64.b64decode(data_url.split(",", 1)[1])


# ---- Renders ------------------------------------------------------------------------------------

_P5_PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<style>html,body{margin:0;padding:0;overflow:hidden;background:#fff}canvas{display:block}</style>
<script src="%(p5)s"></script><script src="%(hooks)s"></script>
</head><body><script src="%(sketch)s"></script></body></html>
"""

_JS = "application/javascript; charset=utf-8"
_HTML = "text/html; charset=utf-8"


def _p5_documents(code: str) -> dict[str, tuple[bytes, str]]:
    page = _P5_PAGE % {"p5": P5_URL, "hooks": P5_HOOKS_URL, "sketch": SKETCH_URL}
    return {
        PAGE_URL: (page.encode(), _HTML),
        P5_URL: (_p5_library(), _JS),
        P5_HOOKS_URL: (_asset("p5hooks.js").encode(), _JS),
        SKETCH_URL: (code.encode(), _JS),
    }


def screenshot_html(
    html: str,
    *,
    env: PageEnv,
    resolve_url: ResolveUrl = refuse_all,
    timeout_s: float,
    viewport: tuple[int, int] = DEFAULT_VIEWPORT,
) -> bytes:
    """A PNG screenshot of the viewport once the page has settled.

    Settled = loaded, fonts ready and two animation frames run; a page that called
    `deferCapture()` is shot when it calls `capture()` (frames keep running meanwhile).
    The page may load p5 from `P5_URL`.
    """
    documents = {PAGE_URL: (html.encode(), _HTML)}

    def run() -> bytes:
        with _render(
            env=env,
            documents=documents,
            resolve_url=_in_caller(resolve_url),
            timeout_s=timeout_s,
            viewport=viewport,
            warm_kind=WARM_PAGE,
        ) as render:
            render.page.goto(PAGE_URL, wait_until="load", timeout=render.remaining_ms())
            render.raise_if_failed()
            result = render.call("o => window.__emprops.settlePage(o)", {"dt": STILL_FRAME_MS})
            render.raise_if_failed(result)
            png = render.page.screenshot(
                type="png", timeout=render.remaining_ms(), animations="disabled", caret="hide"
            )
            render.raise_if_failed()
            return png

    return _on_browser_thread(run)


@dataclass(frozen=True)
class Still:
    """The saved frame of a p5 sketch and why that frame was chosen."""

    png: bytes
    width: int
    height: int
    frame_count: int
    reason: str  # "capture" | "noLoop" | "budget"


@contextmanager
def _p5_page(code: str, *, env: PageEnv, resolve_url: ResolveUrl, timeout_s: float,
             viewport: tuple[int, int]) -> Iterator[_Render]:
    """A loaded page running the sketch, its load errors raised (on the browser thread)."""
    warm_documents = {
        P5_ENV_URL: (env.configure_script().encode(), _JS),
        SKETCH_URL: (code.encode(), _JS),
    }
    with _render(
        env=env,
        documents=_p5_documents(code),
        resolve_url=_in_caller(resolve_url),
        timeout_s=timeout_s,
        viewport=viewport,
        warm_kind=WARM_P5,
        warm_documents=warm_documents,
    ) as render:
        if render.warm:
            render.page.wait_for_load_state("load", timeout=render.remaining_ms())
        else:
            render.page.goto(PAGE_URL, wait_until="load", timeout=render.remaining_ms())
        render.raise_if_failed()
        yield render


def render_p5_still(
    code: str,
    *,
    env: PageEnv,
    resolve_url: ResolveUrl = refuse_all,
    timeout_s: float,
    frame_budget: int,
    viewport: tuple[int, int] = DEFAULT_VIEWPORT,
) -> Still:
    """Run a p5 sketch with frames stepped at 60 per virtual second and save one frame.

    The saved frame is the one in which the sketch called `capture()`; else the frame after
    which `noLoop()` took effect (or setup's canvas, with no draw()); else frame `frame_budget`.
    """

    def run() -> Still:
        with _p5_page(code, env=env, resolve_url=resolve_url, timeout_s=timeout_s,
                      viewport=viewport) as render:
            result = render.call(
                "o => window.__emprops.p5Still(o)",
                {"dt": STILL_FRAME_MS, "frameBudget": frame_budget, "pollMs": 10,
                 "noSketchMs": 1000},
            )
            render.raise_if_failed(result)
            return Still(
                png=_data_url_bytes(result["png"]),
                width=int(result["width"]),
                height=int(result["height"]),
                frame_count=int(result["frameCount"]),
                reason=str(result["reason"]),
            )

    return _on_browser_thread(run)


@dataclass(frozen=True)
class Frame:
    """One video frame as the canvas saw it."""

    png: bytes
    width: int
    height: int


def render_p5_frames(
    code: str,
    *,
    env: PageEnv,
    resolve_url: ResolveUrl = refuse_all,
    timeout_s: float,
    fps: float,
    frame_count: int,
    on_frames: Callable[[list[Frame]], None],
    batch_size: int = 16,
    should_stop: Callable[[], bool] = lambda: False,
    viewport: tuple[int, int] = DEFAULT_VIEWPORT,
) -> None:
    """Step a p5 sketch `frame_count` frames at `fps` (virtual time) and hand each canvas over.

    Frame i (from 1) is drawn at millis() = i * 1000 / fps with deltaTime = 1000 / fps.
    `on_frames` receives the frames in order, a batch at a time; `should_stop` is polled between
    batches and ends the render early (without error) when it returns True.
    """

    def run() -> None:
        hand_over, stop = _in_caller(on_frames), _in_caller(should_stop)
        with _p5_page(code, env=env, resolve_url=resolve_url, timeout_s=timeout_s,
                      viewport=viewport) as render:
            done = 0
            while done < frame_count and not stop():
                count = min(batch_size, frame_count - done)
                result = render.call(
                    "o => window.__emprops.p5Frames(o)",
                    {"dt": 1000 / fps, "count": count, "pollMs": 10, "noSketchMs": 1000},
                )
                render.raise_if_failed(result)
                frames = [
                    Frame(png=_data_url_bytes(f["png"]), width=int(f["width"]),
                          height=int(f["height"]))
                    for f in result["frames"]
                ]
                hand_over(frames)
                done += len(frames)

    _on_browser_thread(run)


def evaluate_in_page(function: str, *, env: PageEnv, timeout_s: float, arg: Any = None) -> Any:
    """The JSON result of a JS function run in a blank page with the page contract installed.

    For diagnostics and tests of the contract itself (PRNG values, globals). The function must
    return something truthy.
    """
    documents = {PAGE_URL: (b"<!doctype html><html><body></body></html>", _HTML)}

    def run() -> Any:
        with _render(
            env=env,
            documents=documents,
            resolve_url=refuse_all,
            timeout_s=timeout_s,
            viewport=DEFAULT_VIEWPORT,
        ) as render:
            render.page.goto(PAGE_URL, wait_until="load", timeout=render.remaining_ms())
            result = render.call(function, arg)
            render.raise_if_failed()
            return result

    return _on_browser_thread(run)
