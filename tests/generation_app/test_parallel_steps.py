"""Independent steps of a generation run in parallel: proven with a peer that answers only while
two requests are in flight (a sequential engine would time out at the peer and fail)."""

from __future__ import annotations

import pytest

from jobs_app.models import Job
from tests.peers.openai_server import OpenAIPeer
from tests.workers import wait_for


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_two_llm_prompt_steps_are_in_flight_together(api_for, alice, start_worker, settings):
    with OpenAIPeer(hold_until_inflight=2, hold_timeout=20) as llm:
        settings.LLM_BASE_URL = llm.url
        start_worker(env={"NODE_MAX_ATTEMPTS": "1"}, concurrency=2)
        client = api_for(alice)
        data = {"steps": [
            {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a cat", "llmEnable": True}},
            {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "a dog", "llmEnable": True}},
        ]}
        collection = client.post("/api/projects/collections", {"data": data},
                                 format="json").json()["data"]

        job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                             format="json").json()["data"]["jobId"]

        job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 90)
        assert job.status == "completed", job.error_message
        assert llm.max_inflight == 2
        texts = sorted(s["nodeResponse"]["data"] for s in job.data["outputs"][0]["steps"])
        assert texts == ["echo: a cat", "echo: a dog"]
