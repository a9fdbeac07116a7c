"""Collection schedules: beat in a real worker runs them as ordinary jobs; pausing stops them; a
run without credits is refused and pauses the schedule; bad input is a 400."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from emprops.accounts.models import CreditsBalance, CreditsHold
from emprops.accounts.services import credits_grant
from generation_app.models import CollectionSchedule, ScheduleRun
from generation_app.services import schedules
from jobs_app.models import Job
from tests.workers import wait_for


def _collection(client) -> dict:
    data = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a $who"}}],
            "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                           "value": {"values": ["cat", "dog"]}}]}
    response = client.post("/api/projects/collections", {"title": "Pets", "data": data},
                           format="json")
    assert response.status_code == 201, response.json()
    return response.json()["data"]


@pytest.mark.worker
@pytest.mark.timeout(90)
def test_an_interval_schedule_runs_as_jobs_until_paused(api_for, alice, settings, worker):
    # given: a 1 s interval schedule of one generation per run with a fixed variable value
    settings.SCHEDULE_MIN_INTERVAL_SECONDS = 1
    client = api_for(alice)
    collection = _collection(client)
    created = client.post(f"/api/collections/{collection['id']}/schedules",
                          {"interval_seconds": 1, "count": 1, "variables": {"who": "dog"}},
                          format="json")
    assert created.status_code == 201, created.json()
    schedule_id = created.json()["data"]["id"]

    # when: beat runs it twice
    wait_for(lambda: ScheduleRun.objects.filter(schedule_id=schedule_id).count() >= 2, 30)
    paused = client.post(f"/api/schedules/{schedule_id}/pause")

    # then: each run is an ordinary job of alice's, and pausing stops the runs
    assert paused.status_code == 200
    assert paused.json()["data"]["status"] == "paused"
    runs = list(ScheduleRun.objects.filter(schedule_id=schedule_id).order_by("scheduled_for"))
    assert len(runs) >= 2
    assert all(r.status == "accepted" and r.job_id is not None for r in runs)
    assert len({r.scheduled_for for r in runs}) == len(runs)
    time.sleep(2.5)  # two more intervals and beat passes
    assert ScheduleRun.objects.filter(schedule_id=schedule_id).count() == len(runs)
    jobs = wait_for(lambda: (lambda js: js if all(j.status == "completed" for j in js) else None)(
        list(Job.objects.filter(pk__in=[r.job_id for r in runs]))), 30)
    assert {j.user_id for j in jobs} == {alice.id}
    assert {j.name for j in jobs} == {"Collection Generation: Pets"}
    for job in jobs:
        [output] = job.data["outputs"]
        assert output["steps"][0]["nodeResponse"]["data"] == "a dog"
    listed = client.get(f"/api/schedules/{schedule_id}/runs").json()["data"]
    assert listed["total"] == len(runs)
    assert {item["job_id"] for item in listed["items"]} == {str(j.id) for j in jobs}


def _due_schedule(client, collection_id) -> CollectionSchedule:
    created = client.post(f"/api/collections/{collection_id}/schedules",
                          {"cron": "*/5 * * * *"}, format="json")
    assert created.status_code == 201, created.json()
    schedule = CollectionSchedule.objects.get(pk=created.json()["data"]["id"])
    schedule.next_run_at = timezone.now() - timedelta(seconds=1)
    schedule.save(update_fields=["next_run_at"])
    return schedule


def test_a_run_without_credits_is_refused_and_pauses_the_schedule(api_for, alice):
    # given: alice spends her free credits away
    client = api_for(alice)
    collection = _collection(client)
    credits_grant(user=alice, amount=Decimal(-10), credit_type="permanent", comment="spent")
    schedule = _due_schedule(client, collection["id"])

    # when
    made = schedules.schedules_run_due()

    # then
    assert made == 1
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.status == "refused" and run.job_id is None
    assert "credit" in run.error.lower()
    schedule.refresh_from_db()
    assert schedule.status == "paused"
    assert not Job.objects.filter(user=alice).exists()
    assert schedules.schedules_run_due() == 0


def test_a_deactivated_owners_run_is_refused_and_pauses_the_schedule(api_for, alice):
    # given: a due schedule whose owner staff then deactivate
    client = api_for(alice)
    collection = _collection(client)
    schedule = _due_schedule(client, collection["id"])
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    balance = CreditsBalance.objects.get(user=alice, credit_type="permanent").balance

    # when
    made = schedules.schedules_run_due()

    # then: refused and paused, and nothing was created or held
    assert made == 1
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.status == "refused" and run.job_id is None
    assert run.error == "The schedule's owner is deactivated."
    schedule.refresh_from_db()
    assert schedule.status == "paused"
    assert not Job.objects.filter(user=alice).exists()
    assert not CreditsHold.objects.filter(user=alice).exists()
    assert CreditsBalance.objects.get(user=alice, credit_type="permanent").balance == balance
    assert schedules.schedules_run_due() == 0


def test_a_slot_runs_once_however_often_beat_fires(api_for, alice):
    client = api_for(alice)
    collection = _collection(client)
    schedule = _due_schedule(client, collection["id"])
    slot, now = schedule.next_run_at, timezone.now()

    first = schedules.schedule_run(schedule_id=schedule.id, slot=slot, now=now)
    second = schedules.schedule_run(schedule_id=schedule.id, slot=slot, now=now)

    assert first is not None and first.status == "accepted" and second is None
    assert Job.objects.filter(user=alice).count() == 1
    schedule.refresh_from_db()
    assert schedule.status == "active"
    assert schedule.next_run_at > now and schedule.next_run_at.minute % 5 == 0


@pytest.mark.parametrize("body, field", [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * * *"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"interval_seconds": 0}, "interval_seconds"),
    ({"cron": "0 9 * * *", "interval_seconds": 3600}, "cron"),
    ({}, "cron"),
    ({"interval_seconds": 3600, "end_at": "2001-01-01T00:00:00Z"}, "end_at"),
    ({"interval_seconds": 3600, "variables": {"what": "x"}}, "variables"),
])
def test_bad_schedules_are_400(api_for, alice, body, field):
    client = api_for(alice)
    collection = _collection(client)

    response = client.post(f"/api/collections/{collection['id']}/schedules", body, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["details"]
    assert not CollectionSchedule.objects.exists()


def test_a_cron_reads_its_fields_in_its_time_zone(api_for, alice):
    client = api_for(alice)
    collection = _collection(client)

    response = client.post(f"/api/collections/{collection['id']}/schedules",
                           {"cron": "0 9 * * *", "timezone": "Asia/Tokyo"}, format="json")

    assert response.status_code == 201
    next_run = datetime.fromisoformat(response.json()["data"]["next_run_at"])
    assert next_run.astimezone(UTC).hour == 0 and next_run.minute == 0  # 09:00 JST
    assert timedelta(0) < next_run - timezone.now() <= timedelta(days=1)


def test_other_users_collections_and_schedules_are_404(api_for, alice, bob):
    collection = _collection(api_for(alice))
    schedule = _due_schedule(api_for(alice), collection["id"])
    client = api_for(bob)

    create = client.post(f"/api/collections/{collection['id']}/schedules",
                         {"interval_seconds": 3600}, format="json")
    get = client.get(f"/api/schedules/{schedule.id}")
    pause = client.post(f"/api/schedules/{schedule.id}/pause")
    runs = client.get(f"/api/schedules/{schedule.id}/runs")
    delete = client.delete(f"/api/schedules/{schedule.id}")
    listed = client.get("/api/schedules").json()["data"]

    assert [r.status_code for r in (create, get, pause, runs, delete)] == [404] * 5
    assert listed["total"] == 0
    schedule.refresh_from_db()
    assert schedule.status == "active"
    assert CollectionSchedule.objects.count() == 1


def test_pause_resume_and_delete(api_for, alice):
    client = api_for(alice)
    collection = _collection(client)
    schedule = _due_schedule(client, collection["id"])

    paused = client.post(f"/api/schedules/{schedule.id}/pause").json()["data"]
    skipped = schedules.schedules_run_due()
    resumed = client.post(f"/api/schedules/{schedule.id}/resume").json()["data"]
    mine = client.get(f"/api/collections/{collection['id']}/schedules").json()["data"]
    deleted = client.delete(f"/api/schedules/{schedule.id}")

    assert paused["status"] == "paused" and skipped == 0
    assert resumed["status"] == "active"
    assert datetime.fromisoformat(resumed["next_run_at"]) > timezone.now()
    assert [s["id"] for s in mine["items"]] == [str(schedule.id)]
    assert deleted.status_code == 204
    assert not CollectionSchedule.objects.exists()
