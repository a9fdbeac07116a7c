"""Render time of the browser nodes, per frame, against a blank-page baseline of the same run.

    .venv/bin/python bench/render.py [--repeat 5] [--out bench/render.json]

Prints JSON: for each case the median wall time of a whole node run, the time per frame, and
the ratio to the baseline (a js node screenshotting an empty page: context + navigation +
screenshot, the floor every render pays). The browser is launched once before timing, as a
worker would have it warm.

The renderer opens each render's page ahead of time (pre-warmed single-use pages, see
generation_app/nodes/browser/renderer.py). In a worker the next page warms while the worker
stores the last output; here, where renders follow each other with nothing in between, each
timed render of a "warm" case first waits (untimed) for its page with `renderer.prewarm()`, and
the "cold" case turns warm pages off (EMPROPS_BROWSER_WARM_PAGES=0). The naive loop is the bare
Playwright loop of the issue, in this process: a fresh context and page per render with
runtime.js and p5 injected, the same 512 px sketch, the canvas read back as PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.p5_collection import naive_render  # noqa: E402
from generation_app.nodes.base import RunContext  # noqa: E402
from generation_app.nodes.browser import renderer, settings  # noqa: E402
from generation_app.nodes.browser.js_node import JsNode  # noqa: E402
from generation_app.nodes.browser.p5_node import P5Node  # noqa: E402
from generation_app.nodes.browser.p52vid_node import P52VidNode  # noqa: E402

HASH = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"

# A typical generative sketch: a few hundred shapes a frame, drawn from the hash.
SKETCH = """
function setup() { createCanvas(%(size)d, %(size)d); }
function draw() {
  background(pseudorandomInteger(0, 60));
  noStroke();
  for (let i = 0; i < 300; i++) {
    fill(random(255), random(255), random(255), 180);
    circle(random(width), random(height) + frameCount, random(4, 40));
  }
  %(stop)s
}
"""


def _ctx() -> RunContext:
    return RunContext(
        user_id="bench",
        job_id="bench",
        gid=0,
        step_id=1,
        node_name="bench",
        alias=None,
        hash=HASH,
        seed=2160853444,
        variables={},
        components={},
    )


def _median_s(run: Callable[[], Any], repeat: int, *, warm: bool = False) -> float:
    times = []
    for _ in range(repeat):
        if warm:
            renderer.prewarm(["p5"])
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ctx = _ctx()

    JsNode().run({"body": "<body></body>"}, ctx)  # launch Chromium outside the timings
    baseline = _median_s(lambda: JsNode().run({"body": "<body></body>"}, ctx), args.repeat)

    cases: list[dict[str, Any]] = []

    def case(name: str, frames: int, run: Callable[[], Any], repeat: int,
             warm: bool = True) -> float:
        median = _median_s(run, repeat, warm=warm)
        cases.append(
            {
                "case": name,
                "frames": frames,
                "median_s": round(median, 4),
                "per_frame_ms": round(1000 * median / frames, 2),
                "ratio_to_baseline": round(median / baseline, 2),
            }
        )
        return median

    still_512 = SKETCH % {"size": 512, "stop": "if (frameCount === 1) capture();"}
    naive = case("naive loop: 512px still, fresh context + page + p5 (bare Playwright)", 1,
                 lambda: naive_render(still_512), args.repeat, warm=False)
    os.environ[settings.WARM_PAGES_ENV] = "0"
    cold = case("p5 still 512px, 1 frame, cold page", 1,
                lambda: P5Node().run({"code": still_512}, ctx), args.repeat, warm=False)
    os.environ.pop(settings.WARM_PAGES_ENV)
    node = case("p5 still 512px, 1 frame, warm page", 1,
                lambda: P5Node().run({"code": still_512}, ctx), args.repeat)

    for size in (512, 1024):
        still = SKETCH % {"size": size, "stop": "if (frameCount === 1) capture();"}
        case(
            f"p5 still {size}px, 1 frame",
            1,
            lambda c=still: P5Node().run({"code": c}, ctx),
            args.repeat,
        )
        budget = SKETCH % {"size": size, "stop": ""}
        case(
            f"p5 still {size}px, 60-frame budget",
            60,
            lambda c=budget: P5Node(frame_budget=60).run({"code": c}, ctx),
            args.repeat,
        )
        video = SKETCH % {"size": size, "stop": ""}
        case(
            f"p52vid {size}px, 3 s at 30 fps",
            90,
            lambda c=video: P52VidNode(fps=30).run({"code": c, "duration": 3}, ctx),
            max(1, args.repeat // 2),
        )

    renderer.shutdown()
    report = {
        "benchmark": "browser node render time",
        "baseline": {"case": "js blank page screenshot", "median_s": round(baseline, 4)},
        "node_512_still_over_naive_loop": {"warm": round(node / naive, 3),
                                           "cold": round(cold / naive, 3)},
        "cases": cases,
        "repeat": args.repeat,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
