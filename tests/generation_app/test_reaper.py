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


def test_a_timed_out_job_ends_its_events_with_a_failed_job_update(api_for, alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    from jobs_app.models import Job, JobEvent

    # given a job that has run longer than the maximum run time
    settings.MAX_JOB_RUN_SECONDS = 60
    client = api_for(alice)
    job_id = client.post(f"/api/collections/{_prompt_collection(client)['id']}/generations",
                         {"count": 1}, format="json").json()["data"]["jobId"]
    Job.objects.filter(pk=job_id).update(status=Job.Status.PROCESSING,
                                         started_at=timezone.now() - timedelta(seconds=61))

    # when the reaper passes
    counts = reaper.reap()

    # then the job failed, and its last event says so (stream clients watch job_update for it)
    assert counts["timed_out"] == 1
    job = Job.objects.get(pk=job_id)
    last = JobEvent.objects.filter(job_id=job_id).order_by("-seq").first()
    assert job.status == Job.Status.FAILED
    assert (last.seq, last.event_type, last.data["status"]) == (job.event_seq, "job_update",
                                                                "failed")
