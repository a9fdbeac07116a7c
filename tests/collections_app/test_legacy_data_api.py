"""Real data from the existing platform through the API: seeds over their sliders, the Studio's
untitled-project, convert and linter calls, duplicate hashes, and traits in the outputs.

In-process (no worker): generations run with `node_run_execute`, as tests/generation_app/
test_runner.py does, so the outputs, webhook rows and files are the engine's own.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from collections_app.models import Collection, FlatFile, Project
from emprops.accounts.models import CreditsBalance, CreditsHistory, CreditsHold
from generation_app.engine.prng import HashRandom
from generation_app.models import Generation, NodeRun, WebhookDelivery, WebhookEndpoint
from generation_app.services.running import node_run_execute
from jobs_app.models import Job
from workflows_app.models import Server, Workflow

pytestmark = pytest.mark.django_db

GOLDEN = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"
OTHER = "oo" + "b" * 49  # picks Peter, Other (GOLDEN: Peter, Engineer)
SEED_OVER_SLIDER = "2145214451"  # as the component library's own test.json payloads carry it


def _comfy_workflow(name: str, fields: list[dict[str, Any]]) -> Workflow:
    server, _ = Server.objects.get_or_create(name="local", url="http://127.0.0.1:9")
    return Workflow.objects.create(name=name, type="comfy_workflow", output_mime_type="image/png",
                                   server=server, data={"workflow": {}, "inputs": {},
                                                        "form": {"fields": fields}})


SD_FIELDS = [
    {"id": "prompt", "name": "Prompt", "type": "prompt_editor", "is_required": True},
    {"id": "negative_prompt", "name": "Negative", "type": "prompt_editor"},
    {"id": "seed", "name": "Seed", "type": "slider", "constraints": {"min": 0, "max": 999999}},
    {"id": "steps", "name": "Steps", "type": "slider", "constraints": {"min": 1, "max": 50}},
    {"id": "width", "name": "Width", "type": "slider", "constraints": {"min": 64, "max": 2048}},
]


def _create(client: Any, data: dict[str, Any], title: str = "Legacy") -> Any:
    return client.post("/api/projects/collections", {"title": title, "data": data},
                       format="json")


def _balance(user: Any) -> Decimal:
    return CreditsBalance.objects.get(user=user, credit_type="permanent").balance


# ---- seeds ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [SEED_OVER_SLIDER, 4294967295, 0])
def test_a_seed_over_its_sliders_max_is_accepted_and_kept_as_a_number(api_for, alice, seed):
    _comfy_workflow("txt2img", SD_FIELDS)
    data = {"steps": [{"id": 1, "nodeName": "txt2img",
                       "nodePayload": {"prompt": "a fox", "seed": seed, "steps": "20"}}]}

    response = _create(api_for(alice), data)

    assert response.status_code == 201, response.json()
    payload = response.json()["data"]["data"]["steps"][0]["nodePayload"]
    assert payload["seed"] == int(seed)
    assert payload["steps"] == 20


@pytest.mark.parametrize("seed", [4294967296, -1, "abc"])
def test_a_seed_outside_unsigned_32_bits_is_a_400_that_says_so(api_for, alice, seed):
    _comfy_workflow("txt2img", SD_FIELDS)
    data = {"steps": [{"id": 1, "nodeName": "txt2img",
                       "nodePayload": {"prompt": "a fox", "seed": seed}}]}

    response = _create(api_for(alice), data)

    assert response.status_code == 400
    message = f"A seed must be a whole number from 0 to 4294967295, got {seed!r}."
    assert response.json()["details"] == {"steps[0].nodePayload.seed": [message]}
    assert Collection.objects.count() == 0


def test_a_slider_that_is_not_a_seed_keeps_its_max(api_for, alice):
    _comfy_workflow("txt2img", SD_FIELDS)
    data = {"steps": [{"id": 1, "nodeName": "txt2img", "nodePayload": {
        "prompt": "a fox", "seed": SEED_OVER_SLIDER, "steps": 51}}]}

    response = _create(api_for(alice), data)

    assert response.status_code == 400
    assert response.json()["details"] == {
        "steps[0].nodePayload.steps": ["Ensure this value is less than or equal to 50."]}
    assert Collection.objects.count() == 0


# ---- POST /api/projects/untitled -----------------------------------------------------------------

def test_an_untitled_project_is_new_project_of_the_caller_with_200(api_for, alice):
    response = api_for(alice).post("/api/projects/untitled", {"version": "v2"}, format="json")

    assert response.status_code == 200
    body = response.json()
    project = Project.objects.get(user=alice)
    assert body == {"data": {"id": str(project.id), "user_id": str(alice.id),
                             "name": "New Project", "version": "v2", "is_default": False,
                             "created_at": body["data"]["created_at"]}, "error": None}


def test_an_untitled_project_needs_credentials_and_a_known_version(api_for, alice):
    anonymous = api_for(None).post("/api/projects/untitled", {"version": "v2"}, format="json")
    bad = api_for(alice).post("/api/projects/untitled", {"version": "v9"}, format="json")

    assert anonymous.status_code == 401
    assert bad.status_code == 400
    assert list(bad.json()["details"]) == ["version"]
    assert not Project.objects.exists()


# ---- POST /api/instruction-sets/convert ----------------------------------------------------------

V1 = {
    "hashes": [GOLDEN], "generations": 1, "use_custom_hashes": True,
    "variables": [{"name": "animal", "type": "pick", "valueType": "strings",
                   "value": {"values": ["cat", "owl"], "weights": [1, 1],
                             "display_names": ["Cat", "Owl"]},
                   "is_feature": True, "feature_name": "Animal", "use_display_name": True}],
    "stable_diffusion_input": {
        "prompt": "a {{animal}} in the snow", "negative_prompt": "", "sampler_name": "Euler a",
        "steps": 20, "cfg_scale": 7, "width": 512, "height": 512, "seed": SEED_OVER_SLIDER,
        "override_settings": {"enable_pnginfo": False,
                              "sd_model_checkpoint": "v1-5-pruned.ckpt [e1441589a6]"},
        "img2img_enabled": False},
    "p5_input": {"enabled": False, "code": ""},
    "upscaler_input": {"enabled": True, "upscaler_1": "ESRGAN_4x", "upscaling_resize": 2},
}


def test_a_converted_v1_set_creates_a_collection_with_the_installed_workflows(api_for, alice):
    _comfy_workflow("txt2img-comfy", SD_FIELDS)
    _comfy_workflow("upscaler-comfy", [{"id": "image", "name": "Image", "type": "image_loader"}])
    client = api_for(alice)

    response = client.post("/api/instruction-sets/convert", V1, format="json")

    assert response.status_code == 200, response.json()
    v2 = response.json()["data"]
    assert [(s["id"], s["nodeName"]) for s in v2["steps"]] == [(1, "txt2img-comfy"),
                                                                (2, "upscaler-comfy")]
    assert v2["steps"][0]["nodePayload"]["seed"] == 2145214451  # the form made it a number
    assert v2["steps"][1]["nodePayload"]["model"] == "4x-ESRGAN.pth"
    assert v2["variables"][0]["value_type"] == "strings"
    assert v2["variables"][0]["is_feature"] is True
    created = _create(client, v2)
    assert created.status_code == 201, created.json()
    steps = created.json()["data"]["data"]["steps"]
    assert [s["fromId"] for s in steps] == [1, 2]
    assert steps[1]["nodePayload"]["image"] == {"$ref": steps[0]["id"], "path": ".src"}
    assert not Project.objects.exclude(user=alice).exists()


def test_conversion_errors_are_400_naming_the_part(api_for, alice):
    client = api_for(alice)
    unknown = {**V1, "upscaler_input": {"enabled": True, "upscaler_1": "LDSR"}}

    not_object = client.post("/api/instruction-sets/convert", [1, 2], format="json")
    bad_upscaler = client.post("/api/instruction-sets/convert", unknown, format="json")
    anonymous = api_for(None).post("/api/instruction-sets/convert", V1, format="json")

    assert not_object.status_code == 400
    assert not_object.json()["error"] == "An instruction set must be a JSON object."
    assert bad_upscaler.status_code == 400
    assert list(bad_upscaler.json()["details"]) == ["upscaler_input.upscaler_1"]
    assert bad_upscaler.json()["error"].startswith("Upscaler model not found: 'LDSR'")
    assert anonymous.status_code == 401


def test_a_converted_set_the_installed_form_refuses_is_400_with_the_field(api_for, alice):
    _comfy_workflow("txt2img-comfy", SD_FIELDS)
    wide = {**V1, "stable_diffusion_input": {**V1["stable_diffusion_input"], "width": 4096}}

    response = api_for(alice).post("/api/instruction-sets/convert", wide, format="json")

    assert response.status_code == 400
    assert response.json()["details"] == {
        "steps[0].nodePayload.width": ["Ensure this value is less than or equal to 2048."]}


# ---- POST /api/instruction-sets/linter -----------------------------------------------------------

def test_the_linter_answers_in_the_existing_shape(api_for, alice):
    body = {**V1, "variables": [*V1["variables"], {
        "name": "box", "type": "pick", "value_type": "images",
        "value": {"values": ["https://cdn.example/a.png", None]}}],
        "stable_diffusion_input": {**V1["stable_diffusion_input"],
                                   "override_settings": {"enable_pnginfo": True}}}

    response = api_for(alice).post("/api/instruction-sets/linter", body, format="json")
    warnings = api_for(alice).post("/api/instruction-sets/linter?level=warn", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"data": {"status": "failed", "error": None, "rules": [
        {"id": "unused_images_var", "messages": ["Images variable {{box}} is not being used."],
         "level": "warn"},
        {"id": "empty_var_value", "messages": ["Variable {{box}} has an empty value."],
         "level": "error"},
        {"id": "png_info_enabled",
         "messages": ["PNG info is enabled and will leak your sketchbook settings."],
         "level": "warn"}]}, "error": None}
    assert warnings.json()["data"]["status"] == "failed"
    assert [r["id"] for r in warnings.json()["data"]["rules"]] == ["unused_images_var",
                                                                     "png_info_enabled"]


def test_the_linter_checks_v2_and_refuses_other_versions(api_for, alice):
    client = api_for(alice)
    v2 = {"version": "v2", "steps": [{"id": 1, "nodeName": "prompt",
                                      "nodePayload": {"prompt": "a {{animal}}"}}],
          "variables": [{"name": "animal", "type": "pick", "value": {"values": ["owl"]}}],
          "generations": {"hashes": ["a", "a"], "generations": 2, "use_custom_hashes": True}}

    report = client.post("/api/instruction-sets/linter", v2, format="json")
    v3 = client.post("/api/instruction-sets/linter", {"version": "v3"}, format="json")

    assert report.status_code == 200
    assert [(r["id"], r["level"]) for r in report.json()["data"]["rules"]] == [
        ("unused_var", "warn"), ("unconverted_var_placeholder", "warn"),
        ("duplicate_hashes", "error")]
    assert report.json()["data"]["status"] == "failed"
    assert v3.status_code == 400
    assert v3.json()["error"] == "Unsupported version: v3"


# ---- duplicate hashes: refused before anything is held or created --------------------------------

PROMPT_ONLY = {"steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a fox"}}]}


def test_generate_with_the_same_hash_twice_is_400_and_holds_nothing(api_for, alice):
    client = api_for(alice)
    collection = _create(client, PROMPT_ONLY).json()["data"]
    balance = _balance(alice)

    response = client.post(f"/api/collections/{collection['id']}/generations",
                           {"hashes": ["a", "b", "a"]}, format="json")

    assert response.status_code == 400
    assert response.json()["details"] == {"hashes": [
        "Duplicate hashes: 'a' (2 times). Each generation needs its own hash: a repeated hash "
        "makes the same output again and is charged again."]}
    assert response.json()["error"].startswith("Duplicate hashes: 'a' (2 times).")
    assert not Job.objects.exists()
    assert not CreditsHold.objects.exists()
    assert _balance(alice) == balance


def test_a_collection_storing_a_hash_twice_is_kept_but_refused_at_generate(api_for, alice):
    client = api_for(alice)
    data = {**PROMPT_ONLY, "generations": {"hashes": ["a", "a"], "use_custom_hashes": True}}
    created = _create(client, data)
    assert created.status_code == 201  # real collections hold such data: a draft stays editable

    response = client.post(f"/api/collections/{created.json()['data']['id']}/generations", {},
                           format="json")

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["generations.hashes"]
    assert "'a' (2 times)" in response.json()["error"]
    assert not Job.objects.exists()
    assert not CreditsHold.objects.exists()


def test_the_unified_api_refuses_a_repeated_hash_and_creates_nothing(api_for, alice):
    response = api_for(alice).post("/api/collections/generate", {
        "workflow_name": "prompt", "inputs": {"prompt": "a fox"}, "hashes": ["x", "x"]},
        format="json")

    assert response.status_code == 400
    assert list(response.json()["details"]) == ["hashes"]
    assert not Collection.objects.exists()
    assert not Job.objects.exists()
    assert not CreditsHold.objects.exists()


# ---- traits: features and feature_labels of each generation --------------------------------------

def _doc(*children: Any) -> str:
    return json.dumps([{"type": "paragraph", "children": list(children)}])


TRAITS_DATA = {
    "steps": [{"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": _doc(
        {"text": "a "}, {"type": "variable", "variable": {"name": "who"}},
        {"text": " who is an "}, {"type": "variable", "variable": {"name": "job"}})}}],
    "variables": [
        {"name": "who", "type": "weighted_pick", "value_type": "strings", "is_feature": True,
         "value": {"values": ["John", "Mary", "Peter"], "weights": [1, 1, 98],
                   "display_names": ["J.", "M.", "Pete"]}},
        {"name": "job", "type": "pick", "value_type": "strings", "is_feature": True,
         "value": {"values": ["Engineer", "Other"]}},
        {"name": "hidden", "type": "pick", "value_type": "strings", "is_feature": False,
         "value": {"values": ["x"]}},
    ],
}


def _picks(h: str) -> dict[str, str]:
    rng = HashRandom(h)
    return {"who": rng.pseudorandom_weighted_pick(["John", "Mary", "Peter"], [1, 1, 98]),
            "job": rng.pseudorandom_pick(["Engineer", "Other"])}


def _run_all(job_id: Any) -> Job:
    for run in NodeRun.objects.filter(job_id=job_id, status=NodeRun.Status.QUEUED):
        node_run_execute(run_id=run.pk, worker="test")
    return Job.objects.get(pk=job_id)


@pytest.fixture
def generated(api_for: Any, alice: Any) -> tuple[Any, dict[str, Any], Job]:
    """Alice's traits collection generated for GOLDEN and OTHER, in-process."""
    WebhookEndpoint.objects.create(user=alice, url="https://example.com/hook",
                                   events=["generation_completed"])
    client = api_for(alice)
    collection = _create(client, TRAITS_DATA, title="People").json()["data"]
    response = client.post(f"/api/collections/{collection['id']}/generations",
                           {"hashes": [GOLDEN, OTHER]}, format="json")
    assert response.status_code == 202, response.json()
    job = _run_all(response.json()["data"]["jobId"])
    assert job.status == Job.Status.COMPLETED, job.error_message
    return client, collection, job


def test_each_output_carries_its_traits_and_the_webhook_sends_them(generated):
    _, _, job = generated
    golden, other = _picks(GOLDEN), _picks(OTHER)
    labels = {"John": "J.", "Mary": "M.", "Peter": "Pete"}

    outputs = job.data["outputs"]

    assert [o["generation"] for o in outputs] == [
        {"id": 0, "hash": GOLDEN, "features": golden,
         "feature_labels": {"who": labels[golden["who"]]}},
        {"id": 1, "hash": OTHER, "features": other,
         "feature_labels": {"who": labels[other["who"]]}}]
    assert (golden, other) == ({"who": "Peter", "job": "Engineer"},  # SPEC's golden picks
                               {"who": "Peter", "job": "Other"})
    assert outputs[0]["steps"][0]["nodeResponse"]["data"] == "a Peter who is an Engineer"
    sent = WebhookDelivery.objects.filter(job=job, event="generation_completed")
    by_gid = {d.payload["data"]["generation"]["id"]: d.payload["data"] for d in sent}
    assert sorted(by_gid) == [0, 1]
    assert by_gid[0]["generation"]["features"] == golden
    assert by_gid[0]["output"]["generation"]["feature_labels"] == {"who": "Pete"}
    assert list(Generation.objects.filter(job=job).order_by("gid").values_list(
        "outputs__generation__features", flat=True)) == [golden, other]


def test_a_collections_outputs_filter_by_trait(generated, alice):
    client, collection, _ = generated
    golden, other = _picks(GOLDEN), _picks(OTHER)
    url = f"/api/collections/{collection['id']}/files"

    everything = client.get(url).json()["data"]
    by_golden = client.get(url, {"feature.who": golden["who"], "feature.job": golden["job"]})
    nothing = client.get(url, {"feature.who": "Nobody"}).json()["data"]

    assert everything["total"] == 2
    assert sorted(json.dumps(i["features"], sort_keys=True) for i in everything["items"]) == \
        sorted(json.dumps(f, sort_keys=True) for f in (golden, other))
    assert by_golden.status_code == 200
    items = by_golden.json()["data"]["items"]
    assert [i["features"] for i in items] == [golden]
    assert items[0]["gen_in_data"]["generations"]["hashes"] == [GOLDEN]
    by_job = client.get(url, {"feature.job": other["job"]}).json()["data"]["items"]
    assert [i["features"] for i in by_job] == [other]
    assert nothing == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert FlatFile.objects.filter(user=alice).count() == 2


def test_the_trait_filter_is_validated_and_others_collections_are_404(generated, api_for, bob):
    client, collection, _ = generated
    url = f"/api/collections/{collection['id']}/files"

    empty_name = client.get(url + "?feature.=x")
    twice = client.get(url + "?feature.who=a&feature.who=b")
    bobs = api_for(bob).get(url, {"feature.who": "Peter"})

    assert empty_name.status_code == 400
    assert list(empty_name.json()["details"]) == ["feature."]
    assert twice.status_code == 400
    assert bobs.status_code == 404
    assert bobs.json()["data"] is None


def test_the_admin_job_page_shows_traits_and_the_collection_admin_links_to_it(generated, client,
                                                                              staff):
    _, collection, job = generated
    client.force_login(staff)

    job_page = client.get(f"/admin/jobs_app/job/{job.id}/change/").content.decode()
    collection_page = client.get(
        f"/admin/collections_app/collection/{collection['id']}/change/").content.decode()

    assert job_page.count('<td class="job-traits">') == 2
    assert job_page.count("<div><code>who</code>: Peter</div>") == 2
    assert "<div><code>job</code>: Engineer</div>" in job_page
    assert "<div><code>job</code>: Other</div>" in job_page
    assert '<code>who</code> shown as &ldquo;Pete&rdquo;' in job_page
    step_id = collection["data"]["steps"][0]["id"]
    assert f"<td>{step_id}</td><td>prompt</td>" in collection_page
    assert f'<a href="/admin/jobs_app/job/{job.id}/change/">{job.id}</a>' in collection_page
    traits = re.findall(r"<td>((?:\w+: \w+(?:, )?)+)</td>", collection_page)
    assert sorted(traits) == ["job: Engineer, who: Peter", "job: Other, who: Peter"]
    assert CreditsHistory.objects.filter(job_id=job.id, flow="out").count() == 2


ODD_BODIES = [
    [], {}, "x", 1, None, {"variables": "x"}, {"variables": [1, {"name": {}}, {"name": "a"}]},
    {"stable_diffusion_input": []}, {"version": ["v1"]}, {"generations": "x", "hashes": {}},
    {"stable_diffusion_input": {"img2img_enabled": True, "img2img_source": "variable",
                                "image_variable": {}, "seed": [1], "prompt": 7}},
    {"upscaler_input": {"enabled": 1, "upscaler_1": 5}}, {"p5_input": "on"},
    {"steps": "x"},
    {"version": "v2", "steps": [{"nodePayload": "x"}, 1, {"nodePayload": {"a": {"$ref": "x"}}}],
     "variables": [{"name": "a"}, {"name": ["b"]}], "generations": []},
]


@pytest.mark.parametrize("path", ["convert", "linter"])
def test_odd_bodies_are_answered_in_the_envelope_never_with_a_500(api_for, alice, path):
    client = api_for(alice)

    statuses = set()
    for body in ODD_BODIES:
        response = client.post(f"/api/instruction-sets/{path}", json.dumps(body),
                               content_type="application/json")
        statuses.add(response.status_code)
        assert response.status_code in (200, 400), (body, response.content[:300])
        assert set(response.json()) >= {"data", "error"}

    assert statuses == {200, 400}
