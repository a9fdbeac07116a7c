"""Every endpoint with an object in its path, called by a second user on the first user's objects:
404 (405 where the route does not take the method), the same answer as for an id that does not
exist, and not one row changed anywhere.

The routes come from the URL resolver, so a new endpoint is covered the day it is added: its path
parameters must name an object made below (`ALICES`), or the route must be in `NOT_OWNED` with
the reason it holds no user's object. The per-feature tests (tests/*/test_*api*.py, schedules,
templates, webhooks, secrets) check the same for a few calls each, with their own details.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from emprops.accounts.services import api_key_create

# Routes with a path parameter that names no user's object, and why.
NOT_OWNED = {
    "api/workflows/name/<name:name>": "the staff-curated workflow catalog is read by every user",
    "api/workflows/<uuid:workflow_id>": "the workflow catalog is shared",
    "api/workflows/<uuid:workflow_id>/models": "the workflow catalog is shared",
    "api/workflows/<uuid:workflow_id>/form": "the workflow catalog is shared",
    "api/workflows/<uuid:workflow_id>/quote": "quotes a shared workflow, writes nothing",
    "api/workflows/<uuid:workflow_id>/test": "staff only (403 for users), tests/generation_app",
    "^media/(?P<path>.*)$": "a redirect to the user-content origin (emprops/media.py)",
    "api/^.*$": "the API's 404 for unknown paths",
    # an async view that closes the thread's database connection, which a test transaction
    # cannot survive; bob's 404 and the unchanged job are pinned against a real server in
    # tests/jobs_app/test_events_stream.py::test_stream_refuses_before_streaming
    "api/jobs/<uuid:job_id>/events": "the SSE stream, covered against uvicorn (see above)",
}
# Path prefixes that are not user-authenticated API routes: the staff surface is keyed by a staff
# key in the path (tests/workflows_app/test_staff_surface.py), admin by Django's admin.
OUT_OF_SCOPE_PREFIXES = ("admin", "api/staff/")
# Routes whose path parameter names bob's own thing rather than an object id: PUT
# /api/secrets/<workflow> stores bob's own key for that workflow and DELETE removes it; alice's
# rows of that table must stay as they were (checked), and nothing else may change.
OWN_BY_NAME = {"api/secrets/<name:workflow_name>": "workflows_app.UserApiSecret"}

# Calls refused before the object is read (the body, or the caller's own standing, is checked
# first): the answer must then be exactly an absent id's (status and error), and change nothing.
ANSWERS_BEFORE_LOOKUP = {
    ("api/collections/<uuid:collection_id>/purchases", "POST"): "the body (tx_hash) first: 400",
    ("api/collections/<uuid:collection_id>/collect", "POST"): "the caller's standing first: 403",
}

# GET routes that answer 404 to the owner too, as designed: only published collections have
# public pages, and a generation has no replay until one is asked for.
EMPTY_FOR_THE_OWNER = {"api/collections/<uuid:collection_id>/public", "p/<uuid:collection_id>",
                       "api/jobs/<uuid:job_id>/generations/<int:gid>/replay"}

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# one body for every write: plausible fields of every input serializer, so that a view that
# validated the body before finding the object would answer 400 and fail this test
BODY = {"name": "bob was here", "title": "bob was here", "description": "bob", "count": 1,
        "value": "bob-secret", "interval_seconds": 3600, "parameters": {}, "variables": {},
        "is_public": False, "is_remixable": True, "settings": {}, "refresh_workflows": False}

GI = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a $who"}}],
      "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                     "value": {"values": ["cat", "dog"]}}]}


def _routes() -> Iterator[tuple[str, Any]]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p

    for route, pattern in walk(get_resolver().url_patterns, ""):
        if route.startswith(OUT_OF_SCOPE_PREFIXES):
            continue
        if "<" in route or "(?P<" in route or route in NOT_OWNED:
            yield route, pattern


def _methods(pattern: Any) -> list[str] | None:
    """The methods a class view serves; None for a function view (it cannot say)."""
    view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
    if view is None:
        return None
    return [m for m in METHODS if hasattr(view, m.lower())]


def _params(route: str) -> list[str]:
    return re.findall(r"<(?:\w+:)?(\w+)>", route)


ROUTES = [(route, _methods(p)) for route, p in _routes() if route not in NOT_OWNED]


OBJECT_PARAMS = {"project_id", "collection_id", "job_id", "gid", "file_id", "key_id",
                 "workflow_name", "schedule_id", "template_id", "endpoint_id", "delivery_id"}


@pytest.fixture
def alices(api_for: Any, alice: Any) -> dict[str, str]:
    """One of each of alice's objects, made through the API where it can be, by path parameter."""
    from generation_app.models import WebhookDelivery, WebhookEndpoint
    from generation_app.services import webhooks
    from jobs_app.models import Job
    from workflows_app.models import Workflow

    client = api_for(alice)

    def ok(response: Any) -> dict[str, Any]:
        assert response.status_code in (200, 201, 202), response.content
        return response.json()["data"]

    project = ok(client.post("/api/projects", {"name": "Alice's"}, format="json"))
    collection = ok(client.post(f"/api/projects/collections?project_id={project['id']}",
                                {"title": "Alice's", "data": GI}, format="json"))
    ok(client.get(f"/api/collections/{collection['id']}/preview"))
    job = ok(client.post(f"/api/collections/{collection['id']}/generations", {"count": 1},
                         format="json"))
    file = ok(client.post("/api/files", {"file": SimpleUploadedFile("a.txt", b"alice's")},
                          format="multipart"))
    key, _raw = api_key_create(user=alice, name="alice's second key")
    Workflow.objects.create(name="openai_image", type="fetch_api", output_mime_type="image/png")
    ok(client.put("/api/secrets/openai_image", {"value": "alice-secret"}, format="json"))
    schedule = ok(client.post(f"/api/collections/{collection['id']}/schedules",
                              {"interval_seconds": 3600}, format="json"))
    template = ok(client.post("/api/templates", {"name": "alice's", "data": {
        "steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "{{subject}}"}}]}},
        format="json"))
    endpoint = WebhookEndpoint.objects.create(user=alice, url="https://hooks.example.test/a",
                                              events=["completed"])
    finished = Job.objects.create(user=alice, name="done", status="completed", progress=100)
    with transaction.atomic():
        webhooks.job_finished(job=finished)
    delivery = WebhookDelivery.objects.get(job=finished)
    return {"project_id": project["id"], "collection_id": collection["id"],
            "job_id": job["jobId"], "gid": "0", "file_id": str(file["id"]),
            "key_id": str(key.id), "workflow_name": "openai_image",
            "schedule_id": schedule["id"], "template_id": template["id"],
            "endpoint_id": str(endpoint.id), "delivery_id": str(delivery.id)}


def _missing(param: str) -> str:
    """An id of the same shape that names nothing."""
    if param in ("file_id", "key_id"):
        return "987654321"
    if param == "gid":
        return "0"
    if param == "workflow_name":
        return "no_such_workflow"
    return str(uuid.uuid4())


_OURS = {"accounts", "collections_app", "workflows_app", "jobs_app", "generation_app"}


def _snapshot() -> dict[str, str]:
    """A digest of every table of ours, in one query (API keys' last-use stamps aside: bob's
    own key's moves as he calls)."""
    from django.db import connection

    parts = []
    for model in apps.get_models():
        if model._meta.app_label not in _OURS or model._meta.proxy:
            continue
        columns = [f.column for f in model._meta.concrete_fields if f.column != "last_used_at"]
        row = "ROW(" + ", ".join(f't."{c}"' for c in columns) + ")::text"
        parts.append(f"SELECT '{model._meta.label}', md5(coalesce(string_agg({row}, ',' "
                     f"ORDER BY {row}), '')) FROM \"{model._meta.db_table}\" t")
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts))
        return dict(cursor.fetchall())


def _rows(label: str, **filters: Any) -> list[dict[str, Any]]:
    return list(apps.get_model(label).objects.filter(**filters).order_by("pk").values())


def _call(client: Any, method: str, path: str) -> Any:
    if method in ("GET", "DELETE"):
        return getattr(client, method.lower())(path)
    return getattr(client, method.lower())(path, BODY, format="json")


def _path(route: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", sub, route)


def test_every_object_route_is_covered_or_allow_listed() -> None:
    # a new route whose path names an object nobody made here fails this test: add the object
    # to `alices` (and OBJECT_PARAMS) or the route to NOT_OWNED with its reason
    unknown = {(route, p) for route, _ in ROUTES for p in _params(route) if p not in OBJECT_PARAMS}
    assert unknown == set()
    all_routes = {route for route, _p in _routes()}
    assert set(NOT_OWNED) <= all_routes, set(NOT_OWNED) - all_routes  # no stale entries
    assert set(OWN_BY_NAME) <= {r for r, _m in ROUTES}
    assert {r for r, _m in ANSWERS_BEFORE_LOOKUP} <= {r for r, _m in ROUTES}
    assert len(ROUTES) >= 30  # the walk found the routes (35 when this was written)


def test_bob_gets_404_on_each_of_alices_objects_and_nothing_changes(alices, api_for, alice,
                                                                     bob) -> None:
    # one pass over every route and method, failures collected so one run names them all
    api = api_for(bob)
    browser = Client()  # the gallery's pages: a signed-in session
    browser.force_login(bob)
    owner = api_for(alice)
    owner_browser = Client()
    owner_browser.force_login(alice)
    failures = []
    calls = 0
    for route, allowed in ROUTES:
        is_api = route.startswith("api/")
        client = api if is_api else browser
        if allowed is None or "GET" in allowed:  # (a function view's GET may be 405)
            # the ids name real objects: their owner reads them (the SSE route aside)
            seen = (owner if is_api else owner_browser).get(_path(route, alices))
            if seen.status_code not in ((404,) if route in EMPTY_FOR_THE_OWNER else (200, 405)):
                failures.append(f"GET /{route} as alice: {seen.status_code}")
        missing = {p: _missing(p) for p in _params(route)}
        for method in METHODS:
            own = OWN_BY_NAME.get(route)
            alices_rows = _rows(own, user=alice) if own else None
            before = _snapshot()

            response = _call(client, method, _path(route, alices))

            changed = {t for t, digest in _snapshot().items() if before[t] != digest}
            calls += 1
            where = f"{method} /{route}"
            if own:
                if _rows(own, user=alice) != alices_rows or changed - {own}:
                    failures.append(f"{where}: alice's rows or other tables changed {changed}")
                continue
            if changed:
                failures.append(f"{where}: changed {sorted(changed)}")
            absent = _call(client, method, _path(route, {**alices, **missing}))
            # a class view lists its methods; a function view's 405 is the same for any id
            not_allowed = method not in allowed if allowed is not None else \
                absent.status_code == 405
            expected = 405 if not_allowed else 404
            if (route, method) in ANSWERS_BEFORE_LOOKUP and response.status_code != 404:
                expected = absent.status_code
                if expected < 400 or response.json()["error"] != absent.json()["error"]:
                    failures.append(f"{where}: {response.status_code} "
                                    f"{response.json()['error']!r} vs an absent id's "
                                    f"{absent.status_code} {absent.json()['error']!r}")
                    continue
            if (response.status_code, absent.status_code) != (expected, expected):
                failures.append(f"{where}: {response.status_code} (an absent id: "
                                f"{absent.status_code}), expected {expected}")
            elif expected == 404 and is_api and response.json()["error"] != absent.json()["error"]:
                failures.append(f"{where}: {response.json()['error']!r} differs from an absent "
                                f"id's {absent.json()['error']!r}")

    assert failures == [], "\n".join(failures)
    assert calls == len(ROUTES) * len(METHODS)


def test_bob_cannot_use_alices_key_id_even_with_a_valid_token_of_his_own(alices, bob) -> None:
    # an explicit one on top of the generated set: a JWT, not an API key, as the credential
    from emprops.accounts.models import UserApiKey
    from emprops.authentication import issue_tokens

    token = issue_tokens(user=bob)["access"]

    response = APIClient().delete(f"/api/api-keys/{alices['key_id']}",
                                  HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 404
    assert UserApiKey.objects.get(pk=alices["key_id"]).is_active
