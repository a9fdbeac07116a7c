"""User-made content never runs on the platform's origin (security issue: stored XSS via HTML outputs)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group
from django.db import transaction

from emprops import storage
from emprops.usercontent import UserContentApp
from jobs_app.models import Job
from jobs_app.services import history_add, job_changed
from tests.workers import WebProcess

ATTACK = """<!doctype html><html><head><title>artwork</title></head><body>
<canvas id="c" width="8" height="8"></canvas>
<script>
const ADMIN = "%(admin)s";
const report = {ran: true};
try { report.parentDom = String(window.parent.document.title); }
catch (e) { report.parentDom = "blocked:" + e.name; }
try { report.cookie = document.cookie; } catch (e) { report.cookie = "blocked:" + e.name; }
try { report.storage = String(localStorage.length); } catch (e) { report.storage = "blocked:" + e.name; }
async function attack() {
  try {
    const r = await fetch(ADMIN + "/admin/auth/group/add/", {credentials: "include"});
    const text = await r.text();
    report.adminRead = "read:" + (text.match(/csrfmiddlewaretoken" value="([^"]+)/) || ["", ""])[1];
  } catch (e) { report.adminRead = "blocked:" + e.name; }
  try {
    await fetch(ADMIN + "/admin/auth/group/add/", {method: "POST", mode: "no-cors",
      credentials: "include", headers: {"Content-Type": "application/x-www-form-urlencoded"},
      body: "name=pwned-by-artwork"});
    report.adminPost = "sent";
  } catch (e) { report.adminPost = "blocked:" + e.name; }
  document.getElementById("c").getContext("2d").fillRect(0, 0, 8, 8);
  report.drew = true;
  window.parent.postMessage(report, "*");
  document.title = JSON.stringify(report);
}
attack();
</script></body></html>
"""

KEY = "generations/u/j/0/2/js.html"


def _write_media(settings: Any, key: str, content: str) -> Path:
    path = Path(settings.MEDIA_ROOT) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


# ---- the platform's origin ------------------------------------------------------------------


@pytest.mark.django_db
def test_media_on_the_platform_origin_redirects_to_the_user_content_origin(client, settings):
    settings.USER_CONTENT_ORIGIN = "http://127.0.0.1:9"
    _write_media(settings, KEY, "<script>alert(1)</script>")

    response = client.get(f"/media/{KEY}")

    assert response.status_code == 302
    assert response["Location"] == f"http://127.0.0.1:9/media/{KEY}"


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "attachment"), [("a.html", True), ("a.svg", True),
                                                  ("a.png", False), ("a.txt", False)])
def test_without_a_user_content_origin_media_is_sandboxed_without_scripts(client, settings, name,
                                                                           attachment):
    settings.USER_CONTENT_ORIGIN = ""
    _write_media(settings, f"generations/x/{name}", "<script>alert(1)</script>")

    response = client.get(f"/media/generations/x/{name}")

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert (response.get("Content-Disposition") == "attachment") is attachment


def test_public_urls_of_local_files_name_the_user_content_origin(settings):
    settings.CDN_URL = ""
    settings.USER_CONTENT_ORIGIN = "http://127.0.0.1:8001"
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8000"

    url = storage.public_url(KEY)

    assert url == f"http://127.0.0.1:8001/media/{KEY}"
    assert storage.key_for_url(url) == KEY
    assert storage.key_for_url(f"http://127.0.0.1:8000/media/{KEY}") == KEY


# ---- the user-content origin ----------------------------------------------------------------


def test_the_user_content_app_serves_files_with_sandbox_headers_and_nothing_else(tmp_path):
    (tmp_path / "generations").mkdir()
    (tmp_path / "generations" / "a.html").write_text("<p>hi</p>")
    (tmp_path / "secret.txt").write_text("outside")
    transport = httpx.ASGITransport(app=UserContentApp(tmp_path / "generations"))

    async def requests() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://content") as http:
            return [
                await http.get("/media/a.html"),
                await http.get("/media/a.html", headers={"Range": "bytes=0-1"}),
                await http.get("/media/../secret.txt"),
                await http.get("/media/%2e%2e/secret.txt"),
                await http.get("/admin/"),
                await http.post("/media/a.html", content=b"x"),
            ]

    ok, ranged, traversal, encoded, outside, post = asyncio.run(requests())

    assert ok.status_code == 200 and ok.text == "<p>hi</p>"
    assert ok.headers["content-type"].startswith("text/html")
    assert ok.headers["content-security-policy"] == "sandbox allow-scripts"
    assert ok.headers["x-content-type-options"] == "nosniff"
    assert ranged.status_code == 206 and ranged.text == "<p"
    assert traversal.status_code == 404 and encoded.status_code == 404
    assert "outside" not in traversal.text + encoded.text
    assert outside.status_code == 404
    assert post.status_code == 405
    for response in (traversal, outside, post):
        assert response.headers["content-security-policy"] == "sandbox allow-scripts"


# ---- in a real browser ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.server
@pytest.mark.timeout(120)
def test_an_html_output_opened_by_staff_runs_in_its_frame_and_reaches_nothing_of_admin(
        client, staff, alice, transactional_db, settings, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("EMPROPS_CHROMIUM_PATH", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium}")
    # given an admin web process and the user-content origin, as `make run` starts them
    content = WebProcess(tmp_path, env={"MEDIA_ROOT": str(settings.MEDIA_ROOT)},
                         app="emprops.usercontent:application").start()
    web = WebProcess(tmp_path, env={"USER_CONTENT_ORIGIN": content.url}).start()
    _write_media(settings, KEY, ATTACK % {"admin": web.url})
    src = f"{content.url}/media/{KEY}"
    with transaction.atomic():
        job = Job.objects.create(user=alice, name="artwork", status=Job.Status.COMPLETED,
                                 progress=100)
        job.data = {"outputs": [{"id": str(job.id), "generation": {"id": 0, "hash": "0x1"},
                                 "steps": [{"id": 2, "nodeName": "js", "nodeAlias": None,
                                            "nodeResponse": {"src": src,
                                                             "mimeType": "text/html"}}]}]}
        job.save(update_fields=["data"])
        history_add(job=job, status="completed", message="Job completed")
        job_changed(job=job)
    client.force_login(staff)
    groups_before = Group.objects.count()
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                context = browser.new_context()
                context.add_cookies([{"name": "sessionid", "url": web.url,
                                      "value": client.cookies["sessionid"].value}])
                page = context.new_page()
                page.add_init_script(
                    "window.__reports = []; window.addEventListener('message', "
                    "e => window.__reports.push({origin: e.origin, data: e.data}));")
                # when staff open the job page: the artwork runs in its frame
                page.goto(f"{web.url}/admin/jobs_app/job/{job.id}/change/")
                frame_attrs = page.eval_on_selector(
                    "#job-outputs iframe", "f => [f.getAttribute('sandbox'), f.src]")
                page.wait_for_function("window.__reports.length > 0", timeout=30_000)
                in_frame = page.evaluate("window.__reports[0]")
                admin_title = page.title()
                # and when they open the output itself in a tab of the same session
                tab = context.new_page()
                tab.goto(src)
                tab.wait_for_function("document.title.startsWith('{')", timeout=30_000)
                top_level = tab.evaluate("JSON.parse(document.title)")
                top_level_origin = tab.evaluate("String(self.origin)")
            finally:
                browser.close()
    finally:
        web.stop()
        content.stop()

    # then the artwork's script ran (it drew and reported) ...
    assert frame_attrs == ["allow-scripts", src]
    assert in_frame["data"]["ran"] is True and in_frame["data"]["drew"] is True
    # ... from an opaque origin, apart from the admin page, its cookies and storage
    assert in_frame["origin"] == "null" and top_level_origin == "null"
    for report in (in_frame["data"], top_level):
        assert report["parentDom"].startswith("blocked:") or report is top_level
        assert report["cookie"].startswith("blocked:")
        assert report["storage"].startswith("blocked:")
        assert report["adminRead"].startswith("blocked:")
    assert "admin" in admin_title.lower() or "job" in admin_title.lower()
    # and nothing changed server-side
    assert Group.objects.count() == groups_before
    assert not Group.objects.filter(name="pwned-by-artwork").exists()
