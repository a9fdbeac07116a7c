"""The ComfyUI client against the protocol-faithful test peer on loopback."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from generation_app.nodes.base import NodeError
from generation_app.nodes.comfy.client import ComfyClient, OutputRef, parse_binary_frame
from tests.peers.comfyui_server import ComfyTestServer, invert_graph

pytestmark = pytest.mark.timeout(60)


def new_id() -> str:
    return str(uuid.uuid4())


def run(
    server: ComfyTestServer, graph: dict[str, Any], prompt_id: str, **kwargs: Any
) -> list[OutputRef]:
    options = kwargs.pop("client", {})
    with ComfyClient(server.url, **options) as client:
        return client.run(graph, prompt_id=prompt_id, **kwargs)


def test_success_downloads_the_exact_png_the_server_wrote(comfy: ComfyTestServer) -> None:
    prompt_id = new_id()
    fractions: list[float] = []

    with ComfyClient(comfy.url) as client:
        refs = client.run(invert_graph(), prompt_id=prompt_id, on_progress=fractions.append)
        output = client.fetch(refs[0])

    assert refs == [OutputRef("3", "proto_test_00001_.png", "", "output")]
    assert output.content == (comfy.output_dir / "proto_test_00001_.png").read_bytes()
    assert output.mime_type == "image/png"
    image = Image.open(io.BytesIO(output.content))
    assert (image.size, image.mode) == ((64, 64), "RGB")
    assert image.getpixel((0, 0)) == (204, 153, 101)  # 0x336699 inverted in float32, truncated
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert comfy.executions[prompt_id] == 1
    posted = comfy.prompt_posts[0]
    assert posted["prompt_id"] == prompt_id and posted["client_id"] in comfy.ws_connections


def test_progress_fractions_follow_a_long_node(comfy: ComfyTestServer) -> None:
    fractions: list[float] = []

    run(comfy, invert_graph(slow=0.5), new_id(), on_progress=fractions.append)

    assert fractions == sorted(fractions)
    assert len([f for f in fractions if 0 < f < 1]) >= 5  # per-step progress of TestSlow
    assert fractions[-1] == 1.0


def test_redelivery_after_the_run_finished_collects_without_running_again(
    comfy: ComfyTestServer,
) -> None:
    prompt_id = new_id()
    first = run(comfy, invert_graph(), prompt_id)

    second = run(comfy, invert_graph(), prompt_id)

    assert second == first
    assert comfy.executions[prompt_id] == 1
    assert len(comfy.prompt_posts) == 1
    assert sorted(p.name for p in comfy.output_dir.iterdir()) == ["proto_test_00001_.png"]


def test_redelivery_while_the_prompt_runs_attaches_to_it(comfy: ComfyTestServer) -> None:
    prompt_id = new_id()
    results: list[list[OutputRef]] = []
    first = threading.Thread(
        target=lambda: results.append(run(comfy, invert_graph(slow=1.0), prompt_id))
    )
    first.start()
    comfy.wait_for(lambda: comfy.running_prompt_id == prompt_id)

    fractions: list[float] = []
    second = run(comfy, invert_graph(slow=1.0), prompt_id, on_progress=fractions.append)
    first.join(10)

    assert results == [second]
    assert second[0].filename == "proto_test_00001_.png"
    assert comfy.executions[prompt_id] == 1
    assert len(comfy.prompt_posts) == 1
    assert fractions == [1.0]  # no events reach a socket that does not own the prompt


def test_redelivery_of_a_failed_run_reports_the_same_error_without_rerunning(
    comfy: ComfyTestServer,
) -> None:
    graph = invert_graph()
    graph["5"] = {"class_type": "TestFail", "inputs": {"image": ["2", 0], "message": "boom"}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    prompt_id = new_id()
    with pytest.raises(NodeError) as first:
        run(comfy, graph, prompt_id)

    with pytest.raises(NodeError) as second:
        run(comfy, graph, prompt_id)

    assert second.value.message == first.value.message
    assert comfy.executions[prompt_id] == 1


def test_partial_node_errors_fail_permanently_with_comfyuis_messages(
    comfy: ComfyTestServer,
) -> None:
    graph = invert_graph()
    graph["4"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}}  # no filename_prefix
    prompt_id = new_id()

    with pytest.raises(NodeError) as caught:
        run(comfy, graph, prompt_id)

    assert caught.value.retryable is False
    assert caught.value.failure_type == "VALIDATION_ERROR"
    assert caught.value.message == (
        "ComfyUI rejected the workflow: node 4 (SaveImage): Required input is missing: "
        "filename_prefix"
    )
    assert {"delete": [prompt_id]} in comfy.queue_requests  # the valid half is not left to run
    assert comfy.interrupt_requests == [{"prompt_id": prompt_id}]


def test_a_400_validation_error_fails_permanently_with_every_node_error(
    comfy: ComfyTestServer,
) -> None:
    graph = invert_graph()
    del graph["1"]["inputs"]["width"]
    graph["1"]["inputs"]["height"] = "abc"

    with pytest.raises(NodeError) as caught:
        run(comfy, graph, new_id())

    assert caught.value.retryable is False
    assert caught.value.message == (
        "ComfyUI rejected the workflow: Prompt outputs failed validation; "
        "node 1 (EmptyImage): Required input is missing: width; "
        "node 1 (EmptyImage): Failed to convert an input value to a INT value: "
        "height, abc, invalid literal for int() with base 10: 'abc'"
    )
    assert comfy.executions.total() == 0


def test_an_unknown_node_class_fails_permanently(comfy: ComfyTestServer) -> None:
    graph = invert_graph()
    graph["2"]["class_type"] = "NoSuchNode"

    with pytest.raises(NodeError) as caught:
        run(comfy, graph, new_id())

    assert caught.value.retryable is False
    assert caught.value.message == (
        "ComfyUI rejected the workflow: Cannot execute because node NoSuchNode does not exist.: "
        "Node ID '#2'"
    )


def test_an_execution_error_fails_permanently_with_its_first_line(comfy: ComfyTestServer) -> None:
    graph = invert_graph()
    graph["5"] = {
        "class_type": "TestFail",
        "inputs": {"image": ["2", 0], "message": "out of cheese\n  at the second line"},
    }
    graph["3"]["inputs"]["images"] = ["5", 0]

    with pytest.raises(NodeError) as caught:
        run(comfy, graph, new_id())

    assert caught.value.retryable is False
    assert caught.value.message == "ComfyUI node 5 (TestFail) failed: RuntimeError: out of cheese"


def test_a_server_that_is_down_is_a_retryable_error_naming_its_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    with pytest.raises(NodeError) as caught, ComfyClient(url) as client:
        client.run(invert_graph(), prompt_id=new_id())

    assert caught.value.retryable is True
    assert caught.value.failure_type == "UPSTREAM_ERROR"
    assert url in caught.value.message


def test_cancel_mid_run_deletes_and_interrupts_only_that_prompt(comfy: ComfyTestServer) -> None:
    ours, theirs = new_id(), new_id()
    cancel = threading.Event()
    errors: list[NodeError] = []

    def ours_run() -> None:
        try:
            run(comfy, invert_graph(slow=5.0), ours, is_cancelled=cancel.is_set)
        except NodeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=ours_run)
    worker.start()
    comfy.wait_for(lambda: comfy.running_prompt_id == ours)
    # another user's prompt waits behind ours; it must survive our cancellation
    httpx.post(
        comfy.url + "/prompt",
        json={"prompt": invert_graph(prefix="theirs"), "prompt_id": theirs, "client_id": "other"},
    )

    cancel.set()
    worker.join(10)

    assert [(e.message, e.retryable, e.failure_type) for e in errors] == [
        ("Cancelled", False, "INTERNAL")
    ]
    assert comfy.queue_requests == [{"delete": [ours]}]
    assert comfy.interrupt_requests == [{"prompt_id": ours}]
    comfy.wait_for(lambda: comfy.history_entry(theirs) is not None)
    assert comfy.interrupted_prompt_ids == [ours]
    assert comfy.history_entry(theirs)["status"]["status_str"] == "success"  # type: ignore[index]


def test_cancel_while_queued_behind_another_prompt_leaves_that_prompt_alone(
    comfy: ComfyTestServer,
) -> None:
    ours, theirs = new_id(), new_id()
    httpx.post(
        comfy.url + "/prompt",
        json={"prompt": invert_graph(prefix="theirs", slow=1.0), "prompt_id": theirs},
    )
    comfy.wait_for(lambda: comfy.running_prompt_id == theirs)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()

    with pytest.raises(NodeError, match="^Cancelled$"):
        run(comfy, invert_graph(), ours, is_cancelled=cancel.is_set)

    comfy.wait_for(lambda: comfy.history_entry(theirs) is not None)
    assert comfy.history_entry(theirs)["status"]["status_str"] == "success"  # type: ignore[index]
    assert comfy.interrupted_prompt_ids == []
    assert comfy.executions[ours] == 0
    assert comfy.pending_prompt_ids() == []


def test_timeout_is_a_timeout_failure_and_stops_the_prompt(comfy: ComfyTestServer) -> None:
    prompt_id = new_id()

    with pytest.raises(NodeError) as caught:
        run(comfy, invert_graph(slow=5.0), prompt_id, client={"timeout": 0.5})

    assert caught.value.failure_type == "TIMEOUT"
    assert comfy.interrupt_requests == [{"prompt_id": prompt_id}]
    comfy.wait_for(lambda: comfy.interrupted_prompt_ids == [prompt_id])


def test_other_prompts_broadcasts_and_foreign_frames_do_not_confuse_the_client(
    comfy: ComfyTestServer,
) -> None:
    ours = new_id()
    results: list[list[OutputRef]] = []
    worker = threading.Thread(
        target=lambda: results.append(run(comfy, invert_graph(slow=1.0), ours))
    )
    worker.start()
    comfy.wait_for(lambda: comfy.running_prompt_id == ours)
    sid = comfy.prompt_posts[0]["client_id"]
    # another client's prompts make status broadcasts interleave with our frames
    for i in range(3):
        httpx.post(comfy.url + "/prompt", json={"prompt": invert_graph(prefix=f"other{i}")})
    for frame in (
        {"type": "executing", "data": {"node": None, "prompt_id": "someone-else"}},
        {"type": "execution_error", "data": {"prompt_id": "someone-else", "node_id": "1"}},
        {"type": "executing", "data": {"node": "2"}},  # the reconnect frame: no prompt_id
        {"type": "progress", "data": "not an object"},
        "not json at all",
        "[1, 2, 3]",
        b"\x00\x00\x00\x01",  # too short for a header
        struct.pack(">II", 4, 9999) + b"{}",  # metadata length past the end
        struct.pack(">II", 4, 3) + b"{{{" + b"png",
        struct.pack(">II", 1, 2) + b"\x89PNG",
        struct.pack(">II", 7, 0),
    ):
        comfy.inject(sid, frame)
    worker.join(10)

    assert [r[0].filename for r in results] == ["proto_test_00001_.png"]
    assert comfy.executions[ours] == 1


def test_a_cached_rerun_of_an_identical_graph_returns_the_old_file(comfy: ComfyTestServer) -> None:
    first = run(comfy, invert_graph(), new_id())
    again = new_id()
    fractions: list[float] = []

    second = run(comfy, invert_graph(), again, on_progress=fractions.append)

    assert second == first
    assert fractions[-1] == 1.0
    assert comfy.executions[again] == 1
    entry = comfy.history_entry(again)
    assert entry is not None
    messages = dict((m[0], m[1]) for m in entry["status"]["messages"])
    assert messages["execution_cached"]["nodes"] == ["1", "2", "3"]
    assert [p.name for p in comfy.output_dir.iterdir()] == ["proto_test_00001_.png"]


@pytest.mark.parametrize("metadata", [False, True], ids=["legacy", "preview-metadata"])
def test_binary_preview_frames_are_ignored_safely(comfy: ComfyTestServer, metadata: bool) -> None:
    graph = invert_graph()
    graph["1"]["inputs"]["batch_size"] = 2
    graph["4"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}

    refs = run(comfy, graph, new_id(), client={"supports_preview_metadata": metadata})

    assert [r.filename for r in refs] == ["proto_test_00001_.png", "proto_test_00002_.png"]


def test_output_files_prefer_saved_outputs_and_honour_output_node_id(
    comfy: ComfyTestServer,
) -> None:
    graph = invert_graph()
    graph["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}

    default = run(comfy, graph, new_id())
    chosen = run(comfy, graph, new_id(), output_node_id="5")

    assert [r.type for r in default] == ["output", "temp"]
    assert [(r.node_id, r.type) for r in chosen] == [("5", "temp")]
    with ComfyClient(comfy.url) as client:
        preview = client.fetch(chosen[0])
    assert Image.open(io.BytesIO(preview.content)).getpixel((0, 0)) == (51, 102, 153)


def test_an_output_node_without_files_is_a_permanent_error(comfy: ComfyTestServer) -> None:
    with pytest.raises(NodeError, match="output node 9 produced no files") as caught:
        run(comfy, invert_graph(), new_id(), output_node_id="9")

    assert caught.value.retryable is False


def test_parse_binary_frame_decodes_both_preview_formats() -> None:
    meta = json.dumps({"node_id": "2", "image_type": "image/png"}).encode()

    legacy = parse_binary_frame(struct.pack(">II", 1, 2) + b"PNGDATA")
    with_meta = parse_binary_frame(struct.pack(">II", 4, len(meta)) + meta + b"PNGDATA")
    text = parse_binary_frame(struct.pack(">II", 3, 1) + b"7" + b"hello")

    assert legacy is not None and (legacy.mime_type, legacy.payload) == ("image/png", b"PNGDATA")
    assert with_meta is not None and with_meta.metadata == {
        "node_id": "2",
        "image_type": "image/png",
    }
    assert with_meta.payload == b"PNGDATA" and with_meta.mime_type == "image/png"
    assert text is not None and (text.metadata, text.payload) == ({"node_id": "7"}, b"hello")
    assert parse_binary_frame(b"\x00\x00") is None
    assert parse_binary_frame(struct.pack(">II", 4, 50) + b"{}") is None
    assert parse_binary_frame(struct.pack(">II", 4, 2) + b"[]") is None
