"""jq filters run with time and memory limits: a runaway costs the helper process, never the caller."""

from __future__ import annotations

import os
import time

import jq
import pytest

from emprops import jqbox

DOC = {
    "src": "https://cdn/x.png",
    "n": 1.0,
    "big": 10**30,
    "data": {"items": [{"name": "a", "w": 2.5}, {"name": "b"}], "a b": [True, None]},
    "s": "text",
}


@pytest.mark.parametrize(
    "path",
    [".", ".src", ".n", ".big", ".data.items[0]", ".data.items[-1].name", ".data.items[5]",
     '.data["a b"][0]', '.data."a b"', ".missing.deeper[3]", ".data.items[-9]", ".[\"src\"]"],
)
def test_plain_paths_take_the_fast_path_and_agree_with_jq(path):
    expected = jq.compile(path).input_value(DOC).first()

    assert jqbox.plain_path(path) is not None
    assert jqbox.first(path, DOC) == expected
    assert type(jqbox.first(path, DOC)) is type(expected)


@pytest.mark.parametrize("path", [".s.x", ".src[0]", ".data[0]"])
def test_a_plain_path_that_meets_the_wrong_type_fails_with_jqs_own_message(path):
    with pytest.raises(ValueError) as theirs:
        jq.compile(path).input_value(DOC).first()
    with pytest.raises(jqbox.JqRuntimeError) as ours:
        jqbox.first(path, DOC)

    assert str(ours.value) == str(theirs.value).splitlines()[0].removeprefix("jq: error: ")


def test_other_filters_run_in_the_helper():
    assert jqbox.plain_path(".data.items | map(.name)") is None
    assert jqbox.first(".data.items | map(.name)", DOC) == ["a", "b"]
    assert jqbox.first(".x = $value", {}, args={"value": {"k": [1]}}) == {"x": {"k": [1]}}
    with pytest.raises(jqbox.JqEmpty):
        jqbox.first("empty", DOC)
    with pytest.raises(jqbox.JqProgramError):
        jqbox.first(".a |", DOC)


@pytest.mark.parametrize(
    "program",
    ["last(range(100000000))", "def f: f; f", '[limit(1e9; repeat("x"))] | length',
     'reduce range(40) as $i ("x"; . + .) | length'],
)
def test_a_runaway_filter_is_stopped_within_its_limits_and_the_next_one_works(program):
    started = time.monotonic()
    with pytest.raises(jqbox.JqLimitError):
        jqbox.first(program, DOC, timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert elapsed < 0.5 + 5  # generous: the kill is at 0.5 s + grace; the box is a noisy CI
    assert jqbox.first(".data.items | length", DOC) == 2


def test_a_killed_helper_is_replaced():
    jqbox.first("[.src]", DOC)
    first_pid = jqbox._pool.child_pid()
    with pytest.raises(jqbox.JqLimitError):
        jqbox.first("def f: f; f", DOC, timeout_s=0.2)

    assert jqbox.first("[.src]", DOC) == [DOC["src"]]
    assert jqbox._pool.child_pid() not in (None, first_pid)


def test_filters_cannot_read_the_callers_environment(monkeypatch):
    monkeypatch.setenv("EMPROPS_TEST_SECRET", "hunter2")
    os.environ["EMPROPS_TEST_SECRET"] = "hunter2"
    jqbox._pool.shutdown()  # the next helper starts while the secret is set

    env = jqbox.first("$ENV", None)
    also = jqbox.first("env", None)

    assert "EMPROPS_TEST_SECRET" not in env and "EMPROPS_TEST_SECRET" not in also
    assert "hunter2" not in repr(env)


def test_compile_errors_are_reported_and_long_filters_refused():
    assert jqbox.compile_error(".src") is None
    assert jqbox.compile_error("map(.x)") is None
    assert "syntax error" in (jqbox.compile_error(".a |") or "")
    assert "longer than" in (jqbox.compile_error("." + "a" * jqbox.MAX_PROGRAM_CHARS) or "")
