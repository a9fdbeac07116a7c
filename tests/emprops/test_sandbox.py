"""The JavaScript sandbox: a real helper process running real V8, no mocks."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from decimal import Decimal

import pytest

from emprops import sandbox
from emprops.sandbox import (
    SandboxCrash,
    SandboxError,
    SandboxMemoryError,
    SandboxScriptError,
    SandboxTimeout,
    call_function,
    credits_cost,
    eval_condition,
    evaluate,
)

pytestmark = pytest.mark.timeout(60)

STEPS_SCRIPT = """
function computeCost(context) {
  const steps = parseInt(context.steps || 20);
  return { cost: Math.ceil(steps / 10) };
}
"""
LENGTH_SCRIPT = "function computeCost(context){ let l = Number(context.length) || 5; return l * 2 }"
AREA_SCRIPT = """
function computeCost(context) {
  return { cost: (context.width * context.height) / (1024 * 1024) };
}
"""
MEMORY_BOMB = "let a=[]; while(true) a.push(new Array(1e6).fill(1))"


def helper_pid() -> int:
    pid = sandbox._pool.child_pid()
    assert pid is not None
    return pid


def wait_until_dead(pid: int) -> None:
    # The helper is our child: reap it only through the pool, so poll /proc for the zombie state.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not die")


# --- evaluate / call_function ------------------------------------------------------------------


def test_evaluate_runs_source_then_returns_the_expression_as_json() -> None:
    result = evaluate("const base = 40;", expression="({answer: base + 2, list: [1, 'a', null]})")

    assert result == {"answer": 42, "list": [1, "a", None]}


def test_undefined_becomes_none() -> None:
    assert evaluate("", expression="undefined") is None


@pytest.mark.parametrize("expression", ["(function () {})", "Symbol('s')", "10n"])
def test_a_result_that_is_not_json_is_an_error(expression: str) -> None:
    with pytest.raises(SandboxScriptError):
        evaluate("", expression=expression)


def test_a_throwing_script_is_a_script_error_naming_the_error() -> None:
    with pytest.raises(SandboxScriptError, match="boom") as raised:
        evaluate("throw new Error('boom')", expression="1")

    assert raised.value.kind == "script"


def test_a_syntax_error_is_a_script_error() -> None:
    with pytest.raises(SandboxScriptError, match="SyntaxError"):
        evaluate("function (", expression="1")


def test_call_function_passes_a_json_argument() -> None:
    source = "function area(box) { return {area: box.w * box.h, tag: box.tag}; }"

    assert call_function(source, "area", {"w": 3, "h": 4, "tag": "é\u2028"}) == {
        "area": 12,
        "tag": "é\u2028",
    }


def test_call_function_refuses_a_name_that_is_not_a_function_path() -> None:
    with pytest.raises(ValueError):
        call_function("", "x); while(true){", 1)


def test_every_evaluation_gets_a_fresh_global_scope() -> None:
    evaluate("globalThis.leak = 'from a previous user'", expression="1")

    assert evaluate("", expression="typeof leak") == "undefined"


def test_no_io_or_host_objects_are_reachable() -> None:
    names = [
        "require",
        "fetch",
        "process",
        "XMLHttpRequest",
        "setTimeout",
        "ArrayBuffer",
        "SharedArrayBuffer",
        "WebAssembly",
        "Uint8Array",
        "Atomics",
        "module",
        "Deno",
        "Bun",
    ]
    expression = "[" + ", ".join(f"typeof {name}" for name in names) + "]"

    assert evaluate("", expression=expression) == ["undefined"] * len(names)
    # There is no module loader: a dynamic import rejects.
    source = (
        "var seen = []; import('fs').then(() => seen.push('loaded'), e => seen.push(String(e)));"
    )
    assert evaluate(source, expression="seen") == ["Error: Not supported"]


# --- limits and failures -----------------------------------------------------------------------


def test_an_infinite_loop_times_out_and_the_next_call_works() -> None:
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as raised:
        evaluate("while (true) {}", expression="1", timeout_s=0.3)
    elapsed = time.monotonic() - started

    assert raised.value.kind == "timeout"
    assert 0.3 <= elapsed < 2.0
    assert evaluate("", expression="1 + 1") == 2


def test_the_time_limit_covers_source_and_expression_together() -> None:
    source = "function spin(ms) { const end = Date.now() + ms; while (Date.now() < end) {} }"

    with pytest.raises(SandboxTimeout):
        evaluate(source + "; spin(200)", expression="spin(200)", timeout_s=0.3)


def test_a_memory_bomb_is_stopped_and_the_caller_is_unaffected() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with pytest.raises(SandboxMemoryError) as raised:
        evaluate(MEMORY_BOMB, expression="1", timeout_s=10, memory_mb=64)

    assert raised.value.kind == "memory"
    assert evaluate("", expression="'still here'") == "still here"
    # The allocation happened in the helper, not here (ru_maxrss is in KiB on Linux).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 32 * 1024


def test_a_string_bomb_is_stopped() -> None:
    with pytest.raises((SandboxMemoryError, SandboxScriptError)):
        evaluate("let s = 'x'; while (true) s = s + s;", expression="s.length", timeout_s=10)
    assert evaluate("", expression="3") == 3


def test_a_helper_killed_between_calls_is_restarted_transparently() -> None:
    assert evaluate("", expression="1") == 1
    pid = helper_pid()

    os.kill(pid, signal.SIGKILL)
    wait_until_dead(pid)

    assert evaluate("", expression="2") == 2
    assert helper_pid() != pid


def test_a_helper_dying_mid_script_is_a_crash_and_the_next_call_works() -> None:
    assert evaluate("", expression="1") == 1
    pid = helper_pid()
    killer = threading.Timer(0.3, os.kill, args=(pid, signal.SIGKILL))
    killer.start()

    with pytest.raises(SandboxCrash) as raised:
        evaluate("while (true) {}", expression="1", timeout_s=10)

    killer.join()
    assert raised.value.kind == "crash"
    assert evaluate("", expression="'recovered'") == "recovered"
    assert helper_pid() != pid


def test_a_hung_helper_is_killed_at_the_parent_deadline() -> None:
    assert evaluate("", expression="1") == 1
    pid = helper_pid()
    # A stopped process stands in for a V8 that ignores its own timeout.
    stopper = threading.Timer(0.2, os.kill, args=(pid, signal.SIGSTOP))
    stopper.start()

    started = time.monotonic()
    with pytest.raises(SandboxTimeout):
        evaluate("const end = Date.now() + 400; while (Date.now() < end) {}", expression="1")
    stopper.join()

    assert time.monotonic() - started < 1.0 + sandbox._GRACE_S + 1.0
    wait_until_dead(pid)
    assert evaluate("", expression="5") == 5


def test_concurrent_callers_get_their_own_answers() -> None:
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                got = call_function("function f(x) { return x * 2; }", "f", n * 100 + i)
                assert got == (n * 100 + i) * 2
            results[n] = got
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert results == {n: (n * 100 + 9) * 2 for n in range(8)}


def test_a_forked_child_gets_its_own_helper_and_the_parent_keeps_its_own() -> None:
    assert evaluate("", expression="'parent'") == "parent"
    parent_helper = helper_pid()
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read_end)
            ok = evaluate(
                "", expression="'child'"
            ) == "child" and sandbox._pool.child_pid() not in (None, parent_helper)
            os.write(write_end, b"ok" if ok else b"bad")
            code = 0
        finally:
            sandbox._pool.shutdown()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        child_report = report.read()
    _, status = os.waitpid(pid, 0)

    assert child_report == b"ok"
    assert os.waitstatus_to_exitcode(status) == 0
    assert evaluate("", expression="'parent again'") == "parent again"
    assert helper_pid() == parent_helper


def test_sandbox_errors_share_a_base_class() -> None:
    for error in (SandboxTimeout, SandboxMemoryError, SandboxScriptError, SandboxCrash):
        assert issubclass(error, SandboxError)


# --- credits_cost ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "payload", "cost"),
    [
        (STEPS_SCRIPT, {"steps": 35}, Decimal("4.0000")),
        (STEPS_SCRIPT, {"steps": "20"}, Decimal("2.0000")),
        (STEPS_SCRIPT, {}, Decimal("2.0000")),
        (LENGTH_SCRIPT, {"length": 7}, Decimal("14.0000")),
        (LENGTH_SCRIPT, {"length": "3"}, Decimal("6.0000")),
        (LENGTH_SCRIPT, {}, Decimal("10.0000")),
        (AREA_SCRIPT, {"width": 1024, "height": 512}, Decimal("0.5000")),
        (AREA_SCRIPT, {"width": 100, "height": 100}, Decimal("0.0095")),
        ("function computeCost() { return 0; }", {}, Decimal("0.0000")),
        ("function computeCost() { return '2.5'; }", {}, Decimal("2.5000")),
        ("const computeCost = (c) => ({cost: c.n / 3});", {"n": 1}, Decimal("0.3333")),
    ],
)
def test_credits_cost_runs_compute_cost_over_the_payload(
    script: str, payload: dict[str, object], cost: Decimal
) -> None:
    assert credits_cost(script, payload) == cost


@pytest.mark.parametrize(
    "script",
    [
        None,
        "",
        "   ",
        "const unrelated = 1;",
        "function computeCost() { throw new Error('nope'); }",
        "function computeCost() { return 'many'; }",
        "function computeCost() { return {price: 3}; }",
        "function computeCost() { return NaN; }",
        "function computeCost() { return Infinity; }",
        "function computeCost() { return -5; }",
        "function computeCost() { return true; }",
        "function computeCost() { return null; }",
        "function computeCost() { return 1e30; }",
        "function computeCost( {",
        "function computeCost() { while (true) {} }",
        "function computeCost() { " + MEMORY_BOMB + " }",
    ],
)
def test_credits_cost_falls_back_to_one(script: str | None) -> None:
    assert credits_cost(script, {"steps": 10}) == Decimal(1)


# --- eval_condition ----------------------------------------------------------------------------


def test_eval_condition_is_the_truthiness_of_the_expression_over_data() -> None:
    data = {"status": "succeeded", "output": ["https://cdn.test/a.png"], "progress": 0}

    assert eval_condition("data.status === 'succeeded'", data) is True
    assert eval_condition("data.status === 'failed'", data) is False
    assert eval_condition("data.output && data.output.length", data) is True
    assert eval_condition("data.progress", data) is False
    assert (
        eval_condition("['starting', 'processing'].includes(data.status) // still busy", data)
        is False
    )


def test_eval_condition_raises_on_errors_and_runaways() -> None:
    with pytest.raises(SandboxScriptError):
        eval_condition("data.missing.field", {})
    with pytest.raises(SandboxScriptError):
        eval_condition("data ===", {})
    with pytest.raises(SandboxTimeout):
        eval_condition("(() => { while (true) {} })()", {}, timeout_s=0.2)


# --- overhead ----------------------------------------------------------------------------------


def test_per_call_overhead_is_low() -> None:
    evaluate("", expression="0")  # start the helper
    durations = []
    for _ in range(30):
        time.sleep(0.005)  # leave the helper time to prepare its next isolate, as real traffic does
        started = time.perf_counter()
        credits_cost(STEPS_SCRIPT, {"steps": 30})
        durations.append(time.perf_counter() - started)
    durations.sort()

    assert durations[len(durations) // 2] < 0.05
