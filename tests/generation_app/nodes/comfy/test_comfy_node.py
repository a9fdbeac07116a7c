"""The comfy_workflow node end to end: RunContext in, StoredFile out, against the test peer."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from PIL import Image

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.comfy.node import PROMPT_ID_NAMESPACE, ComfyWorkflowNode, strip_png_text
from tests.peers.comfyui_server import ComfyTestServer, invert_graph

pytestmark = pytest.mark.timeout(60)


def workflow_row(server: ComfyTestServer, *, batch_size: int = 1) -> dict[str, Any]:
    graph = invert_graph(prefix="placeholder", color=0)
    graph["1"]["inputs"]["batch_size"] = batch_size
    return {
        "name": "invert-color",
        "server_url": server.url,
        "output_mime_type": "image/png",
        "data": {
            "workflow": graph,
            "inputs": {
                "1": {
                    "color": {"value": "color", "is_required": True},
                    "width": {"value": "size", "default": 32},
                    "height": {"value": "size", "default": 32},
                },
                "3": {"filename_prefix": {"value": "prompt", "is_required": True}},
            },
            "form": {
                "fields": [
                    {"id": "color", "name": "Color", "type": "color_picker"},
                    {"id": "size", "name": "Size", "type": "slider"},
                    {"id": "prompt", "name": "Prompt", "type": "prompt_editor"},
                ]
            },
            "output_node_id": "3",
        },
    }


def context(server: ComfyTestServer, **overrides: Any) -> RunContext:
    options: dict[str, Any] = {
        "user_id": "u1",
        "job_id": "job-1",
        "gid": 0,
        "step_id": 5,
        "node_name": "invert-color",
        "alias": None,
        "hash": "oo" + "a" * 49,
        "seed": 2160853444,
        "variables": {"animal": "fox"},
        "components": {},
        "workflow": workflow_row(server),
        "run_key": "job-1:0:5",
    }
    options.update(overrides)
    return RunContext(**options)


def test_the_node_stores_the_first_output_under_the_workflows_name(comfy: ComfyTestServer) -> None:
    fractions: list[float] = []
    ctx = context(comfy, report_progress=fractions.append)
    payload = {"color": "3368601", "size": "", "prompt": "$animal"}

    output = ComfyWorkflowNode().run(payload, ctx)

    assert output.mime_type == "image/png"
    assert output.src_file == "invert-color.png"
    assert output.src_files == ["invert-color.png"]
    [stored] = output.files
    assert (stored.filename, stored.mime_type) == ("invert-color.png", "image/png")
    # the prompt_editor field was rendered: `$animal` became the variable's value
    assert stored.content == strip_png_text((comfy.output_dir / "fox_00001_.png").read_bytes())
    image = Image.open(io.BytesIO(stored.content))
    assert (image.size, image.getpixel((0, 0))) == ((32, 32), (204, 153, 101))
    assert fractions[-1] == 1.0
    prompt_id = str(uuid.uuid5(PROMPT_ID_NAMESPACE, "job-1:0:5"))
    assert output.extra["comfy"]["prompt_id"] == prompt_id
    assert comfy.executions == {prompt_id: 1}


def test_stored_pngs_carry_no_text_chunks_and_the_same_pixels(comfy: ComfyTestServer) -> None:
    # the peer's SaveImage writes `prompt` (the whole API graph, staff-only, with any API key
    # filled in) as a PNG text chunk, as ComfyUI does
    output = ComfyWorkflowNode().run({"color": "3368601", "prompt": "secret"}, context(comfy))

    served = (comfy.output_dir / "secret_00001_.png").read_bytes()
    original = Image.open(io.BytesIO(served))
    assert set(original.text) == {"prompt"} and '"EmptyImage"' in original.text["prompt"]
    [stored] = output.files
    image = Image.open(io.BytesIO(stored.content))
    assert image.text == {}
    assert b"EmptyImage" not in stored.content
    assert list(image.getdata()) == list(original.getdata())
    # a chunk-level rewrite: the image data chunks are byte for byte the server's
    assert served.find(b"IDAT") > 0 and stored.content.endswith(served[served.find(b"IDAT") - 4:])


def test_every_image_of_a_batch_is_stored_in_order(comfy: ComfyTestServer) -> None:
    ctx = context(comfy, workflow=workflow_row(comfy, batch_size=3))

    output = ComfyWorkflowNode().run({"color": "#336699", "size": 8, "prompt": "batch"}, ctx)

    names = ["invert-color.png", "invert-color_1.png", "invert-color_2.png"]
    assert [f.filename for f in output.files] == names
    assert output.src_file == "invert-color.png"
    assert output.src_files == names
    assert output.mime_type == "image/png"
    for i, stored in enumerate(output.files):
        served = (comfy.output_dir / f"batch_{i + 1:05}_.png").read_bytes()
        assert stored.content == strip_png_text(served)
        assert stored.mime_type == "image/png"
        assert Image.open(io.BytesIO(stored.content)).getpixel((0, 0)) == (204, 153, 101)
    assert output.extra["comfy"]["filename"] == "batch_00001_.png"


def test_a_hex_color_sets_a_number_input(comfy: ComfyTestServer) -> None:
    output = ComfyWorkflowNode().run({"color": "#f80", "size": 4, "prompt": "hex"}, context(comfy))

    [post] = comfy.prompt_posts
    assert post["prompt"]["1"]["inputs"]["color"] == 0xFF8800 == 16746496
    [stored] = output.files
    # inverted 0xff8800; 255 - 0x88 is 119, but images are floats truncated to 8 bits, as in
    # ComfyUI's SaveImage
    assert Image.open(io.BytesIO(stored.content)).getpixel((0, 0)) == (0, 118, 255)


def test_a_color_that_is_no_color_fails_before_anything_is_sent(comfy: ComfyTestServer) -> None:
    with pytest.raises(NodeError) as caught:
        ComfyWorkflowNode().run({"color": "orange", "prompt": "p"}, context(comfy))

    assert caught.value.message == "Field Color: expected a color like #ff8800, got 'orange'"
    assert caught.value.retryable is False
    assert comfy.requests == []


def test_a_redelivered_node_run_does_not_run_the_prompt_twice(comfy: ComfyTestServer) -> None:
    payload = {"color": 1, "prompt": "again"}
    first = ComfyWorkflowNode().run(payload, context(comfy))

    second = ComfyWorkflowNode().run(payload, context(comfy, attempt=2))

    assert second.files == first.files
    assert len(comfy.prompt_posts) == 1
    assert sum(comfy.executions.values()) == 1


def test_missing_required_fields_fail_before_anything_is_sent(comfy: ComfyTestServer) -> None:
    with pytest.raises(NodeError) as caught:
        ComfyWorkflowNode().run({"size": 16}, context(comfy))

    assert caught.value.message == "Missing required fields: Color, Prompt"
    assert caught.value.retryable is False
    assert comfy.requests == []


def test_a_workflow_without_a_server_is_a_permanent_error(comfy: ComfyTestServer) -> None:
    ctx = context(comfy, workflow={**workflow_row(comfy), "server_url": None})

    with pytest.raises(NodeError, match="Workflow invert-color has no ComfyUI server") as caught:
        ComfyWorkflowNode().run({"color": 1, "prompt": "p"}, ctx)

    assert caught.value.retryable is False


def test_the_registry_declares_the_comfy_node_type_and_its_queue() -> None:
    from generation_app.nodes.registry import node_class, queue_for

    workflow = {"type": "comfy_workflow", "data": {}}
    assert node_class("my-comfy", "comfy_workflow") is ComfyWorkflowNode
    assert ComfyWorkflowNode.name == "comfy_workflow"
    assert queue_for("my-comfy", {}, workflow) == "io"
