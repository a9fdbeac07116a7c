"""The fetch_api node against a real HTTP API on loopback (no Django, no mocks of our code)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.fetch_api import FetchApiNode, fill_template, polling_url
from tests.peers.http_api import HttpApiPeer
from tests.workers import free_port

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Overrides the suite-wide Redis cleaner: these tests use neither Django nor Redis."""
    yield


@pytest.fixture
def api() -> Iterator[HttpApiPeer]:
    with HttpApiPeer() as peer:
        yield peer


FORM = {
    "fields": [
        {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
        {"id": "steps", "name": "Steps", "type": "slider", "default": "30"},
        {"id": "seed", "name": "Seed", "type": "input"},
    ]
}
BODY = {"input": {"prompt": "", "steps": 20, "seed": 0}, "model": "m-1"}
INPUTS = [
    {"id": "prompt", "pathJq": ".input.prompt"},
    {"id": "steps", "pathJq": ".input.steps"},
    {"id": "seed", "pathJq": ".input.seed"},
]


def wait_workflow(base: str, **api: Any) -> dict[str, Any]:
    return {
        "id": "wf-1",
        "name": "flux-api",
        "type": "fetch_api",
        "output_mime_type": "image/png",
        "server_url": None,
        "data": {
            "form": FORM,
            "body": BODY,
            "inputs": INPUTS,
            "api": {
                "url": base + "/wait",
                "method": "POST",
                "successResponseCode": 200,
                "headers": {"Authorization": "Bearer {{API_KEY}}"},
                "fetchType": "wait",
                "wait": {"outputExprJq": ".output.url"},
                **api,
            },
        },
    }


def polling_workflow(
    url: str, *, polls: int = 3, outcome: str = "succeeded", timeout: float = 20, **polling: Any
) -> dict[str, Any]:
    workflow = wait_workflow(url)
    workflow["data"]["api"] = {
        "url": f"{url}/jobs?polls={polls}&outcome={outcome}",
        "method": "POST",
        "successResponseCode": [200, 201],
        "headers": {"X-Key": "{{API_KEY}}"},
        "fetchType": "polling",
        "polling": {
            "method": "GET",
            "url": url + "/jobs/{id}",
            "params": {"id": {"exprJq": ".id"}},
            "continueWhenExpr": "data.status === 'running'",
            "stopWhenExpr": "data.status === 'failed'",
            "outputExprJq": ".result.url",
            "successResponseCode": 200,
            "timeout": timeout,
            "interval": 0.05,
            **polling,
        },
    }
    return workflow


def make_ctx(
    workflow: dict[str, Any],
    *,
    allow: list[str] | None = None,
    user_secret: str | None = None,
    **kwargs: Any,
) -> RunContext:
    defaults: dict[str, Any] = dict(
        user_id="u-1",
        job_id="j-1",
        gid=0,
        step_id=1_000_001,
        node_name=workflow["name"],
        alias=None,
        hash="0xabc",
        seed=4242,
        variables={},
        components={},
        workflow=workflow,
        user_secret=user_secret,
        config={"OUTBOUND_ALLOW_HOSTS": allow or []},
    )
    defaults.update(kwargs)
    return RunContext(**defaults)


def node(**environ: str) -> FetchApiNode:
    return FetchApiNode(environ={"API_KEY": SECRET, **environ})


# ---- wait ---------------------------------------------------------------------------------------


def test_wait_fills_the_body_sends_the_key_and_stores_the_output(api):
    workflow = wait_workflow(api.url)

    result = node().run({"prompt": "a red fox"}, make_ctx(workflow, allow=[api.host]))

    assert result.mime_type == "image/png"
    assert result.src_file == "flux-api.png"
    assert [(f.filename, f.mime_type, f.content) for f in result.files] == [
        ("flux-api.png", "image/png", api.png)
    ]
    call = next(api.recorded("/wait"))
    # prompt from the step, steps from the form default (coerced to the template's int),
    # seed from the generation
    assert json.loads(call.body) == {
        "input": {"prompt": "a red fox", "steps": 30, "seed": 4242},
        "model": "m-1",
    }
    assert call.headers["authorization"] == f"Bearer {SECRET}"
    assert call.headers["content-type"] == "application/json"
    # the download carries none of the API's headers
    assert "authorization" not in next(api.recorded("/files/")).headers


def test_the_users_secret_wins_over_the_environment(api):
    workflow = wait_workflow(api.url)

    node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host], user_secret="sk-user-own"))

    assert next(api.recorded("/wait")).headers["authorization"] == "Bearer sk-user-own"


def test_a_missing_key_names_the_variable_and_sends_nothing(api):
    workflow = wait_workflow(api.url)

    with pytest.raises(NodeError) as info:
        FetchApiNode(environ={}).run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert "API_KEY" in info.value.message
    assert info.value.retryable is False
    assert api.count() == 0


def test_text_output_is_stored_as_text(api):
    workflow = wait_workflow(api.url, wait={"outputExprJq": ".output.text"})
    workflow["output_mime_type"] = "text/plain"

    result = node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert result.data == "hello"
    assert result.mime_type == "text/plain"
    assert [(f.filename, f.content) for f in result.files] == [("flux-api.txt", b"hello")]


def test_a_missing_required_value_is_listed_before_any_request(api):
    workflow = wait_workflow(api.url)
    workflow["data"]["inputs"] = [
        {"id": "prompt", "pathJq": ".input.prompt", "is_required": True},
        {"id": "style", "pathJq": ".style", "is_required": True},
    ]

    with pytest.raises(NodeError) as info:
        node().run({}, make_ctx(workflow, allow=[api.host]))

    assert info.value.message == "Missing required fields: prompt, style"
    assert api.count() == 0


# ---- status codes ---------------------------------------------------------------------------------


def test_a_4xx_fails_permanently_with_a_redacted_snippet(api):
    workflow = wait_workflow(api.url, url=api.url + "/status/403")

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    error = info.value
    assert error.retryable is False
    assert error.failure_type == "UPSTREAM_ERROR"
    assert error.message.startswith("The API request got HTTP 403: ")
    assert "as requested" in error.message
    # the peer echoed our Authorization header: the error must not
    assert SECRET not in error.message
    assert api.count("POST", "/status/403") == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retryable(api, status):
    workflow = wait_workflow(api.url, url=f"{api.url}/status/{status}")

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert info.value.retryable is True
    assert f"HTTP {status}" in info.value.message


def test_a_connection_refused_is_retryable():
    port = free_port()  # nothing listens there
    workflow = wait_workflow(f"http://127.0.0.1:{port}")

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[f"127.0.0.1:{port}"]))

    assert info.value.retryable is True


def test_an_unexpected_success_code_is_permanent(api):
    workflow = wait_workflow(api.url, successResponseCode=[202])

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert info.value.retryable is False
    assert "HTTP 200" in info.value.message


# ---- the SSRF guard -------------------------------------------------------------------------------


def test_loopback_without_the_allow_list_is_refused_before_any_connection(api):
    workflow = wait_workflow(api.url)

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[]))

    assert "refused" in info.value.message
    assert "loopback" in info.value.message
    assert info.value.retryable is False
    assert api.count() == 0


def test_a_name_resolving_to_loopback_is_refused_unless_allow_listed(api):
    workflow = wait_workflow(f"http://api.example.test:{api.port}")
    workflow["data"]["api"]["wait"] = {"outputExprJq": ".output.url"}

    def resolver(host: str, port: int) -> list[str]:
        assert host == "api.example.test"
        return ["127.0.0.1"]

    with pytest.raises(NodeError) as info:
        FetchApiNode(resolver=resolver, environ={"API_KEY": SECRET}).run(
            {"prompt": "x"}, make_ctx(workflow, allow=[])
        )
    assert "refused" in info.value.message
    assert api.count() == 0

    result = FetchApiNode(resolver=resolver, environ={"API_KEY": SECRET}).run(
        {"prompt": "x"}, make_ctx(workflow, allow=[f"api.example.test:{api.port}", api.host])
    )
    assert result.files[0].content == api.png
    assert next(api.recorded("/wait")).headers["host"] == f"api.example.test:{api.port}"


def test_an_output_url_on_a_metadata_address_is_refused(api):
    workflow = wait_workflow(api.url, wait={"outputExprJq": '"http://169.254.169.254/x.png"'})

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert "output download was refused" in info.value.message
    assert "cloud metadata" in info.value.message
    assert api.count("POST", "/wait") == 1


# ---- polling ----------------------------------------------------------------------------------------


def test_polling_until_done_then_downloading(api):
    workflow = polling_workflow(api.url, polls=3)
    progress: list[float] = []

    result = node().run(
        {"prompt": "x"}, make_ctx(workflow, allow=[api.host], report_progress=progress.append)
    )

    assert result.files[0].content == api.png
    assert api.count("POST", "/jobs") == 1
    assert api.count("GET", "/jobs/") == 4  # three "running", then "succeeded"
    assert all(r.headers["x-key"] == SECRET for r in api.recorded("/jobs"))
    assert progress == sorted(progress)
    assert progress[0] > 0 and progress[-1] < 1


def test_a_true_stop_expression_fails_with_polling_stopped(api):
    workflow = polling_workflow(api.url, polls=1, outcome="failed")

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert info.value.message.startswith("Polling stopped")
    assert "the model gave up" in info.value.message
    assert info.value.retryable is False
    assert api.count("GET", "/jobs/") == 2


def test_polling_past_its_timeout_fails_with_timeout(api):
    workflow = polling_workflow(api.url, outcome="never", timeout=0.5)

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert info.value.failure_type == "TIMEOUT"
    assert info.value.message == "Polling did not finish within 0.5 s"
    assert api.count("GET", "/jobs/") >= 3


def test_cancellation_stops_polling(api):
    workflow = polling_workflow(api.url, outcome="never")
    cancelled = threading.Event()
    threading.Timer(0.3, cancelled.set).start()

    with pytest.raises(NodeError) as info:
        node().run(
            {"prompt": "x"}, make_ctx(workflow, allow=[api.host], is_cancelled=cancelled.is_set)
        )

    assert info.value.message == "Cancelled"
    polls = api.count("GET", "/jobs/")
    assert polls >= 1


def test_a_broken_condition_is_a_permanent_error(api):
    workflow = polling_workflow(api.url, continueWhenExpr="data.status ===")

    with pytest.raises(NodeError) as info:
        node().run({"prompt": "x"}, make_ctx(workflow, allow=[api.host]))

    assert info.value.retryable is False
    assert "continueWhenExpr" in info.value.message


# ---- templates --------------------------------------------------------------------------------------


def test_fill_template_assigns_nested_and_indexed_paths_without_touching_the_template():
    template = {"input": {"images": [{"prompt": "?"}], "guidance": 3.5, "safe": True}}
    inputs = [
        {"id": "prompt", "pathJq": ".input.images[0].prompt"},
        {"id": "guidance", "pathJq": ".input.guidance"},
        {"id": "safe", "pathJq": ".input.safe"},
        {"id": "extra", "pathJq": '.input["new key"].deep'},
        {"id": "unset", "pathJq": ".input.unset"},
        {"id": "seed", "pathJq": ".seed"},
    ]

    body = fill_template(
        template,
        inputs,
        {"prompt": 'say "hi" | .x', "guidance": "7", "safe": "false", "extra": [1, 2]},
        seed=9,
    )

    assert body == {
        "input": {
            "images": [{"prompt": 'say "hi" | .x'}],
            "guidance": 7,
            "safe": False,
            "new key": {"deep": [1, 2]},
        },
        "seed": 9,
    }
    assert template["input"]["images"][0]["prompt"] == "?"


def test_polling_url_encodes_ids_but_keeps_whole_urls():
    assert (
        polling_url("https://api.test/jobs/{id}?v={v}", {"id": "a/../b c", "v": 2})
        == "https://api.test/jobs/a%2F..%2Fb%20c?v=2"
    )
    assert polling_url("{get}", {"get": "https://api.test/p/1?x=y"}) == "https://api.test/p/1?x=y"


def test_a_header_template_cannot_send_the_platforms_own_secrets():
    from generation_app.nodes.base import NodeError
    from generation_app.nodes.fetch_api import fill_headers

    env = {"DATABASE_URL": "postgresql://u:p@db/x", "VIDEO_API_KEY": "vk-1"}

    ok, _ = fill_headers({"Authorization": "Bearer {{VIDEO_API_KEY}}"}, user_secret=None,
                         environ=env, workflow_name="video")
    with pytest.raises(NodeError) as refused:
        fill_headers({"X-Leak": "{{DATABASE_URL}}"}, user_secret=None, environ=env,
                     workflow_name="video")

    assert ok == {"Authorization": "Bearer vk-1"}
    assert "postgresql" not in str(refused.value)
