"""The gallery pages, in-process: who sees what, signed links, generate and reproduce, escaping."""

from __future__ import annotations

import copy
import html
import io
import re
from decimal import Decimal
from typing import Any

import pytest
from django.core import signing
from django.core.management import call_command
from django.db import transaction

from collections_app.models import Collection, CollectionPreview
from collections_app.services import (
    collection_create,
    collection_preview_update,
    collection_publish,
)
from generation_app.engine.variables import pick_variables
from generation_app.gallery.links import GALLERY_LINK_SALT, gallery_path
from generation_app.models import Generation
from jobs_app.events import EVENTS_TOKEN_SALT
from jobs_app.models import Job

XSS_TITLE = "<img src=x onerror=window.__pwned=1>"
XSS_VALUE = "</script><script>window.__pwned=1</script>"
IMAGE = "http://content.test/media/generations/a/j/0/2/p5.png"
PAGE = "http://content.test/media/generations/a/j/0/3/js.html"
HASH = "oo2X9wdy4Hcgk1LsbPSu6CjCrRxvbcjwyTzJnn8ipUQ8K4P1QLe"
DATA = {"version": "v2", "steps": [{"id": 1, "nodeName": "prompt",
                                    "nodePayload": {"prompt": "a $who"}}],
        "variables": [{"name": "who", "type": "pick", "value_type": "strings",
                       "value": {"values": ["cat", XSS_VALUE]}}]}


def _collection(user: Any, *, title: str = "Foxes", published: bool = False,
                access: str | None = None) -> Collection:
    collection = collection_create(user=user, data=DATA, fields={"title": title})
    if published:
        collection_publish(user=user, collection_id=collection.id)
    if access:
        collection_preview_update(user=user, collection_id=collection.id, access_level=access)
    collection.refresh_from_db()
    return collection


def _finished(collection: Collection, *, variables: dict[str, str] | None = None,
              status: str = Job.Status.COMPLETED) -> Job:
    """A job of the collection's owner with one completed generation: text, image, HTML."""
    steps = [
        {"id": 1, "nodeName": "prompt", "nodeAlias": "Subject",
         "nodeResponse": {"data": "a red fox", "mimeType": "text/plain"}},
        {"id": 2, "nodeName": "p5", "nodeAlias": None,
         "nodeResponse": {"src": IMAGE, "mimeType": "image/png"}},
        {"id": 3, "nodeName": "js", "nodeAlias": None,
         "nodeResponse": {"src": PAGE, "mimeType": "text/html"}},
    ]
    with transaction.atomic():
        job = Job.objects.create(user_id=collection.project.user_id, name="gen", status=status,
                                 data={"collectionId": str(collection.id)})
        Generation.objects.create(
            job=job, gid=0, hash=HASH, seed=1, variables=variables or {"who": "cat"},
            status=Generation.Status.COMPLETED,
            outputs={"id": str(job.id), "generation": {"id": 0, "hash": HASH}, "steps": steps})
    return job


# ---- the landing page -------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_landing_page_says_what_this_is_and_lists_public_collections(client, alice, bob):
    shown = _collection(alice, title="Public foxes", published=True, access="PUBLIC")
    _finished(shown)
    hidden_outputs = _collection(alice, title="Private outputs", published=True,
                                 access="PRIVATE")
    _finished(hidden_outputs)
    _collection(bob, title="Bob's draft")

    response = client.get("/")

    content = response.content.decode()
    assert response.status_code == 200
    assert 'href="/api/docs"' in content and 'href="/api/schema"' in content
    assert 'href="/admin/"' in content and 'href="/accounts/login/"' in content
    public = content.split('id="public"', 1)[1]
    assert f'href="/p/{shown.id}"' in public and f'<img src="{IMAGE}"' in public
    # a collection whose outputs are private shows no output, a draft does not show at all
    assert f'href="/p/{hidden_outputs.id}"' in public and public.count("<img ") == 1
    assert "Bob&#x27;s draft" not in content and "Your collections" not in content
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_signed_in_the_landing_page_lists_your_collections_only(client, alice, bob):
    mine = _collection(alice, title="Alice draft")
    _finished(mine)
    theirs = _collection(bob, title="Bob draft")
    client.force_login(alice)

    content = client.get("/").content.decode()

    yours = content.split('id="mine"', 1)[1].split('id="public"', 1)[0]
    assert f'href="/c/{mine.id}"' in yours and f'<img src="{IMAGE}"' in yours
    assert str(theirs.id) not in content


@pytest.mark.django_db
def test_admins_view_site_link_lands_on_the_gallery(client, staff):
    client.force_login(staff)

    content = client.get("/admin/").content.decode()

    assert 'href="/"' in content


# ---- a collection page ------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_owner_sees_outputs_with_hash_variables_steps_and_actions(client, alice):
    collection = _collection(alice)
    _finished(collection, variables={"who": "cat", "mood": "calm"})
    client.force_login(alice)

    response = client.get(f"/c/{collection.id}")

    content = response.content.decode()
    assert response.status_code == 200
    assert f'<code class="hash" title="generation hash">{HASH}</code>' in content
    assert "<dt>who</dt><dd>cat</dd><dt>mood</dt><dd>calm</dd>" in content
    assert "<pre>a red fox</pre>" in content and f'<img src="{IMAGE}"' in content
    assert (f'<iframe sandbox="allow-scripts" src="{PAGE}" referrerpolicy="no-referrer"'
            in content)
    assert f'<input type="hidden" name="hash" value="{HASH}">' in content
    assert 'name="count"' in content


@pytest.mark.django_db
def test_another_users_collection_is_404_and_generating_it_changes_nothing(client, alice, bob):
    collection = _collection(alice)
    _finished(collection)
    client.force_login(bob)

    page = client.get(f"/c/{collection.id}")
    generate = client.post(f"/c/{collection.id}/generate", {"count": "1"})
    live = client.get(f"/c/{collection.id}/jobs/{Job.objects.get().id}/live")

    assert (page.status_code, generate.status_code, live.status_code) == (404, 404, 404)
    assert HASH not in page.content.decode() and "token" not in live.content.decode()
    assert Job.objects.count() == 1 and Generation.objects.count() == 1


@pytest.mark.django_db
def test_signed_out_the_collection_page_sends_you_to_sign_in(client, alice):
    collection = _collection(alice)

    response = client.get(f"/c/{collection.id}")
    generate = client.post(f"/c/{collection.id}/generate", {"count": "1"})

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/c/{collection.id}"
    assert generate.status_code == 302 and not Job.objects.exists()


@pytest.mark.django_db
def test_a_gallery_link_shows_the_collection_read_only(client, alice):
    collection = _collection(alice)
    _finished(collection)

    response = client.get(gallery_path(user_id=alice.id, collection_id=collection.id))

    content = response.content.decode()
    assert response.status_code == 200
    assert HASH in content and f'<img src="{IMAGE}"' in content
    assert "<form" not in content.split("<main>", 1)[1]  # no generate, no reproduce


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["expired", "forged", "other collection", "not the owner"])
def test_a_bad_gallery_link_shows_nothing(client, alice, bob, settings, case):
    collection = _collection(alice)
    _finished(collection)
    other = _collection(alice, title="Other")
    path = gallery_path(user_id=alice.id, collection_id=collection.id)
    if case == "expired":
        settings.GALLERY_LINK_SECONDS = -1
    elif case == "forged":
        claims = {"u": str(alice.id), "c": str(collection.id)}
        path = f"/c/{collection.id}?g=" + signing.dumps(claims, salt=GALLERY_LINK_SALT,
                                                        key="not-our-secret")
    elif case == "other collection":
        path = path.replace(str(collection.id), str(other.id), 1)
    else:
        path = gallery_path(user_id=bob.id, collection_id=collection.id)

    response = client.get(path)

    expected = 403 if case in ("expired", "forged") else 404
    assert response.status_code == expected
    assert HASH not in response.content.decode()


@pytest.mark.django_db
def test_generate_n_starts_a_job_and_the_page_follows_it(client, alice):
    collection = _collection(alice)
    client.force_login(alice)

    response = client.post(f"/c/{collection.id}/generate", {"count": "2"})

    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/c/{collection.id}?job={job.id}"
    assert job.data["collectionId"] == str(collection.id) and job.generations.count() == 2
    page = client.get(response["Location"]).content.decode()
    section = page.split(f'id="job-{job.id}"', 1)[1].split("</section>", 1)[0]
    assert section.count('class="item"') == 2
    events_url = html.unescape(re.search(r'data-events-url="([^"]+)"', section).group(1))
    token = events_url.split("?token=", 1)[1]
    assert events_url.startswith(f"/api/jobs/{job.id}/events?token=")
    assert signing.loads(token, salt=EVENTS_TOKEN_SALT, max_age=300) == {
        "u": str(alice.id), "j": str(job.id)}
    # a fresh token and the wait info, for the page's script
    live = client.get(f"/c/{collection.id}/jobs/{job.id}/live").json()["data"]
    assert live["url"].startswith(f"/api/jobs/{job.id}/events?token=")
    assert live["waiting"]["state"] == "queued" and live["waiting_text"].startswith("queued: ")


@pytest.mark.django_db
def test_reproduce_generates_that_hash_again(client, alice):
    collection = _collection(alice)
    picks = pick_variables(copy.deepcopy(DATA["variables"]), HASH)
    _finished(collection, variables=picks)
    client.force_login(alice)

    response = client.post(f"/c/{collection.id}/generate", {"hash": HASH})

    job = Job.objects.exclude(name="gen").get()
    assert response.status_code == 302
    [gen] = job.generations.all()
    assert (gen.hash, gen.variables) == (HASH, picks)


@pytest.mark.django_db
@pytest.mark.parametrize(("form", "status"), [({"count": "0"}, 400), ({"count": "x"}, 400),
                                              ({"count": "100"}, 400), ({"hash": "x" * 500}, 400)])
def test_bad_generate_input_is_a_4xx_page_and_starts_nothing(client, alice, form, status):
    collection = _collection(alice)
    client.force_login(alice)

    response = client.post(f"/c/{collection.id}/generate", form)

    assert response.status_code == status
    assert '<h1 class="error-title">' in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_generating_without_credits_is_402_and_holds_nothing(client, make_user):
    poor = make_user("poor", free_credits=Decimal(0))
    collection = _collection(poor)
    client.force_login(poor)

    response = client.post(f"/c/{collection.id}/generate", {"count": "1"})

    assert response.status_code == 402
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_gallery_link_cannot_generate(client, alice):
    collection = _collection(alice)
    path = gallery_path(user_id=alice.id, collection_id=collection.id)

    response = client.post(path.replace(f"/c/{collection.id}", f"/c/{collection.id}/generate"),
                           {"count": "1"})

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Job.objects.exists()


# ---- the public page --------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_published_collection_has_a_public_page_with_its_outputs(client, alice):
    collection = _collection(alice, published=True, access="PUBLIC")
    _finished(collection)

    response = client.get(f"/p/{collection.id}")

    content = response.content.decode()
    assert response.status_code == 200
    assert HASH in content and f'<img src="{IMAGE}"' in content and "<form" not in content.split(
        "<main>", 1)[1]


@pytest.mark.django_db
def test_public_pages_of_drafts_archived_and_private_outputs(client, alice):
    draft = _collection(alice)
    _finished(draft)
    archived = _collection(alice, published=True, access="PUBLIC")
    Collection.objects.filter(pk=archived.pk).update(archived=True)
    private = _collection(alice, published=True, access="PRIVATE")
    _finished(private)

    responses = [client.get(f"/p/{c.id}") for c in (draft, archived, private)]

    assert [r.status_code for r in responses] == [404, 404, 200]
    assert HASH not in responses[0].content.decode()
    assert HASH not in responses[2].content.decode()
    assert "The owner keeps this collection's outputs private." in responses[2].content.decode()
    assert CollectionPreview.objects.get(collection=private).access_level == "PRIVATE"


# ---- escaping ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_user_strings_are_text_on_every_page(client, alice):
    collection = _collection(alice, title=XSS_TITLE, published=True, access="PUBLIC")
    Collection.objects.filter(pk=collection.pk).update(description=XSS_VALUE)
    job = _finished(collection, variables={XSS_TITLE: XSS_VALUE})
    Generation.objects.filter(job=job).update(error=XSS_TITLE)
    client.force_login(alice)

    pages = [client.get(p).content.decode()
             for p in ("/", f"/c/{collection.id}", f"/p/{collection.id}")]

    for content in pages:
        assert XSS_TITLE not in content and XSS_VALUE not in content
        assert html.escape(XSS_TITLE) in content
    assert html.escape(XSS_VALUE) in pages[1] and html.escape(XSS_VALUE) in pages[2]


# ---- signing in -------------------------------------------------------------------------------

@pytest.mark.django_db
def test_bootstrap_demo_writes_the_demo_password_and_the_demo_user_signs_in(client, settings,
                                                                           tmp_path):
    settings.VAR_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    call_command("bootstrap_demo", "--json", stdout=io.StringIO())
    password_file = tmp_path / "demo-password"
    password = password_file.read_text().strip()

    page = client.get("/accounts/login/")
    wrong = client.post("/accounts/login/", {"username": "demo", "password": "nope"})
    response = client.post("/accounts/login/", {"username": "demo", "password": password})

    assert page.status_code == 200 and 'name="password"' in page.content.decode()
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert wrong.status_code == 200 and "_auth_user_id" not in wrong.wsgi_request.session
    assert (response.status_code, response["Location"]) == (302, "/")
    assert "Your collections" in client.get("/").content.decode()
    # a second run keeps the password
    call_command("bootstrap_demo", "--json", stdout=io.StringIO())
    assert password_file.read_text().strip() == password


@pytest.mark.django_db
def test_the_favicon_is_the_gallerys_icon_on_every_page(client):
    # when a browser asks for /favicon.ico (admin and docs pages too), or reads the gallery's link
    response = client.get("/favicon.ico")
    page = client.get("/")

    # then it is sent to the icon, which is served as SVG, instead of an enveloped 404
    assert response.status_code == 301
    assert response["Location"] == "/static/gallery/favicon.svg"
    assert '<link rel="icon" type="image/svg+xml" href="/static/gallery/favicon.svg">' in \
        page.content.decode()
    from django.contrib.staticfiles import finders

    icon = finders.find("gallery/favicon.svg")
    assert icon is not None and open(icon).read().startswith("<svg")
