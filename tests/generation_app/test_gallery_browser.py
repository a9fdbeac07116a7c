"""The gallery in a real browser (headless Chromium on a real uvicorn): user strings stay text,
and a collection page fills its grid live while a real worker runs the job."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest
from django.db import transaction

from collections_app.services import (
    collection_create,
    collection_preview_update,
    collection_publish,
)
from generation_app.engine.variables import pick_variables
from generation_app.models import Generation
from jobs_app.models import Job
from tests.workers import WebProcess

XSS_TITLE = "<img src=x onerror=window.__pwned=1>"
XSS_VALUE = "</script><script>window.__pwned=1</script>"
VARIABLES = [{"name": "who", "type": "pick", "value_type": "strings",
              "value": {"values": [XSS_VALUE, XSS_TITLE]}}]
DATA = {"version": "v2", "variables": VARIABLES, "steps": [
    {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a $who"}}]}

pytestmark = [pytest.mark.browser, pytest.mark.server]


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One uvicorn for the module (the tests need `transactional_db` so it sees their rows)."""
    with django_db_blocker.unblock():
        server = WebProcess(tmp_path_factory.mktemp("gallery")).start()
    yield server
    server.stop()


def _chromium() -> tuple[Any, str]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("EMPROPS_CHROMIUM_PATH", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium}")
    return playwright_api, chromium


def _page(pw: Any, chromium: str, web: WebProcess, session: str) -> tuple[Any, Any]:
    browser = pw.chromium.launch(executable_path=chromium, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": session, "url": web.url}])
    return browser, context.new_page()


@pytest.mark.timeout(60)
def test_titles_and_variable_values_show_as_text_and_never_run(client, alice, transactional_db,
                                                                web):
    # given a published collection whose title, description, variable values, error and a
    # running job's history carry script payloads
    collection = collection_create(user=alice, data=DATA, fields={"title": XSS_TITLE,
                                                                  "description": XSS_VALUE})
    collection_publish(user=alice, collection_id=collection.id)
    collection_preview_update(user=alice, collection_id=collection.id, access_level="PUBLIC")
    with transaction.atomic():
        job = Job.objects.create(user=alice, name="gen", status=Job.Status.COMPLETED,
                                 data={"collectionId": str(collection.id)})
        Generation.objects.create(
            job=job, gid=0, hash="oo1", seed=1, variables={XSS_TITLE: XSS_VALUE},
            status=Generation.Status.COMPLETED,
            outputs={"id": str(job.id), "generation": {"id": 0, "hash": "oo1"}, "steps": [
                {"id": 1, "nodeName": "prompt", "nodeAlias": XSS_TITLE,
                 "nodeResponse": {"data": XSS_VALUE, "mimeType": "text/plain"}}]})
    client.force_login(alice)
    playwright_api, chromium = _chromium()
    seen: dict[str, Any] = {}
    with playwright_api.sync_playwright() as pw:
        browser, page = _page(pw, chromium, web, client.cookies["sessionid"].value)
        try:
            # when the landing, collection and public pages load
            for path in ("/", f"/c/{collection.id}", f"/p/{collection.id}"):
                page.goto(web.url + path)
                page.wait_for_load_state("load")
                seen[path] = page.evaluate("""() => ({
                    pwned: window.__pwned === undefined ? null : window.__pwned,
                    injected: document.querySelectorAll('img[src="x"], main script').length,
                    h1: (document.querySelector('main h1#collection-title') || {}).textContent,
                    title: (document.querySelector('.card .title') || {}).textContent,
                    value: (document.querySelector('.vars dd') || {}).textContent,
                    name: (document.querySelector('.vars dt') || {}).textContent,
                    text: (document.querySelector('.step pre') || {}).textContent,
                })""")
        finally:
            browser.close()

    # then nothing ran and every payload shows literally
    for path, found in seen.items():
        assert (found["pwned"], found["injected"]) == (None, 0), path
    assert seen["/"]["title"] == XSS_TITLE
    for path in (f"/c/{collection.id}", f"/p/{collection.id}"):
        assert seen[path]["h1"] == XSS_TITLE
        assert (seen[path]["name"], seen[path]["value"], seen[path]["text"]) == (
            XSS_TITLE, XSS_VALUE, XSS_VALUE)


@pytest.mark.timeout(90)
def test_the_grid_fills_in_live_while_a_real_worker_runs_the_job(client, alice, start_worker,
                                                                  web):
    # given the owner on her collection's page, no worker running yet
    collection = collection_create(user=alice, data=DATA, fields={"title": "Live"})
    client.force_login(alice)
    playwright_api, chromium = _chromium()
    with playwright_api.sync_playwright() as pw:
        browser, page = _page(pw, chromium, web, client.cookies["sessionid"].value)
        try:
            page.goto(f"{web.url}/c/{collection.id}")
            # when she generates 2: the page follows the new job, which waits in its queue
            page.fill("form.generate input[name=count]", "2")
            page.click("form.generate button")
            page.wait_for_url(re.compile(r"\?job="), timeout=15_000)
            job_id = page.url.rsplit("=", 1)[1]
            section = f"#job-{job_id}"
            page.wait_for_function(
                "s => document.querySelector(s + ' .job-connection').textContent === 'live'",
                arg=section, timeout=15_000)
            waiting = page.text_content(f"{section} .job-waiting")
            page.evaluate("() => { window.__sameDocument = true; }")  # gone on a reload
            empty_before = page.eval_on_selector_all(
                f"{section} .item .steps", "els => els.map(e => e.children.length)")

            # and a worker starts and runs it
            start_worker()

            # then both cards fill in without a reload, and the finished stream closes
            page.wait_for_function(
                "s => document.querySelectorAll(s + ' .item[data-state=\"completed\"]')"
                ".length === 2", arg=section, timeout=45_000)
            page.wait_for_function(
                "s => document.querySelector(s + ' .job-connection').textContent"
                " === 'finished'", arg=section, timeout=15_000)
            texts = page.eval_on_selector_all(
                f"{section} .item .step pre", "els => els.map(e => e.textContent)")
            status = page.text_content(f"{section} .job-status")
            pwned = page.evaluate("() => window.__pwned === undefined ? null : 1")
            same_document = page.evaluate("() => window.__sameDocument === true")
        finally:
            browser.close()

    gens = list(Generation.objects.filter(job_id=job_id).order_by("gid"))
    assert waiting.startswith("queued: position 0")
    assert empty_before == [0, 0]
    assert texts == [f"a {pick_variables(copy.deepcopy(VARIABLES), g.hash)['who']}"
                     for g in gens]
    assert (status, pwned, same_document) == ("completed", None, True)
