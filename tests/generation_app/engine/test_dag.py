"""The per-generation step graph: edges, order, cycles and what may run next."""

import json

import pytest

from generation_app.engine.dag import CycleError, build_dag, find_cycle, ready, topological_order

READERS = {"js", "p5", "p52vid"}.__contains__


def step(step_id, node="prompt", **payload):
    return {"id": step_id, "nodeName": node, "nodePayload": payload}


def doc_mentioning(step_id):
    return json.dumps(
        [
            {
                "type": "paragraph",
                "children": [
                    {"text": "with "},
                    {"type": "component", "component": {"id": step_id}, "children": [{"text": ""}]},
                ],
            }
        ]
    )


def test_edges_from_refs_and_mentions():
    steps = [
        step(1, "txt2img", prompt="a cat"),
        step(2, "upscale", image={"$ref": 1, "path": ".src"}),
        step(3, "prompt", prompt="describe #2 like #1"),
        step(4, "txt2img", negative=doc_mentioning(3)),
    ]

    deps = build_dag(steps, reads_all_components=READERS)

    assert deps == {1: set(), 2: {1}, 3: {1, 2}, 4: {3}}
    assert list(deps) == [1, 2, 3, 4]


def test_text_mentions_count_only_for_prompt_keys_and_existing_steps():
    steps = [
        step(1, "txt2img"),
        step(2, "js", script="color: #1;", style="#1 { }"),  # not prompts
        step(3, "prompt", prompt="ranked #1 of #99"),  # 99 is no step
        step(4, "wf", caption="#1"),  # plain text in a non-prompt field
    ]

    deps = build_dag(steps, reads_all_components=lambda name: False)

    assert deps == {1: set(), 2: set(), 3: {1}, 4: set()}


def test_prompt_keys_callback_marks_plain_text_fields_as_prompts():
    steps = [step(1, "txt2img"), step(2, "wf", caption="#1")]

    deps = build_dag(
        steps,
        reads_all_components=lambda name: False,
        prompt_keys=lambda name: {"caption"} if name == "wf" else set(),
    )

    assert deps == {1: set(), 2: {1}}


def test_component_readers_wait_for_all_earlier_steps():
    steps = [
        step(953, "variables"),
        step(1, "txt2img"),
        step(2, "p5", code="x"),
        step(3, "txt2img"),
    ]

    deps = build_dag(steps, reads_all_components=READERS)

    assert deps == {953: set(), 1: set(), 2: {953, 1}, 3: set()}


def test_dangling_dependencies_are_kept():
    deps = build_dag(
        [step(1, "x", image={"$ref": 9, "path": ".src"})], reads_all_components=READERS
    )

    assert deps == {1: {9}}
    assert ready(deps, set(), set()) == []


def test_topological_order_is_stable_in_list_order():
    deps = {5: {3}, 4: set(), 3: set(), 2: {4, 5}, 1: set()}

    assert topological_order(deps) == [4, 3, 5, 2, 1]


def test_topological_order_of_independent_steps_is_list_order():
    assert topological_order({3: set(), 1: set(), 2: set()}) == [3, 1, 2]
    assert topological_order({}) == []


def test_topological_order_raises_on_cycle():
    with pytest.raises(CycleError) as caught:
        topological_order({1: {2}, 2: {3}, 3: {1}, 4: set()})

    assert caught.value.cycle == [1, 2, 3]
    assert str(caught.value) == "Steps form a cycle: 1 -> 2 -> 3 -> 1."


def test_find_cycle():
    assert find_cycle({1: set(), 2: {1}, 3: {2, 1}}) is None
    assert find_cycle({1: {1}}) == [1]
    assert find_cycle({1: set(), 2: {3}, 3: {4}, 4: {2}}) == [2, 3, 4]
    assert find_cycle({1: {99}}) is None  # unknown ids are ignored


def test_find_cycle_deep_chain_does_not_recurse():
    deps = {i: {i + 1} for i in range(5000)}
    deps[5000] = {0}

    assert find_cycle(deps) == list(range(5001))


def test_ready_releases_steps_as_dependencies_finish():
    deps = {1: set(), 2: {1}, 3: {1}, 4: {2, 3}}

    assert ready(deps, done=set(), running=set()) == [1]
    assert ready(deps, done=set(), running={1}) == []
    assert ready(deps, done={1}, running=set()) == [2, 3]
    assert ready(deps, done={1, 2}, running={3}) == []
    assert ready(deps, done={1, 2, 3}, running=set()) == [4]
    assert ready(deps, done={1, 2, 3, 4}, running=set()) == []
