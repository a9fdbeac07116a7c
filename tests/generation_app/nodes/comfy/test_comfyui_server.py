"""The ComfyUI test peer itself speaks the protocol as observed on a real server."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from tests.peers.comfyui_server import ComfyTestServer, invert_graph

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[4]


def ws_url(server: ComfyTestServer, client_id: str) -> str:
    return server.url.replace("http://", "ws://") + f"/ws?clientId={client_id}"


def read_until_end(ws: ClientConnection, prompt_id: str) -> list[Any]:
    """Frames up to and including `executing` with node null for `prompt_id`."""
    frames: list[Any] = []
    while True:
        raw = ws.recv(timeout=10)
        frame = raw if isinstance(raw, bytes) else json.loads(raw)
        frames.append(frame)
        if (
            isinstance(frame, dict)
            and frame["type"] == "executing"
            and frame["data"].get("node") is None
            and frame["data"].get("prompt_id") == prompt_id
        ):
            return frames


def types(frames: list[Any]) -> list[str]:
    return [f["type"] if isinstance(f, dict) else f"binary:{f[3]}" for f in frames]


def post(server: ComfyTestServer, body: Any) -> httpx.Response:
    return httpx.post(server.url + "/prompt", json=body)


def test_a_run_sends_the_observed_frames_in_order_to_its_owner_only(comfy: ComfyTestServer) -> None:
    with (
        connect(ws_url(comfy, "client-1")) as owner,
        connect(ws_url(comfy, "observer")) as observer,
    ):
        assert json.loads(owner.recv(timeout=5)) == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "client-1"},
        }
        observer.recv(timeout=5)

        answer = post(comfy, {"prompt": invert_graph(), "client_id": "client-1", "prompt_id": "P"})
        frames = read_until_end(owner, "P")
        time.sleep(0.1)
        observed = []
        while True:
            try:
                observed.append(json.loads(observer.recv(timeout=0.1)))
            except TimeoutError:
                break

    assert answer.json() == {"prompt_id": "P", "number": 0, "node_errors": {}}
    assert types(frames) == [
        "status", "status", "execution_start", "execution_cached",
        "progress_state", "executing", "progress_state",
        "progress_state", "executing", "progress_state",
        "progress_state", "executing", "executed", "progress_state",
        "execution_success", "status", "executing",
    ]  # fmt: skip
    assert [
        f["data"]["status"]["exec_info"]["queue_remaining"] for f in frames if f["type"] == "status"
    ] == [1, 1, 0]
    assert frames[5]["data"] == {"node": "1", "display_node": "1", "prompt_id": "P"}
    assert frames[12]["data"] == {
        "node": "3",
        "display_node": "3",
        "output": {
            "images": [{"filename": "proto_test_00001_.png", "subfolder": "", "type": "output"}]
        },
        "prompt_id": "P",
    }
    last_state = frames[13]["data"]["nodes"]
    assert {k: (v["state"], v["value"]) for k, v in last_state.items()} == {
        "1": ("finished", 1.0),
        "2": ("finished", 1.0),
        "3": ("finished", 1.0),
    }
    assert frames[-1]["data"] == {"node": None, "prompt_id": "P"}
    assert types(observed) == ["status", "status", "status"]


def test_a_cached_rerun_has_no_executing_frames_and_the_old_filename(
    comfy: ComfyTestServer,
) -> None:
    with connect(ws_url(comfy, "c")) as ws:
        ws.recv(timeout=5)
        post(comfy, {"prompt": invert_graph(), "client_id": "c", "prompt_id": "first"})
        read_until_end(ws, "first")
        post(comfy, {"prompt": invert_graph(), "client_id": "c", "prompt_id": "second"})
        frames = read_until_end(ws, "second")

    assert types(frames) == [
        "status", "status", "execution_start", "execution_cached", "executed", "progress_state",
        "execution_success", "status", "executing",
    ]  # fmt: skip
    assert frames[3]["data"]["nodes"] == ["1", "2", "3"]
    assert frames[4]["data"]["output"]["images"][0]["filename"] == "proto_test_00001_.png"
    assert frames[5]["data"]["nodes"]["3"]["value"] == 1  # an int in cached replays
    assert sorted(p.name for p in comfy.output_dir.iterdir()) == ["proto_test_00001_.png"]


def test_a_failing_node_sends_execution_error_and_records_it(comfy: ComfyTestServer) -> None:
    graph = invert_graph(prefix="../../escape_attempt")
    with connect(ws_url(comfy, "c")) as ws:
        ws.recv(timeout=5)
        post(comfy, {"prompt": graph, "client_id": "c", "prompt_id": "bad"})
        frames = read_until_end(ws, "bad")

    assert types(frames)[-4:] == ["executing", "execution_error", "status", "executing"]
    error = frames[-3]["data"]
    assert set(error) == {
        "prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
        "traceback", "current_inputs", "current_outputs", "timestamp",
    }  # fmt: skip
    assert (error["node_id"], error["node_type"], error["executed"]) == (
        "3",
        "SaveImage",
        ["1", "2"],
    )
    assert error["exception_message"].startswith(
        "**** ERROR: Saving image outside the output folder is not allowed."
    )
    assert error["exception_type"] == "Exception"
    entry = httpx.get(comfy.url + "/history/bad").json()["bad"]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert entry["outputs"] == {}


def test_validation_errors_use_the_400_envelope(comfy: ComfyTestServer) -> None:
    missing = invert_graph()
    del missing["1"]["inputs"]["width"]
    no_class = invert_graph()
    del no_class["2"]["class_type"]
    unknown = invert_graph()
    unknown["2"]["class_type"] = "NoSuchNode"

    answers = [
        post(comfy, {"prompt": missing}),
        post(comfy, {"prompt": unknown}),
        post(comfy, {"prompt": no_class}),
        post(comfy, {"prompt": {}}),
        post(comfy, {"prompt": {"1": invert_graph()["1"]}}),
        post(comfy, {"client_id": "x"}),
        post(comfy, []),
    ]
    malformed = httpx.post(comfy.url + "/prompt", content=b"{not json")
    ok = post(comfy, {"prompt": invert_graph()})

    assert [a.status_code for a in answers] == [400] * 7
    assert answers[0].json() == {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "1": {
                "errors": [
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": "width",
                        "extra_info": {"input_name": "width"},
                    }
                ],
                "dependent_outputs": ["3"],
                "class_type": "EmptyImage",
            }
        },
    }
    assert answers[1].json()["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node NoSuchNode does not exist.",
        "details": "Node ID '#2'",
        "extra_info": {},
    }
    assert answers[2].json()["error"]["message"] == (
        "Cannot execute because a node is missing the class_type property."
    )
    assert [a.json()["error"]["type"] for a in answers[3:]] == [
        "prompt_no_outputs", "prompt_no_outputs", "no_prompt", "no_prompt",
    ]  # fmt: skip
    assert all(a.json()["node_errors"] == {} for a in answers[1:])
    assert (malformed.status_code, malformed.headers["content-type"]) == (
        500,
        "text/plain; charset=utf-8",
    )
    assert ok.json()["number"] == 7  # rejected posts moved the counter too
    assert comfy.executions.total() <= 1


def test_numbers_prompt_ids_and_partial_validity(comfy: ComfyTestServer) -> None:
    half = invert_graph()
    half["4"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}}

    given = post(comfy, {"prompt": invert_graph(), "number": 42.5, "prompt_id": "mine"}).json()
    front = post(comfy, {"prompt": invert_graph(), "front": True}).json()
    partial = post(comfy, {"prompt": half, "prompt_id": "half"})

    assert (given["prompt_id"], given["number"]) == ("mine", 42.5)
    assert front["number"] == 0 and uuid.UUID(front["prompt_id"]).version == 4
    assert partial.status_code == 200
    assert partial.json()["node_errors"]["4"]["errors"][0]["details"] == "filename_prefix"
    comfy.wait_for(lambda: comfy.history_entry("half") is not None)
    assert list(comfy.history_entry("half")["outputs"]) == ["3"]  # type: ignore[index]


def test_history_is_empty_until_the_prompt_is_done(comfy: ComfyTestServer) -> None:
    post(comfy, {"prompt": invert_graph(slow=0.5), "prompt_id": "slow"})
    comfy.wait_for(lambda: comfy.running_prompt_id == "slow")

    during = httpx.get(comfy.url + "/history/slow").json()
    queue = httpx.get(comfy.url + "/queue").json()
    remaining = httpx.get(comfy.url + "/api/prompt").json()
    comfy.wait_for(lambda: comfy.history_entry("slow") is not None)
    after = httpx.get(comfy.url + "/history/slow").json()

    assert during == {}
    assert [item[1] for item in queue["queue_running"]] == ["slow"] and queue["queue_pending"] == []
    assert remaining == {"exec_info": {"queue_remaining": 1}}
    entry = after["slow"]
    assert entry["prompt"][:2] == [0, "slow"] and entry["prompt"][4] == ["3"]
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["3"]["images"][0]["filename"] == "proto_test_00001_.png"
    assert list(httpx.get(comfy.url + "/history", params={"max_items": 1}).json()) == ["slow"]
    assert httpx.get(comfy.url + "/queue").json() == {"queue_running": [], "queue_pending": []}


def test_view_serves_exact_files_and_refuses_bad_paths(comfy: ComfyTestServer) -> None:
    (comfy.output_dir / "sub").mkdir()
    (comfy.output_dir / "sub" / "a.png").write_bytes(b"\x89PNG-exact")
    (comfy.output_dir / "page.html").write_bytes(b"<html>")

    def view(**params: str) -> httpx.Response:
        return httpx.get(comfy.url + "/view", params=params)

    found = view(filename="a.png", subfolder="sub", type="output")
    html = view(filename="page.html")

    assert (found.status_code, found.content) == (200, b"\x89PNG-exact")
    assert found.headers["content-type"] == "image/png"
    assert found.headers["content-disposition"] == 'filename="a.png"'
    assert html.headers["content-type"] == "application/octet-stream"
    assert view(filename="a.png", subfolder="sub", type="models").status_code == 400
    assert view(filename="../a.png").status_code == 400
    assert view(filename="/etc/passwd").status_code == 400
    assert view(filename="a.png", subfolder="../../etc").status_code == 403
    assert view(filename="nope.png").status_code == 404
    assert view(filename="nope.png").content == b""


def test_interrupt_names_a_prompt_or_stops_whatever_runs(comfy: ComfyTestServer) -> None:
    with connect(ws_url(comfy, "c")) as ws:
        ws.recv(timeout=5)
        post(comfy, {"prompt": invert_graph(slow=5.0), "client_id": "c", "prompt_id": "long"})
        comfy.wait_for(lambda: comfy.running_prompt_id == "long")

        other = httpx.post(comfy.url + "/interrupt", json={"prompt_id": "not-running"})
        time.sleep(0.2)
        assert comfy.running_prompt_id == "long"
        bare = httpx.post(comfy.url + "/interrupt")
        frames = read_until_end(ws, "long")

    assert (other.status_code, other.content, bare.status_code) == (200, b"", 200)
    assert types(frames)[-3:] == ["execution_interrupted", "status", "executing"]
    data = frames[-3]["data"]
    assert (data["prompt_id"], data["node_id"], data["node_type"]) == ("long", "4", "TestSlow")
    assert data["executed"] == ["1", "2"]
    assert comfy.interrupt_requests == [{"prompt_id": "not-running"}, None]


def test_queue_delete_and_clear_remove_pending_prompts(comfy: ComfyTestServer) -> None:
    # running long enough that the queue is still waiting behind it on a loaded machine (the
    # server's stop interrupts it)
    post(comfy, {"prompt": invert_graph(slow=15.0), "prompt_id": "running"})
    comfy.wait_for(lambda: comfy.running_prompt_id == "running")
    for pid in ("a", "b", "c"):
        post(comfy, {"prompt": invert_graph(prefix=pid), "prompt_id": pid})

    deleted = httpx.post(comfy.url + "/queue", json={"delete": ["b"]})
    after_delete = comfy.pending_prompt_ids()
    httpx.post(comfy.url + "/queue", json={"clear": True})

    assert (deleted.status_code, deleted.content) == (200, b"")
    assert after_delete == ["a", "c"]
    assert comfy.pending_prompt_ids() == []
    assert comfy.running_prompt_id == "running"


def test_reconnecting_mid_run_gets_the_current_node_without_prompt_id(
    comfy: ComfyTestServer,
) -> None:
    with connect(ws_url(comfy, "c")) as first:
        first.recv(timeout=5)
        post(comfy, {"prompt": invert_graph(slow=1.0), "client_id": "c", "prompt_id": "r"})
        comfy.wait_for(lambda: comfy.running_prompt_id == "r")
        time.sleep(0.1)
    with connect(ws_url(comfy, "c")) as again:
        hello = json.loads(again.recv(timeout=5))
        current = json.loads(again.recv(timeout=5))
        rest = read_until_end(again, "r")

    assert hello["data"]["sid"] == "c"
    assert current == {"type": "executing", "data": {"node": "4"}}
    assert "execution_success" in types(rest)


@pytest.mark.parametrize("metadata", [False, True], ids=["legacy", "preview-metadata"])
def test_save_image_websocket_sends_progress_and_binary_previews(
    comfy: ComfyTestServer, metadata: bool
) -> None:
    graph = {
        "1": invert_graph()["1"],
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    graph["1"]["inputs"].update(width=64, height=48, batch_size=2)
    with connect(ws_url(comfy, "c")) as ws:
        ws.recv(timeout=5)
        if metadata:
            ws.send(
                json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            )
            assert json.loads(ws.recv(timeout=5)) == {
                "type": "feature_flags",
                "data": {"supports_preview_metadata": True, "max_upload_size": 104857600},
            }
        post(comfy, {"prompt": graph, "client_id": "c", "prompt_id": "ws"})
        frames = read_until_end(ws, "ws")

    kinds = [t for t in types(frames) if t in ("progress", "binary:1", "binary:4")]
    binaries = [f for f in frames if isinstance(f, bytes)]
    if metadata:
        assert kinds == ["binary:4", "progress", "binary:4", "progress"]
        event, size = struct.unpack_from(">II", binaries[0])
        meta = json.loads(binaries[0][8 : 8 + size])
        assert meta == {
            "node_id": "2", "prompt_id": "ws", "display_node_id": "2", "parent_node_id": None,
            "real_node_id": "2", "image_type": "image/png",
        }  # fmt: skip
        png = binaries[0][8 + size :]
    else:
        assert kinds == ["progress", "binary:1", "progress", "binary:1"]
        assert binaries[0][:8] == struct.pack(">II", 1, 2)
        png = binaries[0][8:]
    assert Image.open(io.BytesIO(png)).size == (64, 48)
    progress = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
    assert progress[0] == {"value": 0, "max": 2, "prompt_id": "ws", "node": "2"}


def test_a_prompt_without_client_id_sends_no_execution_events(comfy: ComfyTestServer) -> None:
    with connect(ws_url(comfy, "watcher")) as ws:
        ws.recv(timeout=5)
        post(comfy, {"prompt": invert_graph(), "prompt_id": "anon"})
        comfy.wait_for(lambda: comfy.history_entry("anon") is not None)
        time.sleep(0.1)
        frames = []
        while True:
            try:
                frames.append(json.loads(ws.recv(timeout=0.1)))
            except TimeoutError:
                break

    assert types(frames) == ["status", "status", "status"]
    assert comfy.history_entry("anon")["prompt"][3] == {}  # type: ignore[index]


def test_upload_object_info_and_small_endpoints(comfy: ComfyTestServer) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(png, "PNG")

    def upload(content: bytes) -> httpx.Response:
        return httpx.post(
            comfy.url + "/upload/image", files={"image": ("probe.png", content, "image/png")}
        )

    first = upload(png.getvalue())
    same = upload(png.getvalue())
    different = upload(png.getvalue() + b"\0")
    missing = httpx.post(
        comfy.url + "/upload/image", data={"type": "input"}, files={"x": ("a", b"1")}
    )

    assert first.json() == {"name": "probe.png", "subfolder": "", "type": "input"}
    assert same.json()["name"] == "probe.png"
    assert different.json()["name"] == "probe (1).png"
    assert (missing.status_code, missing.content) == (400, b"")
    loaded = post(
        comfy,
        {
            "prompt": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "probe.png"}},
                "2": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "up"},
                },
            },
            "prompt_id": "load",
        },
    )
    assert loaded.status_code == 200
    comfy.wait_for(lambda: comfy.history_entry("load") is not None)
    saved = Image.open(comfy.output_dir / "up_00001_.png")
    assert saved.getpixel((0, 0)) == (10, 20, 30)

    info = httpx.get(comfy.url + "/api/object_info/EmptyImage").json()["EmptyImage"]
    assert info["input_order"] == {"required": ["width", "height", "batch_size", "color"]}
    assert info["input"]["required"]["width"] == [
        "INT",
        {"default": 512, "min": 1, "max": 16384, "step": 1},
    ]
    assert httpx.get(comfy.url + "/object_info/Nope").json() == {}
    assert "SaveImage" in httpx.get(comfy.url + "/object_info").json()
    assert httpx.get(comfy.url + "/features").json() == {
        "supports_preview_metadata": True,
        "max_upload_size": 104857600,
    }
    stats = httpx.get(comfy.url + "/system_stats").json()
    assert stats["system"]["comfyui_version"] == "0.3.64" and stats["devices"][0]["type"] == "cpu"
    foreign = httpx.get(comfy.url + "/prompt", headers={"Origin": "http://evil.example"})
    assert (foreign.status_code, foreign.content) == (403, b"")


def test_the_server_runs_as_a_subprocess(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.peers.comfyui_server",
            "--port",
            str(port),
            "--root",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert (
            process.stdout.readline().strip()
            == f"ComfyUI test server listening on http://127.0.0.1:{port}"
        )
        answer = httpx.post(
            f"http://127.0.0.1:{port}/prompt", json={"prompt": invert_graph(), "prompt_id": "sub"}
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{port}/history/sub").json() == {}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (tmp_path / "output" / "proto_test_00001_.png").is_file()
    finally:
        process.terminate()
        process.wait(10)
