"""The direct_job node and its OpenAI-compatible handlers against a loopback OpenAI server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from generation_app.nodes.base import NodeError, NodeOutput, RunContext
from generation_app.nodes.direct_job import DirectJobNode
from tests.peers.openai_server import OpenAIPeer

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-abcdef0123456789"


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Overrides the suite-wide Redis cleaner: these tests use neither Django nor Redis."""
    yield


@pytest.fixture
def openai() -> Iterator[OpenAIPeer]:
    with OpenAIPeer(api_key=KEY) as peer:
        yield peer


def text_workflow(**job: Any) -> dict[str, Any]:
    return {
        "id": "wf-2",
        "name": "gpt-writer",
        "type": "direct_job",
        "output_mime_type": "text/plain",
        "server_url": None,
        "data": {
            "form": {
                "fields": [
                    {"id": "prompt", "name": "Prompt", "type": "prompt_editor"},
                    {"id": "temperature", "name": "Temperature", "type": "slider", "default": 0.2},
                ]
            },
            "inputs": [
                {"id": "prompt", "pathJq": ".prompt", "is_required": True},
                {"id": "temperature", "pathJq": ".temperature"},
            ],
            "job": {
                "service_required": "openai_text",
                "payload": {
                    "model": "tiny-1",
                    "system_prompt": "Be brief.",
                    "prompt": "",
                    "temperature": 1.0,
                },
                **job,
            },
        },
    }


def image_workflow(**payload: Any) -> dict[str, Any]:
    return {
        "id": "wf-3",
        "name": "gpt-painter",
        "type": "direct_job",
        "output_mime_type": "image/png",
        "server_url": None,
        "data": {
            "form": {"fields": [{"id": "prompt", "name": "Prompt", "type": "prompt_editor"}]},
            "inputs": [{"id": "prompt", "pathJq": ".prompt", "is_required": True}],
            "job": {
                "service_required": "openai_image",
                "payload": {"model": "img-1", "size": "256x256", **payload},
            },
        },
    }


def make_ctx(workflow: dict[str, Any], base_url: str, **config: Any) -> RunContext:
    return RunContext(
        user_id="u-1",
        job_id="j-1",
        gid=0,
        step_id=1_000_002,
        node_name=workflow["name"],
        alias=None,
        hash="0xabc",
        seed=7,
        variables={},
        components={},
        workflow=workflow,
        config={
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": KEY,
            "OUTBOUND_ALLOW_HOSTS": [],
            **config,
        },
    )


def test_text_job_fills_the_payload_and_returns_the_answer(openai):
    workflow = text_workflow()

    result = DirectJobNode().run({"prompt": "a haiku about rain"}, make_ctx(workflow, openai.url))

    assert result.data == "echo: a haiku about rain"
    assert result.mime_type == "text/plain"
    assert [(f.filename, f.content) for f in result.files] == [
        ("gpt-writer.txt", b"echo: a haiku about rain")
    ]
    (call,) = openai.requests
    assert call.path == "/v1/chat/completions"
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.body == {
        "model": "tiny-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a haiku about rain"},
        ],
        "temperature": 0.2,  # the form default beats the job template's 1.0
    }


@pytest.mark.parametrize("field", ["choices.0.message.content", ".choices[0].message.content"])
def test_output_field_picks_from_the_answer(openai, field):
    workflow = text_workflow(output_field=field)

    result = DirectJobNode().run({"prompt": "hi"}, make_ctx(workflow, openai.url))

    assert result.data == "echo: hi"


def test_a_missing_required_field_fails_before_any_request(openai):
    with pytest.raises(NodeError) as info:
        DirectJobNode().run({"prompt": ""}, make_ctx(text_workflow(), openai.url))

    assert info.value.message == "Missing required fields: prompt"
    assert info.value.retryable is False
    assert openai.requests == []


def test_an_unknown_service_is_a_permanent_error(openai):
    workflow = text_workflow(service_required="teleporter")

    with pytest.raises(NodeError) as info:
        DirectJobNode().run({"prompt": "hi"}, make_ctx(workflow, openai.url))

    assert "unknown service 'teleporter'" in info.value.message
    assert info.value.retryable is False
    assert openai.requests == []


def test_image_job_stores_the_b64_image(openai):
    result = DirectJobNode().run({"prompt": "a fox"}, make_ctx(image_workflow(), openai.url))

    assert result.mime_type == "image/png"
    assert [(f.filename, f.mime_type, f.content) for f in result.files] == [
        ("gpt-painter.png", "image/png", openai.png)
    ]
    (call,) = openai.requests
    assert call.path == "/v1/images/generations"
    assert call.body == {"model": "img-1", "prompt": "a fox", "size": "256x256"}


def test_image_job_downloads_a_url_answer_from_the_trusted_service(openai):
    workflow = image_workflow(response_format="url")

    result = DirectJobNode().run({"prompt": "a fox"}, make_ctx(workflow, openai.url))

    assert result.files[0].content == openai.png
    assert openai.count("/files/img.png") == 1
    # the key goes to the service, not to wherever its image URL points
    assert "authorization" not in openai.requests[-1].headers


def test_the_staff_base_url_wins_and_form_values_cannot_redirect_it(openai):
    workflow = text_workflow(payload={"prompt": "", "base_url": openai.url})
    workflow["data"]["inputs"].append({"id": "endpoint", "pathJq": ".base_url"})

    result = DirectJobNode().run(
        {"prompt": "hi", "endpoint": "http://169.254.169.254/v1"},
        make_ctx(workflow, "http://127.0.0.1:9/unused"),
    )

    assert result.data == "echo: hi"


def test_a_wrong_key_is_permanent_and_the_key_is_not_echoed(openai):
    ctx = make_ctx(text_workflow(), openai.url, OPENAI_API_KEY="sk-wrong-0123456789")

    with pytest.raises(NodeError) as info:
        DirectJobNode().run({"prompt": "hi"}, ctx)

    assert info.value.retryable is False
    assert info.value.failure_type == "UPSTREAM_ERROR"
    assert "HTTP 401" in info.value.message
    assert "sk-wrong" not in info.value.message


def test_server_errors_are_retryable_and_refusals_are_classified(openai):
    openai.fail_next(503)
    openai.fail_next(400, code="content_policy_violation", message="blocked")
    node = DirectJobNode()

    with pytest.raises(NodeError) as first:
        node.run({"prompt": "x"}, make_ctx(image_workflow(), openai.url))
    with pytest.raises(NodeError) as second:
        node.run({"prompt": "x"}, make_ctx(image_workflow(), openai.url))

    assert (first.value.retryable, first.value.failure_type) == (True, "UPSTREAM_ERROR")
    assert (second.value.retryable, second.value.failure_type) == (False, "GENERATION_REFUSAL")


def test_no_endpoint_configured_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    with pytest.raises(NodeError) as info:
        DirectJobNode().run({"prompt": "x"}, make_ctx(text_workflow(), ""))

    assert "OPENAI_BASE_URL" in info.value.message


def test_the_hold_peer_needs_two_requests_in_flight():
    with OpenAIPeer(hold_until_inflight=2, hold_timeout=1.0) as peer:
        with pytest.raises(NodeError) as alone:
            DirectJobNode().run({"prompt": "alone"}, make_ctx(text_workflow(), peer.url))
        assert "HTTP 503" in alone.value.message

    with OpenAIPeer(hold_until_inflight=2, hold_timeout=10.0) as peer:
        results: dict[str, NodeOutput] = {}

        def run(prompt: str) -> None:
            results[prompt] = DirectJobNode().run(
                {"prompt": prompt}, make_ctx(text_workflow(), peer.url)
            )

        threads = [threading.Thread(target=run, args=(p,)) for p in ("one", "two")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)

        assert {k: v.data for k, v in results.items()} == {"one": "echo: one", "two": "echo: two"}
        assert peer.max_inflight == 2


def test_the_peer_also_serves_the_prompt_nodes_llm_rewrite(openai):
    from generation_app.nodes.prompt import PromptNode

    workflow = text_workflow()
    ctx = make_ctx(workflow, openai.url, LLM_BASE_URL=openai.url, LLM_API_KEY=KEY)

    result = PromptNode().run({"prompt": "a cat", "llmEnable": True}, ctx)

    assert result.data == "echo: a cat"
    assert openai.requests[0].path == "/v1/chat/completions"
