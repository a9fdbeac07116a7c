"""A p5 collection of N generations end to end, against two bare Playwright loops in the same run.

    .venv/bin/python -m emprops.embedded exec --dir var/bench-p5 -- \
        .venv/bin/python bench/p5_collection.py [--generations 1000] [--baseline-renders 200] \
        [--concurrency 2] [--out var/bench-p5/p5_collection.json] [--readme bench/README.md]

Brings its own services (the embedded PostgreSQL and Redis under the --dir, migrated here).

- **platform**: the demo collection Palette Grid (one 512 px p5 step) generated N times in one
  request through `generation_request` (the path `POST /api/collections/{id}/generations` takes)
  with `no_cache`, by one real Celery worker subprocess on every queue (prefork,
  `--concurrency`); the per-request and per-user generation limits are raised for the run
  (`DEFAULT_MAX_GENERATIONS`, `MAX_RUNNING_GENERATIONS_PER_USER`) and the user has the credits.
  Wall time runs from the request to the last output stored (the N-th generation committed as
  completed, polled every 20 ms); generations/s = N / wall. The completion rate of the first and
  the last tenth of the generations (from their `completed_at`) shows work that grows with the
  job's size on every completion (the job's `data.outputs` is rewritten each time).
- **naive loop**: `--concurrency` processes, each with its own Playwright and Debian's Chromium,
  rendering the same sketch: a fresh context and page per render, runtime.js as an init script,
  p5 and the sketch served by request interception, the canvas read back as PNG.
- **warm loop**: the same processes with one page that has p5 loaded, a new p5 instance per
  render (the sketch run in instance mode), the canvas read back as PNG.

Both loops render `--baseline-renders` PNGs in all, split between the processes, before the
platform run; their rate is renders/s. Prints JSON; `--readme` rewrites the block between
`<!-- p5-collection:begin -->` and `<!-- p5-collection:end -->`. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

HASH = "0x1b6d7d3b5716b08423674afa46cb18cc4d9e1a275822e32018d418b272d55697"
VARIABLES = {"palette": "Sunset", "shape": "circle"}


# ---- the bare Playwright loops (run in child processes) ----------------------------------------


def _sketch() -> str:
    return (ROOT / "collections_app" / "demo" / "palette_grid.js").read_text()


_naive: dict[str, Any] = {}


def naive_render(code: str) -> bytes:
    """One render of the naive loop in this thread's own bare Playwright and Chromium: a fresh
    context and page, runtime.js as an init script, p5 and the sketch served by interception,
    the canvas read back as PNG once the first frame is drawn."""
    from playwright.sync_api import sync_playwright

    from generation_app.nodes.browser import renderer as r

    if "browser" not in _naive:
        _naive["playwright"] = sync_playwright().start()
        _naive["browser"] = _naive["playwright"].chromium.launch(
            executable_path=r.DEFAULT_CHROMIUM_PATH, args=r.CHROMIUM_ARGS)
    env = r.PageEnv(hash=HASH, seed=1, variables=VARIABLES)
    page_html = (b"<!doctype html><html><head><script src='/p5.min.js'></script></head>"
                 b"<body><script src='/sketch.js'></script></body></html>")
    files = {"/p5.min.js": r.P5_PATH.read_bytes(), "/sketch.js": code.encode()}
    context = _naive["browser"].new_context(viewport={"width": 1024, "height": 1024})

    def handle(route: Any) -> None:
        path = route.request.url.split(r.ORIGIN, 1)[-1]
        body = files.get(path, page_html)
        kind = "text/html" if body is page_html else "application/javascript"
        route.fulfill(body=body, content_type=kind)

    context.route("**/*", handle)
    # the real clock: nothing steps frames on a bare page (the node's runtime steps them itself)
    context.add_init_script(script=env.init_script(live=True))
    page = context.new_page()
    page.goto(r.PAGE_URL)
    png = page.wait_for_function(
        "() => window.frameCount >= 1 && document.querySelector('canvas')"
        " && document.querySelector('canvas').toDataURL('image/png')").json_value()
    context.close()
    assert png.startswith("data:image/png")
    return bytes(png.encode())


def _naive_loop(renders: int, out: Any) -> None:
    code = _sketch()
    naive_render(code)  # launch outside the timings, as the warm loop's page load is
    times = []
    for _ in range(renders):
        started = time.perf_counter()
        naive_render(code)
        times.append(time.perf_counter() - started)
    _naive.pop("browser").close()
    _naive.pop("playwright").stop()
    out.put(times)


_WARM_RENDER = """async (code) => {
  const define = new Function('p', 'with (p) {' + code + '\\n; p.setup = setup; p.draw = draw; }');
  return await new Promise((resolve) => {
    new p5((p) => {
      define(p);
      const draw = p.draw;
      p.draw = () => {
        draw();
        const png = p.canvas.toDataURL('image/png');
        p.remove();
        resolve(png);
      };
    });
  });
}"""


def _warm_loop(renders: int, out: Any) -> None:
    from playwright.sync_api import sync_playwright

    from generation_app.nodes.browser import renderer as r

    env = r.PageEnv(hash=HASH, seed=1, variables=VARIABLES)
    page_html = b"<!doctype html><html><head><script src='/p5.min.js'></script></head></html>"
    p5 = r.P5_PATH.read_bytes()
    code = _sketch()
    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=r.DEFAULT_CHROMIUM_PATH, args=r.CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1024, "height": 1024})
        context.route("**/*", lambda route: route.fulfill(
            body=p5 if route.request.url.endswith("p5.min.js") else page_html,
            content_type="application/javascript" if route.request.url.endswith(".js")
            else "text/html"))
        # the real clock: a new instance's draw() runs on requestAnimationFrame
        context.add_init_script(script=env.init_script(live=True))
        page = context.new_page()
        page.goto(r.PAGE_URL)
        for _ in range(renders):
            started = time.perf_counter()
            png = page.evaluate(_WARM_RENDER, code)
            assert png.startswith("data:image/png")
            times.append(time.perf_counter() - started)
        browser.close()
    out.put(times)


def _parallel(loop: Any, renders: int, processes: int, timeout: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    share = [renders // processes + (1 if i < renders % processes else 0)
             for i in range(processes)]
    children = [ctx.Process(target=loop, args=(n, out)) for n in share]
    started = time.perf_counter()
    for child in children:
        child.start()
    times: list[float] = []
    for _ in children:
        times.extend(out.get(timeout=timeout))
    wall = time.perf_counter() - started
    for child in children:
        child.join(timeout)
    return {"renders": renders, "processes": processes, "wall_s": round(wall, 3),
            "renders_per_s": round(renders / wall, 3),
            "median_render_ms": round(1000 * statistics.median(times), 1),
            "note": "wall includes starting each process's Playwright and Chromium"}


# ---- the platform -------------------------------------------------------------------------------


def _platform(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection

    from bench.harness import Worker
    from collections_app.demo import demos
    from collections_app.models import Collection, Project
    from emprops.accounts.services import user_provision
    from generation_app.models import Generation
    from generation_app.services.requests import generation_request
    from jobs_app.models import Job

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # the --dir's own broker
    n = args.generations
    user = user_provision(username=f"bench-p5-{uuid.uuid4().hex[:8]}",
                          free_credits=Decimal(10 * n + 100))
    demo = next(d for d in demos() if d.key == "palette-grid")
    project = Project.objects.create(user=user, name="bench")
    collection = Collection.objects.create(project=project, title=demo.title, data=demo.data)
    worker = Worker(concurrency=args.concurrency, log=settings.VAR_DIR / "bench-p5-worker.log")
    worker.start(timeout=args.timeout)
    try:
        started = time.perf_counter()
        job = generation_request(user=user, collection_id=collection.id, variables=VARIABLES,
                                 count=n, no_cache=True)
        requested = time.perf_counter() - started
        deadline = time.monotonic() + args.timeout
        done = 0
        while time.monotonic() < deadline:
            done = Generation.objects.filter(job=job, status=Generation.Status.COMPLETED).count()
            failed = Generation.objects.filter(job=job, status=Generation.Status.FAILED).count()
            if done + failed >= n:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
        if done < n:
            raise RuntimeError(f"only {done} of {n} generations completed "
                               f"within {args.timeout} s")
        stamps = sorted(t for t in Generation.objects.filter(job=job)
                        .values_list("completed_at", flat=True) if t is not None)
        job_deadline = time.monotonic() + 60
        while Job.objects.get(pk=job.id).status not in Job.FINISHED:
            if time.monotonic() > job_deadline:
                break
            time.sleep(0.05)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_column_size(data), length(data::text) FROM job "
                           "WHERE id = %s", [job.id])
            stored_size, text_size = cursor.fetchone()
    finally:
        worker.stop()
    tenth = max(2, n // 10)

    def rate(chunk: list[Any]) -> float:
        span = (chunk[-1] - chunk[0]).total_seconds()
        return round((len(chunk) - 1) / span, 3) if span > 0 else 0.0

    return {"generations": n, "concurrency": args.concurrency, "wall_s": round(wall, 3),
            "generations_per_s": round(n / wall, 3), "request_s": round(requested, 3),
            "completion_rate_first_tenth": rate(stamps[:tenth]),
            "completion_rate_last_tenth": rate(stamps[-tenth:]),
            "job_data_bytes": {"stored": stored_size, "text": text_size}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    os.environ["DEFAULT_MAX_GENERATIONS"] = str(args.generations)
    os.environ["MAX_RUNNING_GENERATIONS_PER_USER"] = str(args.generations)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   check=True)
    load = os.getloadavg()[0]
    naive = _parallel(_naive_loop, args.baseline_renders, args.concurrency, args.timeout)
    warm = _parallel(_warm_loop, args.baseline_renders, args.concurrency, args.timeout)
    platform_run = _platform(args)
    return {
        "config": {"collection": "Palette Grid (1 p5 step, 512 px)", "cpus": os.cpu_count(),
                   "python": platform.python_version(), "git": _git_rev(),
                   "load_average_at_start": round(load, 2)},
        "platform": platform_run, "naive_loop": naive, "warm_loop": warm,
        "platform_over_naive": round(platform_run["generations_per_s"] / naive["renders_per_s"], 2),
        "platform_over_warm": round(platform_run["generations_per_s"] / warm["renders_per_s"], 3),
    }


def _git_rev() -> str:
    from bench.harness import git_rev

    return git_rev()


def readme_block(result: dict[str, Any]) -> str:
    c, p, nv, w = (result["config"], result["platform"], result["naive_loop"],
                   result["warm_loop"])
    return "\n".join([
        f"Collection: {c['collection']}, {p['generations']} generations in one request, "
        f"`no_cache`. Last run: {time.strftime('%Y-%m-%d')}, commit {c['git']}, {c['cpus']} "
        f"CPUs, Python {c['python']}, worker concurrency {p['concurrency']}, load average "
        f"{c['load_average_at_start']} at the start.",
        "",
        "| side | renders | wall (s) | per second | median render (ms) |",
        "|---|---|---|---|---|",
        f"| platform (request to last output stored) | {p['generations']} | {p['wall_s']} | "
        f"{p['generations_per_s']} | - |",
        f"| naive loop (fresh context + page + p5 per render) | {nv['renders']} | "
        f"{nv['wall_s']} | {nv['renders_per_s']} | {nv['median_render_ms']} |",
        f"| warm loop (one page, new p5 instance per render) | {w['renders']} | {w['wall_s']} | "
        f"{w['renders_per_s']} | {w['median_render_ms']} |",
        "",
        f"Platform / naive loop (rate): **{result['platform_over_naive']}**; platform / warm "
        f"loop: **{result['platform_over_warm']}**. Completions per second over the first "
        f"tenth of the generations {p['completion_rate_first_tenth']}, over the last tenth "
        f"{p['completion_rate_last_tenth']}; the job's `data` ends at "
        f"{p['job_data_bytes']['text']} bytes of JSON ({p['job_data_bytes']['stored']} stored), "
        f"rewritten on every completion.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--baseline-renders", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="bound on every wait (s)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--readme", type=Path, help="update the figures in this README")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.readme:
        from bench.harness import write_block

        write_block(args.readme, "p5-collection", readme_block(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
