"""The reaper in-process: what it takes back when an announcement or an admission was lost."""

from __future__ import annotations

from generation_app.models import Generation
from generation_app.services import reaper


def _prompt_collection(client):
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "hello"}}]}
    return client.post("/api/projects/collections", {"data": data}, format="json").json()["data"]


def test_reaper_admits_waiting_generations_whose_admission_was_lost(api_for, alice, settings):
    # given a user at their cap of one running generation, with a second one waiting
    settings.MAX_RUNNING_GENERATIONS_PER_USER = 1
    client = api_for(alice)
    collection = _prompt_collection(client)
    job_id = client.post(f"/api/collections/{collection['id']}/generations", {"count": 2},
                         format="json").json()["data"]["jobId"]
    assert list(Generation.objects.filter(job_id=job_id).order_by("gid")
                .values_list("status", flat=True)) == ["pending", "waiting"]
    # and the first one finished, but the admission queued on its commit never ran
    Generation.objects.filter(job_id=job_id, gid=0).update(status=Generation.Status.COMPLETED)

    # when the reaper passes
    counts = reaper.reap()

    # then the waiting generation starts
    assert counts["started"] == 1
    assert Generation.objects.get(job_id=job_id, gid=1).status == Generation.Status.PENDING
