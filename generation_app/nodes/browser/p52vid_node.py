"""The `p52vid` node: a p5.js sketch's frames encoded to an H.264 MP4 (`p52vid.mp4`).

Payload: `code`, `duration` (seconds, default 3). The renderer steps round(duration * fps)
frames on a virtual clock: frame i is drawn at millis() = i * 1000 / fps with deltaTime =
1000 / fps, whatever the machine's speed, so a hash always gives the same video. A sketch that
sets a lower frameRate() draws on fewer of those frames (the video holds the last one), as in a
browser. fps defaults to EMPROPS_P52VID_FPS (30). Odd canvas sizes are padded to even ones
(yuv420p); frames of a sketch that resizes its canvas are cropped or padded to the first size.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Generator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile
from generation_app.nodes.browser import settings
from generation_app.nodes.browser.p5_node import sketch_code
from generation_app.nodes.browser.renderer import (
    Frame,
    PageEnv,
    browser_env,
    job_output_resolver,
    render_p5_frames,
)

# x264 is deterministic for a given input and settings; bitexact keeps version strings and
# timestamps out of the container, so the same frames give the same bytes.
X264_PARAMS = [
    "-preset", "veryfast",
    "-crf", "18",
    "-movflags", "+faststart",
    "-map_metadata", "-1",
    "-fflags", "+bitexact",
    "-flags:v", "+bitexact",
]  # fmt: skip


class P52VidNode(Node):
    name: ClassVar[str] = "p52vid"
    version: ClassVar[str] = "1"
    deterministic: ClassVar[bool] = True

    def env_fingerprint(self, payload: Mapping[str, Any],
                        workflow: Mapping[str, Any] | None) -> dict[str, str]:
        return {**browser_env(), "fps": f"{self.fps or settings.p52vid_fps():g}",
                "encoder": _encoder_version()}

    def __init__(self, *, timeout_s: float | None = None, fps: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.fps = fps

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        """Render `duration` seconds of the sketch and store them as `p52vid.mp4`."""
        code = sketch_code(payload)
        duration = _duration(payload.get("duration"))
        fps = self.fps or settings.p52vid_fps()
        frame_count = max(1, round(duration * fps))
        with tempfile.TemporaryDirectory(prefix="p52vid-") as tmp:
            path = Path(tmp) / "p52vid.mp4"
            encoder = _Mp4Encoder(path, fps)
            done = 0

            def on_frames(frames: list[Frame]) -> None:
                nonlocal done
                for frame in frames:
                    encoder.write(frame)
                done += len(frames)
                ctx.report_progress(0.95 * done / frame_count)

            try:
                render_p5_frames(
                    code,
                    env=PageEnv.from_context(ctx),
                    resolve_url=job_output_resolver(ctx),
                    timeout_s=self.timeout_s or settings.p52vid_timeout_s(),
                    fps=fps,
                    frame_count=frame_count,
                    on_frames=on_frames,
                    should_stop=ctx.is_cancelled,
                )
                if ctx.is_cancelled():
                    raise NodeError("Cancelled", retryable=False, failure_type="INTERNAL")
            finally:
                encoder.close()
            video = path.read_bytes()
        return NodeOutput(
            mime_type="video/mp4",
            files=[StoredFile("p52vid.mp4", video, "video/mp4")],
            src_file="p52vid.mp4",
        )


def _duration(raw: object) -> float:
    if raw is None or raw == "":
        return settings.DEFAULT_P52VID_DURATION_S
    try:
        duration = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NodeError(f"`duration` must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(duration) or duration <= 0 or duration > settings.MAX_P52VID_DURATION_S:
        raise NodeError(
            f"`duration` must be more than 0 and at most {settings.MAX_P52VID_DURATION_S:g} s"
        )
    return duration


@cache
def _encoder_version() -> str:
    """The ffmpeg build that encodes the frames (imageio-ffmpeg's, once per process)."""
    try:
        import imageio_ffmpeg

        return f"ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}"
    except Exception:  # noqa: BLE001 - no encoder: the render itself will say so
        return "unknown"


class _Mp4Encoder:
    """Feeds RGB frames to ffmpeg (libx264, yuv420p); sized by the first frame, padded to even."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.size: tuple[int, int] | None = None
        self._writer: Generator[None, bytes, None] | None = None

    def write(self, frame: Frame) -> None:
        from PIL import Image

        image = Image.open(io.BytesIO(frame.png)).convert("RGB")
        if self.size is None:
            self.size = (image.width + image.width % 2, image.height + image.height % 2)
            self._writer = self._open(self.size)
        if image.size != self.size:
            padded = Image.new("RGB", self.size, (0, 0, 0))
            padded.paste(image, (0, 0))
            image = padded
        assert self._writer is not None
        self._writer.send(image.tobytes())

    def _open(self, size: tuple[int, int]) -> Generator[None, bytes, None]:
        import imageio_ffmpeg

        writer: Generator[None, bytes, None] = imageio_ffmpeg.write_frames(
            str(self.path),
            size,
            fps=self.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,
            output_params=X264_PARAMS,
        )
        writer.send(None)  # type: ignore[arg-type]  # starts ffmpeg
        return writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
