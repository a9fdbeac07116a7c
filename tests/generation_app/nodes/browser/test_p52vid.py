"""The p52vid node: frames stepped on the virtual clock, encoded to H.264 MP4."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import pytest

from generation_app.nodes.base import NodeError, RunContext
from generation_app.nodes.browser.p52vid_node import P52VidNode

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

# The square moves by deltaTime each frame and its colour follows millis(): both come from the
# renderer's clock, so the video is the same on every run.
SKETCH = """
function setup() { createCanvas(63, 41); }
function draw() {
  background(pseudorandomInteger(0, 255), 0, 0);
  fill(millis() % 256, 255, 0);
  rect(frameCount * deltaTime / 20, 10, 10, 10);
}
"""


def test_one_second_at_10_fps_is_an_mp4_of_10_frames(
    make_ctx: Callable[..., RunContext], tmp_path: Path
) -> None:
    progress: list[float] = []
    ctx = make_ctx(node_name="p52vid")
    ctx.report_progress = progress.append

    output = P52VidNode(fps=10).run({"code": SKETCH, "duration": "1"}, ctx)

    assert output.mime_type == "video/mp4"
    assert output.src_file == "p52vid.mp4"
    [video] = output.files
    assert (video.filename, video.mime_type) == ("p52vid.mp4", "video/mp4")
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frames == 10
    assert seconds == pytest.approx(1.0, abs=0.05)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    assert meta["size"] == (64, 42)  # padded to even for yuv420p
    assert meta["codec"] == "h264"
    assert progress[-1] == pytest.approx(0.95)


def test_the_same_hash_gives_the_same_video_bytes(make_ctx: Callable[..., RunContext]) -> None:
    ctx = make_ctx(node_name="p52vid")

    first = P52VidNode(fps=10).run({"code": SKETCH, "duration": 0.5}, ctx).files[0].content
    second = P52VidNode(fps=10).run({"code": SKETCH, "duration": 0.5}, ctx).files[0].content

    assert first == second


@pytest.mark.parametrize("duration", ["-1", "abc", 0, 10_000])
def test_an_invalid_duration_is_a_permanent_error(
    make_ctx: Callable[..., RunContext], duration: object
) -> None:
    with pytest.raises(NodeError) as failure:
        P52VidNode().run({"code": SKETCH, "duration": duration}, make_ctx())

    assert failure.value.retryable is False
    assert "duration" in failure.value.message


def test_an_exception_mid_video_fails_with_its_message(
    make_ctx: Callable[..., RunContext],
) -> None:
    code = "function draw() { if (frameCount === 4) null.x; }"

    with pytest.raises(NodeError) as failure:
        P52VidNode(fps=10).run({"code": code, "duration": 1}, make_ctx())

    assert failure.value.message.startswith("TypeError: Cannot read properties of null")
    assert failure.value.retryable is False
