"""The admin job page: read-only job, its generations, node runs, history and outputs, live."""

from __future__ import annotations

import html
import json
import os
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.contrib.admin.utils import display_for_value
from django.core import signing
from django.db import transaction
from django.utils import timezone

from generation_app.models import Generation, NodeRun
from jobs_app.events import EVENTS_TOKEN_SALT
from jobs_app.models import Job, JobEvent, JobHistory
from jobs_app.services import history_add, job_changed
from tests.workers import WebProcess, outside_playwright

HASH = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"
IMAGE_URL = "/media/generations/u/j/0/2/p5.png"
VIDEO_URL = "/media/generations/u/j/0/3/p52vid.mp4"


def _finished_job(user: Any) -> Job:
    """A completed job with one generation of a prompt, a p5 image and a p52vid video step."""
    steps = [
        {"id": 1, "nodeName": "prompt", "nodeAlias": "Subject",
         "nodeResponse": {"src": "/media/generations/u/j/0/1/prompt.txt", "data": "a red fox",
                          "mimeType": "text/plain"}},
        {"id": 2, "nodeName": "p5", "nodeAlias": None,
         "nodeResponse": {"src": IMAGE_URL, "mimeType": "image/png"}},
        {"id": 3, "nodeName": "p52vid", "nodeAlias": None,
         "nodeResponse": {"src": VIDEO_URL, "mimeType": "video/mp4"}},
    ]
    with transaction.atomic():
        job = Job.objects.create(user=user, name="Collection Generation: Foxes",
                                 status=Job.Status.COMPLETED, progress=100)
        output = {"id": str(job.id), "generation": {"id": 0, "hash": HASH}, "steps": steps}
        job.data = {"collectionId": None, "variables": {}, "outputs": [output]}
        job.save(update_fields=["data"])
        Generation.objects.create(job=job, gid=0, hash=HASH, seed=2160853444,
                                  status=Generation.Status.COMPLETED, outputs=output)
        for step in steps:
            NodeRun.objects.create(job=job, gid=0, step_id=step["id"], node_name=step["nodeName"],
                                   queue="engine" if step["id"] == 1 else "browser",
                                   status=NodeRun.Status.COMPLETED, attempt=1, progress=1.0,
                                   output=step["nodeResponse"])
        history_add(job=job, status="pending", message="Job created and pending execution")
        history_add(job=job, status="processing", message="Node started",
                    data={"gid": 0, "node": "p5", "nodeId": 2})
        history_add(job=job, status="completed", message="Generation completed successfully",
                    data={"gid": 0, "outputs": output})
        job_changed(job=job)
    return job


def _page_token(content: str) -> str:
    match = re.search(r'data-events-url="/api/jobs/[0-9a-f-]+/events\?token=([^"]+)"', content)
    assert match, "no events URL in the page"
    return html.unescape(match.group(1))


@pytest.mark.django_db
def test_staff_sees_the_job_with_its_work_history_outputs_and_an_events_token(client, staff, alice):
    job = _finished_job(alice)
    client.force_login(staff)

    response = client.get(f"/admin/jobs_app/job/{job.id}/change/")

    assert response.status_code == 200
    content = response.content.decode()
    # the job's fields, read-only (no form inputs for them), with hooks for live updates
    assert '<span id="job-live-status">completed</span>' in content
    assert 'name="status"' not in content
    # generations and node runs
    assert HASH in content and "2160853444" in content
    runs = content.split('id="job-node-runs"', 1)[1].split("</table>", 1)[0]
    assert runs.count("<tr>") == 1 + 3  # header + one row per step
    assert "browser" in runs
    # history, oldest first
    history = content.split('id="job-history"', 1)[1]
    positions = [history.index(m) for m in ("Job created and pending execution", "Node started",
                                            "Generation completed successfully")]
    assert positions == sorted(positions)
    assert history.count("<tr data-id=") == 3
    # outputs by mime type
    assert f'<img src="{IMAGE_URL}"' in content
    assert f'<video src="{VIDEO_URL}"' in content
    assert "<pre>a red fox</pre>" in content
    # the live part: the script and a token the event stream accepts for this job
    assert "jobs_app/job_live.js" in content
    claims = signing.loads(_page_token(content), salt=EVENTS_TOKEN_SALT, max_age=300)
    assert claims == {"u": str(alice.id), "j": str(job.id)}


@pytest.mark.django_db
def test_an_output_url_that_is_not_http_is_not_rendered_as_a_link_or_image(client, staff, alice):
    job = _finished_job(alice)
    job.data["outputs"][0]["steps"][1]["nodeResponse"]["src"] = "javascript:alert(1)"
    job.save(update_fields=["data"])
    client.force_login(staff)

    content = client.get(f"/admin/jobs_app/job/{job.id}/change/").content.decode()

    assert "javascript:alert(1)" not in content.split('id="job-outputs"', 1)[1]


@pytest.mark.django_db
def test_non_staff_is_sent_to_the_login_page_and_sees_nothing(client, alice):
    job = _finished_job(alice)
    client.force_login(alice)

    responses = [client.get(f"/admin/jobs_app/job/{job.id}/change/"),
                 client.get(f"/admin/jobs_app/job/{job.id}/live/sections/"),
                 client.get(f"/admin/jobs_app/job/{job.id}/live/token/")]

    for response in responses:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        assert b"token" not in response.content
    assert JobHistory.objects.filter(job=job).count() == 3


@pytest.mark.django_db
def test_anonymous_is_sent_to_the_login_page(client, alice):
    job = _finished_job(alice)

    response = client.get(f"/admin/jobs_app/job/{job.id}/change/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_the_job_times_show_on_the_page_and_come_back_with_the_sections(client, staff, alice):
    # given a pending job open in admin: not started, not completed
    with transaction.atomic():
        job = Job.objects.create(user=alice, name="Collection Generation: Times")
    client.force_login(staff)
    page = client.get(f"/admin/jobs_app/job/{job.id}/change/").content.decode()
    assert '<span id="job-live-started-at">-</span>' in page
    assert '<span id="job-live-completed-at">-</span>' in page

    # when it runs and completes
    started = timezone.now()
    completed = started + timedelta(seconds=42)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.COMPLETED, started_at=started,
                                         completed_at=completed)
    job.refresh_from_db()
    sections = client.get(f"/admin/jobs_app/job/{job.id}/live/sections/").content.decode()

    # then the re-fetched sections carry the times as the page renders them
    shown = {name: html.escape(str(display_for_value(value, "-"))) for name, value in
             [("started-at", started), ("completed-at", completed),
              ("updated-at", job.updated_at)]}
    assert shown["completed-at"] != "-"
    times = re.search(r'<div id="job-live-times" hidden([^>]*)>', sections).group(1)
    assert dict(re.findall(r' data-([a-z-]+)="([^"]*)"', times)) == shown
    page = client.get(f"/admin/jobs_app/job/{job.id}/change/").content.decode()
    assert f'<span id="job-live-completed-at">{shown["completed-at"]}</span>' in page


@pytest.mark.django_db
def test_the_page_reloads_its_sections_and_token_from_admin_urls(client, staff, alice):
    job = _finished_job(alice)
    client.force_login(staff)

    sections = client.get(f"/admin/jobs_app/job/{job.id}/live/sections/")
    token = client.get(f"/admin/jobs_app/job/{job.id}/live/token/")

    assert sections.status_code == 200
    assert f'<img src="{IMAGE_URL}"' in sections.content.decode()
    body = token.json()
    assert body["url"] == f"/api/jobs/{job.id}/events?token={body['token']}"
    assert signing.loads(body["token"], salt=EVENTS_TOKEN_SALT) == {"u": str(alice.id),
                                                                    "j": str(job.id)}
    missing = client.get("/admin/jobs_app/job/00000000-0000-0000-0000-000000000000/live/token/")
    assert missing.status_code == 404


@pytest.mark.django_db
def test_jobs_and_their_records_cannot_be_edited_in_admin(client, staff, alice):
    job = _finished_job(alice)
    client.force_login(staff)
    row = JobHistory.objects.filter(job=job).first()

    responses = {
        "job change": client.post(f"/admin/jobs_app/job/{job.id}/change/",
                                  {"status": "failed", "name": "x"}),
        "job add": client.get("/admin/jobs_app/job/add/"),
        "history add": client.get("/admin/jobs_app/jobhistory/add/"),
        "history change": client.post(f"/admin/jobs_app/jobhistory/{row.id}/change/",
                                      {"message": "x", "status": "x"}),
        "history delete": client.post(f"/admin/jobs_app/jobhistory/{row.id}/delete/",
                                      {"post": "yes"}),
        "event add": client.get("/admin/jobs_app/jobevent/add/"),
    }

    assert {k: r.status_code for k, r in responses.items()} == {k: 403 for k in responses}
    job.refresh_from_db()
    assert (job.status, job.name) == ("completed", "Collection Generation: Foxes")
    row.refresh_from_db()
    assert row.message == "Job created and pending execution"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/jobs_app/job/?status=completed&q=Foxes",
                                 "/admin/generation_app/generation/?status=completed",
                                 "/admin/generation_app/noderun/?queue=browser",
                                 "/admin/jobs_app/jobhistory/?status=processing",
                                 "/admin/jobs_app/jobevent/?event_type=job_history"])
def test_the_lists_filter_and_search(client, staff, alice, url):
    job = _finished_job(alice)
    client.force_login(staff)

    response = client.get(url)

    assert response.status_code == 200
    assert str(job) in response.content.decode()


@pytest.mark.django_db
def test_the_change_page_query_count_does_not_grow_with_the_rows(client, staff, alice,
                                                                  django_assert_max_num_queries):
    job = _finished_job(alice)
    for i in range(20):
        history_add(job=job, status="processing", message=f"Node {i} completed",
                    data={"gid": 0})
    client.force_login(staff)

    with django_assert_max_num_queries(9):
        response = client.get(f"/admin/jobs_app/job/{job.id}/change/")

    assert response.status_code == 200


@pytest.mark.server
@pytest.mark.timeout(60)
def test_the_pages_token_opens_the_event_stream_on_a_real_server(client, staff, alice,
                                                                  transactional_db, tmp_path):
    job = _finished_job(alice)
    client.force_login(staff)
    content = client.get(f"/admin/jobs_app/job/{job.id}/change/").content.decode()
    events_url = html.unescape(re.search(r'data-events-url="([^"]+)"', content).group(1))
    web = WebProcess(tmp_path).start()
    try:
        with httpx.Client(base_url=web.url, timeout=30) as http, \
                http.stream("GET", events_url) as response:
            assert response.status_code == 200
            frames: list[dict[str, str]] = []
            current: dict[str, str] = {}
            for line in response.iter_lines():
                if line == "" and "event" in current:
                    frames.append(current)
                    current = {}
                    if len(frames) == 2:
                        break
                elif line and not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    current[key] = value
    finally:
        web.stop()

    assert [f["event"] for f in frames] == ["job_update", "history_init"]
    assert json.loads(frames[0]["data"])["status"] == "completed"
    assert [r["message"] for r in json.loads(frames[1]["data"])] == [
        "Job created and pending execution", "Node started", "Generation completed successfully"]
    assert int(frames[1]["id"]) == JobEvent.objects.filter(job=job).count()


@pytest.mark.browser
@pytest.mark.server
@pytest.mark.timeout(90)
def test_the_page_follows_the_job_live_in_a_real_browser(client, staff, alice, transactional_db,
                                                         tmp_path):
    # given a pending job open on the admin page in Chromium, served by a real uvicorn
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("EMPROPS_CHROMIUM_PATH", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium}")
    with transaction.atomic():
        job = Job.objects.create(user=alice, name="Collection Generation: Live")
        history_add(job=job, status="pending", message="Job created and pending execution")
        job_changed(job=job)
    client.force_login(staff)
    web = WebProcess(tmp_path).start()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                                  "url": web.url}])
            page = context.new_page()
            page.goto(f"{web.url}/admin/jobs_app/job/{job.id}/change/")
            page.wait_for_function(
                "document.getElementById('job-live-connection').textContent === 'connected'",
                timeout=15_000)

            # when the job runs and completes (committed outside the web process)
            def run() -> JobHistory | None:
                with transaction.atomic():
                    job.status, job.progress = Job.Status.PROCESSING, 50
                    job.started_at = timezone.now()
                    job.save(update_fields=["status", "progress", "started_at", "updated_at"])
                    row = history_add(job=job, status="processing", message="Node started",
                                      data={"gid": 0, "node": "p5", "nodeId": 2})
                    job_changed(job=job)
                return row

            started = outside_playwright(run)
            page.wait_for_selector(f'#job-history tr[data-id="{started.id}"]', timeout=15_000)
            page.wait_for_function(
                "document.getElementById('job-live-status').textContent === 'processing'",
                timeout=15_000)

            def complete() -> JobHistory | None:
                output = {"id": str(job.id), "generation": {"id": 0, "hash": HASH}, "steps": [
                    {"id": 2, "nodeName": "p5", "nodeAlias": None,
                     "nodeResponse": {"src": IMAGE_URL, "mimeType": "image/png"}}]}
                with transaction.atomic():
                    job.data = {"outputs": [output]}
                    job.status, job.progress = Job.Status.COMPLETED, 100
                    job.completed_at = timezone.now() + timedelta(minutes=1)
                    job.save(update_fields=["data", "status", "progress", "completed_at",
                                            "updated_at"])
                    row = history_add(job=job, status="completed",
                                      message="Generation completed successfully",
                                      data={"gid": 0, "outputs": output})
                    job_changed(job=job)
                return row

            done = outside_playwright(complete)

            # then the page shows it without a reload: status, progress, rows and the output
            page.wait_for_selector(f'#job-outputs img[src="{IMAGE_URL}"]', timeout=15_000)
            page.wait_for_selector(f'#job-history tr[data-id="{done.id}"]', timeout=15_000)
            # and the finished job's stream ends without the page reconnecting again and again
            page.wait_for_function(
                "document.getElementById('job-live-connection').textContent === 'finished'",
                timeout=15_000)
            # the times too, which job_update events do not carry ("-" before the reload)
            completed_text = str(display_for_value(job.completed_at, "-"))
            page.wait_for_function(
                "text => document.getElementById('job-live-completed-at').textContent === text",
                arg=completed_text, timeout=15_000)
            started_text = page.text_content("#job-live-started-at")
            status = page.text_content("#job-live-status")
            progress = page.text_content("#job-live-progress")
            history_ids = page.eval_on_selector_all("#job-history tbody tr",
                                                    "rows => rows.map(r => r.dataset.id)")
        finally:
            browser.close()
            web.stop()

    assert (status, progress) == ("completed", "100")
    assert started_text == str(display_for_value(job.started_at, "-"))
    assert history_ids == [str(r.id) for r in JobHistory.objects.filter(job=job)
                           .order_by("created_at", "id")]


def test_staff_cancel_action_cancels_and_releases(client, staff, alice):
    from decimal import Decimal

    from emprops.accounts.models import CreditsHold
    from emprops.accounts.services import credits_hold

    job = Job.objects.create(user=alice, name="running", status=Job.Status.PROCESSING)
    credits_hold(user=alice, job_id=job.id, per_generation=Decimal(2), generations=1, quote={})
    client.force_login(staff)

    response = client.post("/admin/jobs_app/job/", {"action": "cancel_jobs",
                                                    "_selected_action": [str(job.id)]})

    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert CreditsHold.objects.get(job_id=job.id).status == "released"
