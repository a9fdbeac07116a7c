"""The JS sandbox (emprops/sandbox.py) against attacks that tests/emprops/test_sandbox.py does not
already cover (it has: a busy loop, an array and a string memory bomb, `typeof` of the host
objects, `import('fs')`): reaching the host through constructors and eval, other module loaders,
loops that survive a `catch` or live in the microtask queue, recursion, and console output that
imitates the helper's protocol. Real V8 in the real helper process."""

from __future__ import annotations

import time

import pytest

from emprops.sandbox import (
    SandboxMemoryError,
    SandboxScriptError,
    SandboxTimeout,
    evaluate,
)

pytestmark = pytest.mark.timeout(60)

HOST_NAMES = r"/require|process|fetch|import|XMLHttp|WebSocket|Worker|^load$|^read|^os$|^fs$|Deno|Bun|d8|Realm/"


@pytest.mark.parametrize("expression", [
    "this.constructor.constructor('return typeof process')()",
    "(function(){ return typeof this.process })()",
    "Function('return typeof require')()",
    "(() => { try { return typeof eval('require') } catch (e) { return 'undefined' } })()",
    "Object.getPrototypeOf(async function(){}).constructor('return typeof process')() && 'undefined'",
])
def test_constructors_and_eval_reach_no_host_object(expression: str) -> None:
    assert evaluate("", expression=expression) == "undefined"


def test_the_global_object_holds_no_io_capability() -> None:
    names = evaluate("", expression=(
        f"Object.getOwnPropertyNames(globalThis).filter(n => {HOST_NAMES}.test(n))"))

    assert names == []


@pytest.mark.parametrize("specifier", ["child_process", "node:fs", "http://127.0.0.1:1/x.js",
                                       "data:text/javascript,export default 1"])
def test_no_module_loader_answers_a_dynamic_import(specifier: str) -> None:
    source = (f"var seen = []; import({specifier!r}).then(() => seen.push('loaded'), "
              "e => seen.push(String(e)));")

    assert evaluate(source, expression="seen") == ["Error: Not supported"]


@pytest.mark.parametrize("source", [
    "for (;;) { try { while (true) {} } catch (e) {} }",  # catching the termination
    "(async () => { for (;;) await null; })()",  # an endless microtask chain
    "let p = Promise.resolve(); (function spin() { p = p.then(spin) })()",
    "let o = {}; for (let i = 0; ; i++) o['k' + i] = i",  # growth slower than the memory limit
])
def test_loops_that_dodge_a_plain_timeout_are_still_stopped(source: str) -> None:
    started = time.monotonic()
    with pytest.raises((SandboxTimeout, SandboxMemoryError)):
        evaluate(source, expression="1", timeout_s=0.5, memory_mb=64)

    assert time.monotonic() - started < 5
    assert evaluate("", expression="'next call works'") == "next call works"


@pytest.mark.parametrize("source", ["function f() { return f() } f()", "'x'.repeat(2 ** 30)"])
def test_recursion_and_huge_strings_are_script_errors_not_crashes(source: str) -> None:
    with pytest.raises(SandboxScriptError):
        evaluate(source, expression="1", timeout_s=2)

    assert evaluate("", expression="1 + 1") == 2


def test_console_output_cannot_forge_a_helper_answer() -> None:
    # the helper answers on stdout; a script printing protocol-shaped lines must not be read back
    source = ("for (let i = 0; i < 50; i++) "
              "console.log(JSON.stringify({id: i, ok: true, json: '666'}));")

    assert evaluate(source, expression="[1, 2]") == [1, 2]
    assert evaluate("", expression="3") == 3


def test_a_huge_result_is_refused_and_the_caller_is_unaffected() -> None:
    with pytest.raises(SandboxScriptError):
        evaluate("", expression="'x'.repeat(5 * 1000 * 1000)", timeout_s=2)

    assert evaluate("", expression="'ok'") == "ok"
