"""One persistent helper process per calling process, spoken to in newline-delimited JSON.

The JavaScript sandbox (`emprops/sandbox.py`) and the jq evaluator (`emprops/jqbox.py`) run
untrusted code in such a helper, so a runaway can at worst cost the helper, which is killed and
restarted; the Celery worker or web process that asked is never at risk. The protocol:

    parent -> child  {"ready": true}                                 (once, at start-up)
    parent -> child  {"id": n, ...request}
    child  -> parent {"id": n, "ack": true}                          (request read, about to run it)
    child  -> parent {"id": n, "ok": true, ...result}
                  or {"id": n, "ok": false, "kind": str, "message": str, ["fatal": true]}

The ack tells a helper that died between calls (kill -9, OOM killer) from one that the code
killed: the first is retried once on a fresh helper, transparently; the second is an error.
A helper that does not answer in `timeout_s + grace_s` is SIGKILLed: nothing that runs in it
(a C extension that ignores signals included) can hold the caller longer than that.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

_ACK_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 30.0


class HelperGone(Exception):
    """The helper closed its stdout (died) or broke the protocol."""


class HelperSilent(Exception):
    """The helper did not answer in time."""


class Helper:
    """One running helper process and the parent's end of its pipes."""

    def __init__(self, argv: Sequence[str], *, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # The helper needs no secrets from our environment (jq's `$ENV` would hand them to a
            # user's filter), nor our terminal's signals: it exits when its stdin closes.
            env={"PATH": os.defpath, "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"},
            cwd="/",
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout
        self._in_fd = self._in.fileno()
        self._out_fd = self._out.fileno()
        os.set_blocking(self._in_fd, False)
        self._selector = selectors.DefaultSelector()
        self._buffer = bytearray()
        try:
            ready = self.read_line(time.monotonic() + _START_TIMEOUT_S)
        except (HelperGone, HelperSilent) as exc:
            self.kill()
            raise HelperGone(f"did not start: {exc}") from exc
        if ready.get("ready") is not True:
            self.kill()
            raise HelperGone("did not start")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._in_fd, view)
            except BlockingIOError:
                self._wait(self._in_fd, selectors.EVENT_WRITE, deadline)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise HelperGone("stdin closed") from exc
            view = view[written:]

    def read_line(self, deadline: float) -> dict[str, Any]:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                try:
                    message = json.loads(line)
                except ValueError as exc:
                    raise HelperGone("unreadable line") from exc
                if not isinstance(message, dict):
                    raise HelperGone("unexpected line")
                return message
            if len(self._buffer) > self.max_line_bytes:
                raise HelperGone("line too long")
            self._wait(self._out_fd, selectors.EVENT_READ, deadline)
            chunk = os.read(self._out_fd, 1 << 16)
            if not chunk:
                raise HelperGone(f"exited ({self.proc.poll()})")
            self._buffer += chunk

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HelperSilent("no answer in time")
        self._selector.register(fd, event)
        try:
            ready = self._selector.select(remaining)
        finally:
            self._selector.unregister(fd)
        if not ready:
            raise HelperSilent("no answer in time")

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
        with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.abandon()

    def abandon(self) -> None:
        """Close our ends of the pipes without touching the process (used after fork)."""
        self._selector.close()
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
                stream.close()


class HelperPool:
    """The calling process's helper: started lazily, restarted after a crash, hang or fork.

    `on_unavailable`, `on_timeout` and `on_died` turn the helper's failures into the caller's
    own exception types; the answer itself (ok or not) is returned for the caller to read.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        grace_s: float,
        max_line_bytes: int,
        on_unavailable: Callable[[str], Exception],
        on_timeout: Callable[[str], Exception],
        on_died: Callable[[str], Exception],
    ) -> None:
        self._argv = list(argv)
        self._grace_s = grace_s
        self._max_line_bytes = max_line_bytes
        self._on_unavailable = on_unavailable
        self._on_timeout = on_timeout
        self._on_died = on_died
        self._lock = threading.Lock()
        self._helper: Helper | None = None
        self._owner_pid = os.getpid()
        self._ids = itertools.count(1)
        os.register_at_fork(after_in_child=self.after_fork_in_child)

    def after_fork_in_child(self) -> None:
        # The forked process must neither share the parent's helper (interleaved pipe traffic)
        # nor inherit a lock some other thread held at fork time.
        helper, self._helper = self._helper, None
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        if helper is not None:
            helper.abandon()

    def child_pid(self) -> int | None:
        """The helper's pid, if one is running (for tests and diagnostics)."""
        helper = self._helper
        return helper.proc.pid if helper is not None and self._owner_pid == os.getpid() else None

    def shutdown(self) -> None:
        with self._lock:
            if self._helper is not None:
                self._helper.kill()
                self._helper = None

    def exchange(self, request: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
        """Send one request and return the helper's answer (its `ok` says how it went)."""
        if self._owner_pid != os.getpid():  # forked without the at-fork hook (should not happen)
            self.after_fork_in_child()
        with self._lock:
            return self._exchange(request, timeout_s=timeout_s)

    def _exchange(self, request: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                helper = self._healthy_helper()
            except HelperGone as exc:
                raise self._on_unavailable(str(exc)) from exc
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, **request}, separators=(",", ":")).encode()
            try:
                helper.write(line + b"\n", time.monotonic() + _ACK_TIMEOUT_S)
                ack = helper.read_line(time.monotonic() + _ACK_TIMEOUT_S)
                if ack.get("id") != request_id or ack.get("ack") is not True:
                    raise HelperGone("out of step")
            except (HelperGone, HelperSilent) as exc:
                # The helper died before it started on this request (e.g. killed while idle):
                # nothing of the request ran, so one retry on a fresh helper is safe.
                self._discard(helper)
                if attempt == 2:
                    raise self._on_unavailable(str(exc)) from exc
                continue
            try:
                response = helper.read_line(time.monotonic() + timeout_s + self._grace_s)
                if response.get("id") != request_id:
                    raise HelperGone("out of step")
            except HelperSilent as exc:
                self._discard(helper)
                raise self._on_timeout(str(exc)) from exc
            except HelperGone as exc:
                self._discard(helper)
                raise self._on_died(str(exc)) from exc
            if response.get("fatal"):
                self._discard(helper)
            return response
        raise AssertionError("unreachable")

    def _healthy_helper(self) -> Helper:
        if self._helper is not None and not self._helper.alive:
            self._discard(self._helper)
        if self._helper is None:
            self._helper = Helper(self._argv, max_line_bytes=self._max_line_bytes)
        return self._helper

    def _discard(self, helper: Helper) -> None:
        helper.kill()
        if self._helper is helper:
            self._helper = None
