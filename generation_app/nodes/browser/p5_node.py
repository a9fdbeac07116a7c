"""The `p5` node: a p5.js 1.x sketch (global or instance mode) saved as `p5.png`.

Frames are stepped by the renderer on a virtual clock (60 per virtual second), so the saved
frame does not depend on machine speed: the frame in which the sketch calls `capture()`, else
the one after which `noLoop()` took effect, else frame EMPROPS_P5_FRAME_BUDGET (default 60).
The PNG is the canvas at the size the sketch created it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile
from generation_app.nodes.browser import settings
from generation_app.nodes.browser.renderer import (
    PageEnv,
    browser_env,
    job_output_resolver,
    render_p5_still,
)


def sketch_code(payload: Mapping[str, Any]) -> str:
    """The payload's `code`, or a permanent NodeError."""
    code = payload.get("code")
    if not isinstance(code, str) or not code.strip():
        raise NodeError("The payload has no sketch `code`", retryable=False)
    return code


class P5Node(Node):
    name: ClassVar[str] = "p5"
    version: ClassVar[str] = "1"
    deterministic: ClassVar[bool] = True

    def env_fingerprint(self, payload: Mapping[str, Any],
                        workflow: Mapping[str, Any] | None) -> dict[str, str]:
        # the frame a still is taken from is a process setting, so it is part of the env
        return {**browser_env(), "frameBudget": str(self.frame_budget
                                                    or settings.p5_frame_budget())}

    def __init__(self, *, timeout_s: float | None = None, frame_budget: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.frame_budget = frame_budget

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        """Render the sketch and store the chosen frame as `p5.png`."""
        still = render_p5_still(
            sketch_code(payload),
            env=PageEnv.from_context(ctx),
            resolve_url=job_output_resolver(ctx),
            timeout_s=self.timeout_s or settings.timeout_s(),
            frame_budget=self.frame_budget or settings.p5_frame_budget(),
        )
        return NodeOutput(
            mime_type="image/png",
            files=[StoredFile("p5.png", still.png, "image/png")],
            src_file="p5.png",
        )
