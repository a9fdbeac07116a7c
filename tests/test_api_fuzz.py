"""Schemathesis over every operation of the OpenAPI schema, against a real uvicorn on the test
database: no response is a 5xx, and every response under /api with a body is the JSON
`{data, error}` envelope (a 204 has neither body nor content type).

Each operation is fuzzed with valid and invalid inputs, path ids drawn both at random and from
objects that exist (so bodies reach the serializers and services, not only the 404 path), as a
consumer; the operations that refused the consumer (403, or staff-key paths) again as staff.
Failures are collected rather than raised, so one run reports every broken operation with a curl
line to reproduce it; no shrinking, a fixed seed and a few examples per operation keep it bounded.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from emprops.accounts.services import api_key_create, user_provision
from tests.workers import WebProcess
from workflows_app.models import AIModel, FormConfig, Workflow

# per strategy: 8-12 requests per operation in `make test`; `make fuzz` runs 25 (50-75)
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
SKIPPED_PATHS = {"/api/jobs/{job_id}/events"}  # a stream, not a request/response operation


@pytest.fixture
def web(transactional_db: Any, purge_broker: None, tmp_path: Any) -> Iterator[WebProcess]:
    import redis
    from django.conf import settings as django_settings

    # the fuzzer sends hundreds of requests a minute; throttling is tested elsewhere
    proc = WebProcess(tmp_path, env={"RATE_LIMIT_USER": "100000/min",
                                     "RATE_LIMIT_ANON": "100000/min"}).start()
    yield proc
    proc.stop()
    # the generations it accepted were announced to a broker no worker consumes here
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()


def enveloped_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every response under /api with a body is a JSON `{data, error}` envelope, never a
    traceback; a 401 names its scheme and a 429 says when to come back."""
    if not case.path.startswith("/api"):
        return None
    headers = {k.lower(): v[0] if isinstance(v, list) else v for k, v in response.headers.items()}
    if response.status_code == 204:
        assert not response.content and "content-type" not in headers, "a 204 with a body"
        return None
    assert headers.get("content-type", "").startswith("application/json"), (
        f"not JSON ({headers.get('content-type')}): {response.text[:200]}")
    body = response.json()
    assert isinstance(body, dict) and {"data", "error"} <= body.keys(), "not enveloped"
    assert "Traceback" not in response.text, "a traceback in the body"
    if response.status_code == 401:
        assert "www-authenticate" in headers, "a 401 without WWW-Authenticate"
    if response.status_code == 429:
        assert "retry-after" in headers, "a 429 without Retry-After"
    return None


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _known_ids(base_url: str, key: str, staff_key: str) -> dict[str, Any]:
    """Real objects for path parameters: a workflow, a project, a collection, a job, a file."""
    workflow = Workflow.objects.create(
        name="fuzz_api", label="Fuzz", type="fetch_api", output_mime_type="image/png",
        data={"form": {"fields": [
            {"id": "prompt", "name": "Prompt", "type": "input", "default": "a cat"},
            {"id": "steps", "name": "Steps", "type": "slider", "default": 20,
             "constraints": {"min": 1, "max": 100}}]},
            "api": {"url": "http://127.0.0.1:9/x"}})
    form_config = FormConfig.objects.create(name="samplers", data={"values": ["euler"]})
    model = AIModel.objects.create(name="sdxl.safetensors")
    client = httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30)
    project = client.post("/api/projects", json={"name": "Fuzzed"}).json()["data"]
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "hello $who"}}],
            "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                           "value": {"values": ["you", "them"]}}]}
    created = client.post("/api/projects/collections",
                          params={"project_id": project["id"]},
                          json={"title": "Fuzzed", "data": data})
    assert created.status_code == 201, created.text
    collection = created.json()["data"]
    job = client.post(f"/api/collections/{collection['id']}/generations", json={"count": 1})
    assert job.status_code in (200, 201, 202), job.text
    upload = client.post("/api/files", files={"file": ("in.png", _png(), "image/png")})
    assert upload.status_code == 201, upload.text
    return {
        "project_id": project["id"], "collection_id": collection["id"],
        "job_id": job.json()["data"]["jobId"], "file_id": upload.json()["data"]["id"],
        "workflow_id": str(workflow.id), "workflow_name": workflow.name,
        "form_config_id": str(form_config.id), "staff_key": staff_key,
        # `{name}` means a different kind of row under each prefix
        "name": workflow.name, "form-configs/name": form_config.name, "models/name": model.name,
    }


def _reason(failure: BaseException) -> str:
    message = (getattr(failure, "message", "") or str(failure)).strip().splitlines()
    return f"{getattr(failure, 'title', type(failure).__name__)}: {message[0] if message else ''}"


def _fuzz(operation: Any, *, base_url: str, headers: dict[str, str], known: dict[str, Any],
          session: requests.Session, failures: list[str]) -> set[int]:
    """Fuzz one operation; failures go to `failures`; returns the statuses it answered with."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error, status_code_conformance
    from schemathesis.core.failures import FailureGroup

    fixed = {}
    for parameter in operation.path_parameters:
        name = parameter.name
        prefixed = [k for k in known if "/" in k and f"/{k}/{{{name}}}" in operation.path]
        if prefixed or name in known:
            fixed[name] = known[prefixed[0] if prefixed else name]
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed or None),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if fixed and (operation.body or operation.query):
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed))
    seen: set[str] = set()
    statuses: set[int] = set()

    @settings(max_examples=MAX_EXAMPLES * len(strategies), derandomize=True, database=None,
              deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        statuses.add(response.status_code)
        try:
            case.validate_response(response, checks=[not_a_server_error, enveloped_json,
                                                     status_code_conformance])
        except (FailureGroup, AssertionError) as exc:  # record it, keep fuzzing the rest
            signature = f"{operation.label} {response.status_code}"
            if signature not in seen:
                seen.add(signature)
                found = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
                reasons = "; ".join(_reason(failure) for failure in found)
                failures.append(f"{signature}: {reasons}\n    body: {response.text[:160]!r}\n"
                                f"    {case.as_curl_command(headers)[:600]}")

    run()
    return statuses


@pytest.mark.server
@pytest.mark.timeout(60 + 30 * MAX_EXAMPLES)
def test_no_operation_returns_a_server_error_or_an_unenveloped_body(web):
    import schemathesis

    alice = user_provision(username="alice", free_credits=Decimal(1000))
    staff = user_provision(username="staffer", is_staff=True)
    key = api_key_create(user=alice, name="fuzz")[1]
    staff_key = api_key_create(user=staff, name="fuzz")[1]
    known = _known_ids(web.url, key, staff_key)
    # the fuzzer may revoke this one (DELETE /api/api-keys/{key_id}), never the one it uses
    known["key_id"] = str(api_key_create(user=alice, name="spare")[0].id)

    schema = schemathesis.openapi.from_url(f"{web.url}/api/schema?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path not in SKIPPED_PATHS]
    # reads first, then writes, deletes last: the shared rows above are found intact (by id and
    # by name) for as long as possible
    operations.sort(key=lambda op: (op.method.upper() == "DELETE", op.method.upper() != "GET"))
    assert len(operations) > 60

    failures: list[str] = []
    session = requests.Session()
    consumer = {name: value for name, value in known.items() if name != "staff_key"}
    refused: list[Any] = []
    succeeded: set[str] = set()
    for operation in operations:
        statuses = _fuzz(operation, base_url=web.url, headers={"X-API-Key": key},
                         known=consumer, session=session, failures=failures)
        if operation.path.startswith("/api/staff/") or 403 in statuses:
            refused.append(operation)
        if any(200 <= code < 300 for code in statuses):
            succeeded.add(operation.label)
    # staff-only operations again as staff: the consumer only ever reached their 403/404
    for operation in refused:
        statuses = _fuzz(operation, base_url=web.url, headers={"X-API-Key": staff_key},
                         known=known, session=session, failures=failures)
        if any(200 <= code < 300 for code in statuses):
            succeeded.add(operation.label)
    assert not failures, f"{len(failures)} failing operation(s):\n" + "\n".join(failures)
    # not a vacuous pass: most operations were reached with inputs good enough to succeed
    assert len(succeeded) >= 0.6 * len(operations), sorted(succeeded)
