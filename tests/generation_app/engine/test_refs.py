"""`$ref` payload values resolved with jq over earlier steps' outputs."""

import pytest

from generation_app.engine.refs import RefError, is_ref, refs_of, resolve_payload

OUTPUTS = {
    1000001: {"src": "https://cdn/x.png", "mimeType": "image/png"},
    1000002: {"src": "https://cdn/p.txt", "data": "a cat", "mimeType": "text/plain"},
    1000003: {"data": {"items": [{"name": "a"}, {"name": "b"}]}, "mimeType": None},
}


def test_is_ref():
    assert is_ref({"$ref": 1, "path": ".src"})
    assert is_ref({"$ref": "bad"})
    assert not is_ref({"ref": 1})
    assert not is_ref("$ref")
    assert not is_ref(None)


def test_refs_of_top_level_integer_refs_only():
    payload = {
        "image": {"$ref": 1000001, "path": ".src"},
        "text": {"$ref": 1000002, "path": ".data"},
        "nested": {"inner": {"$ref": 5, "path": ".src"}},
        "bad": {"$ref": "1000003", "path": ".src"},
        "flag": {"$ref": True, "path": ".src"},
        "steps": 10,
    }

    assert refs_of(payload) == {1000001, 1000002}


def test_resolve_payload_replaces_refs_and_keeps_other_values():
    payload = {
        "image": {"$ref": 1000001, "path": ".src"},
        "prompt": {"$ref": 1000002, "path": ".data"},
        "second": {"$ref": 1000003, "path": ".data.items[1].name"},
        "all": {"$ref": 1000003, "path": '[.data.items[].name] | join(",")'},
        "steps": 10,
        "nested": {"inner": {"$ref": 1000001, "path": ".src"}},
    }

    resolved = resolve_payload(payload, OUTPUTS)

    assert resolved == {
        "image": "https://cdn/x.png",
        "prompt": "a cat",
        "second": "b",
        "all": "a,b",
        "steps": 10,
        "nested": {"inner": {"$ref": 1000001, "path": ".src"}},
    }
    assert payload["image"] == {"$ref": 1000001, "path": ".src"}  # input untouched


def test_missing_key_gives_null():
    assert resolve_payload({"x": {"$ref": 1000001, "path": ".nope"}}, OUTPUTS) == {"x": None}


def test_first_result_of_a_multi_result_filter():
    payload = {"x": {"$ref": 1000003, "path": ".data.items[].name"}}

    assert resolve_payload(payload, OUTPUTS) == {"x": "a"}


def test_compile_error_names_the_key():
    with pytest.raises(RefError) as caught:
        resolve_payload({"image": {"$ref": 1000001, "path": ".["}}, OUTPUTS)

    assert caught.value.key == "image"
    assert "'image'" in str(caught.value)
    assert "invalid jq path '.['" in str(caught.value)


def test_runtime_error_names_the_key():
    with pytest.raises(RefError) as caught:
        resolve_payload({"img": {"$ref": 1000001, "path": ".src.deeper"}}, OUTPUTS)

    assert caught.value.key == "img"
    assert "failed on step 1000001's output" in str(caught.value)
    assert "Cannot index string" in str(caught.value)


def test_empty_result_is_an_error():
    with pytest.raises(RefError, match="gave no value"):
        resolve_payload({"x": {"$ref": 1000001, "path": "empty"}}, OUTPUTS)


def test_reference_to_step_without_output_is_an_error():
    with pytest.raises(RefError, match="step 42 has no output"):
        resolve_payload({"x": {"$ref": 42, "path": ".src"}}, OUTPUTS)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"$ref": "1000001", "path": ".src"}, "must be an integer step id"),
        ({"$ref": None, "path": ".src"}, "must be an integer step id"),
        ({"$ref": 1000001}, "`path` must be a jq filter"),
        ({"$ref": 1000001, "path": ""}, "`path` must be a jq filter"),
        ({"$ref": 1000001, "path": 5}, "`path` must be a jq filter"),
    ],
)
def test_malformed_refs_are_errors(ref, message):
    with pytest.raises(RefError, match=message):
        resolve_payload({"x": ref}, OUTPUTS)


@pytest.mark.parametrize("path", ["last(range(100000000))", "def f: f; f"])
def test_a_runaway_jq_path_fails_the_reference_instead_of_hanging(path, monkeypatch):
    from emprops import jqbox

    monkeypatch.setattr(jqbox, "TIMEOUT_S", 0.3)
    monkeypatch.setattr(jqbox.first, "__kwdefaults__", {"args": None, "timeout_s": 0.3})

    with pytest.raises(RefError, match="time limit"):
        resolve_payload({"x": {"$ref": 1000001, "path": path}}, OUTPUTS)
