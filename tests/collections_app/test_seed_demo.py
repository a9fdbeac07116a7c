"""`manage.py seed_demo`: the demo collections, seeded once, kept when edited, valid to generate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import imageio_ffmpeg
import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.core.management.base import OutputWrapper
from PIL import Image

from collections_app import services, services_demo
from collections_app.demo import Demo, demos
from collections_app.models import (
    Collection,
    CollectionHistory,
    CollectionPreview,
    Component,
    FlatFile,
)
from generation_app.engine.prng import generation_seed
from generation_app.engine.variables import pick_variables
from generation_app.nodes.base import RunContext
from generation_app.nodes.browser import renderer
from generation_app.nodes.browser.js_node import JsNode
from generation_app.nodes.browser.p5_node import P5Node
from generation_app.nodes.browser.p52vid_node import P52VidNode
from generation_app.services.requests import job_input_prepare
from jobs_app.models import Job
from tests.workers import wait_for

TITLES = ["Palette Grid", "Flow Field", "Truchet Tiles", "Orbits"]


def _seed(username: str) -> list[dict[str, str]]:
    out = io.StringIO()
    call_command("seed_demo", "--json", "--username", username, stdout=OutputWrapper(out))
    return json.loads(out.getvalue().strip().splitlines()[-1])["collections"]


def _snapshot(user) -> list[tuple]:
    return [(c.id, c.title, c.data, c.status, c.updated_at)
            for c in Collection.objects.filter(project__user=user).order_by("id")]


def test_seeding_twice_creates_each_demo_collection_once(alice):
    first = _seed("alice")
    before = _snapshot(alice)
    history = CollectionHistory.objects.filter(collection__project__user=alice).count()
    components = Component.objects.filter(collection__project__user=alice).count()

    second = _seed("alice")

    assert [r["title"] for r in first] == TITLES
    assert [r["outcome"] for r in first] == ["created"] * 4
    assert [r["outcome"] for r in second] == ["unchanged"] * 4
    assert [r["id"] for r in second] == [r["id"] for r in first]
    assert _snapshot(alice) == before
    assert len(before) == 4
    assert CollectionHistory.objects.filter(collection__project__user=alice).count() == history
    assert Component.objects.filter(collection__project__user=alice).count() == components == 4
    for row in first:
        collection = Collection.objects.get(pk=row["id"])
        assert collection.status == Collection.Status.PUBLISHED
        assert collection.publish_date is not None
        preview = CollectionPreview.objects.get(collection=collection)
        assert (preview.enabled, preview.access_level, preview.is_remixable) == (
            True, CollectionPreview.AccessLevel.PUBLIC, True)
        assert preview.versions.get(is_latest=True).data == collection.data


def test_user_edits_survive_a_reseed(alice):
    [grid, *_] = _seed("alice")
    collection = Collection.objects.get(pk=grid["id"])
    edited = json.loads(json.dumps(collection.data))
    edited["variables"][1]["value"]["values"] = ["circle"]
    services.collection_update(user=alice, project_id=collection.project_id,
                               collection_id=collection.id, data=edited,
                               fields={"title": "My grid"})
    collection.refresh_from_db()
    kept = (collection.title, collection.data, collection.updated_at)

    again = _seed("alice")

    assert [r["outcome"] for r in again] == ["kept_edits", "unchanged", "unchanged", "unchanged"]
    assert again[0] == {"key": "palette-grid", "id": grid["id"], "title": "My grid",
                        "outcome": "kept_edits"}
    collection.refresh_from_db()
    assert (collection.title, collection.data, collection.updated_at) == kept
    assert collection.data["variables"][1]["value"]["values"] == ["circle"]
    assert Collection.objects.filter(project__user=alice).count() == 4


def test_an_unedited_demo_follows_a_new_definition_and_a_deleted_one_comes_back(
        alice, monkeypatch):
    first = _seed("alice")
    services.collection_delete(user=alice, project_id=Collection.objects.get(
        pk=first[1]["id"]).project_id, collection_id=first[1]["id"])
    current = demos()
    grid = current[0]
    data = json.loads(json.dumps(grid.data))
    data["variables"][1]["value"]["values"].append("hexagon")
    changed = [Demo(grid.key, grid.title, grid.description, data), *current[1:]]
    monkeypatch.setattr(services_demo, "demos", lambda: changed)

    again = _seed("alice")
    third = _seed("alice")

    assert [r["outcome"] for r in again] == ["updated", "created", "unchanged", "unchanged"]
    assert [r["outcome"] for r in third] == ["unchanged"] * 4
    assert again[0]["id"] == first[0]["id"]
    assert again[1]["id"] != first[1]["id"]
    collection = Collection.objects.get(pk=first[0]["id"])
    assert collection.data["variables"][1]["value"]["values"] == [
        "circle", "square", "triangle", "hexagon"]
    preview = CollectionPreview.objects.get(collection=collection)
    assert preview.versions.get(is_latest=True).data == collection.data
    assert Collection.objects.filter(project__user=alice).count() == 4


def test_every_demo_collection_passes_the_checks_of_a_generate_request(alice):
    seeded = _seed("alice")

    for row in seeded:
        collection = Collection.objects.get(pk=row["id"])
        job_input = job_input_prepare(user=alice, data=collection.data, count=4)

        assert len(job_input.hashes) == 4
        [step] = job_input.plan.steps
        assert step["id"] == collection.data["steps"][0]["id"]
        assert job_input.quote["generations"] == 4
        assert job_input.quote["total_cost"] == 4.0
    names = [Collection.objects.get(pk=r["id"]).data["steps"][0]["nodeName"] for r in seeded]
    assert names == ["p5", "p5", "js", "p52vid"]


def test_seeding_without_the_user_says_to_bootstrap_first(db):
    with pytest.raises(CommandError, match="No user 'demo': run `manage.py bootstrap_demo` first"):
        call_command("seed_demo")

    assert not Collection.objects.exists()


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(240)
def test_a_palette_grid_generation_stores_a_512px_png(api_for, alice, worker):
    grid = _seed("alice")[0]

    response = api_for(alice).post(f"/api/collections/{grid['id']}/generations", {"count": 1},
                                   format="json")

    assert response.status_code == 202, response.json()
    job_id = response.json()["data"]["jobId"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 120)
    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    f = FlatFile.objects.get(job_id=job.id)
    assert f.storage_key.endswith("/p5.png")
    assert f.mime_type == "image/png"
    image = Image.open(io.BytesIO(default_storage.open(f.storage_key).read())).convert("RGB")
    assert image.size == (512, 512)
    assert len(set(image.getdata())) >= 3  # a background and shapes in at least two colours


@pytest.fixture
def chromium():
    yield
    # Playwright's sync API keeps an asyncio loop on this thread while a browser is open, which
    # Django's async-safety check would trip over in the database tests that run after this one
    renderer.shutdown()


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_the_other_demo_sketches_render_in_process(chromium, tmp_path: Path):
    h = "oo" + "b" * 49
    outputs = {}
    for demo in demos()[1:]:
        [step] = demo.data["steps"]
        ctx = RunContext(user_id="u", job_id="j", gid=0, step_id=1, node_name=step["nodeName"],
                         alias=step["alias"], hash=h, seed=generation_seed(h),
                         variables=pick_variables(demo.data["variables"], h), components={})
        node = {"p5": P5Node, "js": JsNode, "p52vid": P52VidNode}[step["nodeName"]]()
        outputs[demo.key] = {f.filename: f.content for f in node.run(step["nodePayload"], ctx).files}

    assert {k: sorted(v) for k, v in outputs.items()} == {
        "flow-field": ["p5.png"], "truchet-page": ["js.html", "js.png"], "orbits": ["p52vid.mp4"]}
    field = Image.open(io.BytesIO(outputs["flow-field"]["p5.png"])).convert("RGB")
    assert field.size == (512, 512)
    assert len(set(field.getdata())) > 100  # strands blended over the paper, not a blank canvas
    page = Image.open(io.BytesIO(outputs["truchet-page"]["js.png"])).convert("RGB")
    assert page.size == (1024, 1024)
    assert len(set(page.getdata())) >= 3
    assert b'id="tiles"' in outputs["truchet-page"]["js.html"]
    video = tmp_path / "orbits.mp4"
    video.write_bytes(outputs["orbits"]["p52vid.mp4"])
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    assert frames == 60
    assert seconds == pytest.approx(2.0, abs=0.05)
