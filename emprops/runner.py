"""`make run`: migrate, mint demo keys, start web + worker + beat + flower, print where they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emprops.embedded import Supervisor

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def all_queues() -> str:
    """Every queue the embedded worker consumes: the fixed ones and each service plugin's."""
    out = subprocess.run(
        [PY, "-c", "import django; django.setup(); "
         "from generation_app.queues import all_queue_names; print(','.join(all_queue_names()))"],
        check=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "emprops.settings"},
    )
    return out.stdout.strip().splitlines()[-1]


def _manage(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"manage.py {' '.join(args)} failed")
    return proc.stdout


def _wait_http(port: int, host: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the web server exited during start-up; see the lines above")
        try:
            with socket.create_connection((host if host != "0.0.0.0" else "127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the web server did not listen on port {port} within {timeout:.0f} s")


def run_platform(sup: Supervisor, env: dict[str, str], stopping: Callable[[], bool]) -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    flower_port = int(os.environ.get("FLOWER_PORT", "5555"))
    content_port = int(os.environ.get("USER_CONTENT_PORT", str(port + 1)))
    env = {**env, "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL") or f"http://{host}:{port}",
           "USER_CONTENT_ORIGIN": env.get("USER_CONTENT_ORIGIN") or f"http://{host}:{content_port}"}
    os.environ.update(env)

    _manage(env, "migrate", "--noinput")
    demo = json.loads(_manage(env, "bootstrap_demo", "--json").strip().splitlines()[-1])
    # the CLI (`emprops ...` in this checkout, with no `emprops login` yet) uses this key
    key_file = Path(sup.state_dir) / "demo-api-key"
    key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(demo["api_key"] + "\n")

    seeded = json.loads(_manage(env, "seed_demo", "--json").strip().splitlines()[-1])
    queues = all_queues()
    concurrency = os.environ.get("WORKER_CONCURRENCY", str(max(4, (os.cpu_count() or 2) * 2)))
    web = sup.spawn("web", [PY, "-m", "uvicorn", "emprops.asgi:application", "--host", host,
                            "--port", str(port), "--timeout-graceful-shutdown", "2",
                            "--no-server-header", "--log-level", "warning"], cwd=ROOT,
                           env={**env, "DB_POOL": os.environ.get("DB_POOL", "1")})
    # outputs are served from their own origin, which holds no admin or gallery session
    content = sup.spawn("content", [PY, "-m", "uvicorn", "emprops.usercontent:application",
                                    "--host", host, "--port", str(content_port),
                                    "--no-server-header", "--log-level", "warning"],
                        cwd=ROOT, env=env)
    quiet = {**env, "LOG_LEVEL": os.environ.get("WORKER_LOG_LEVEL", "WARNING"),
             # `make run` runs as root on a fresh machine; Celery's banner about it is noise here
             "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges"}
    sup.spawn("worker", [PY, "-m", "celery", "-A", "emprops", "--quiet", "worker", "-Q", queues,
                         "-c", concurrency, "-O", "fair", "--loglevel", "WARNING",
                         "-n", "embedded@%h"], cwd=ROOT, env=quiet)
    sup.spawn("beat", [PY, "-m", "celery", "-A", "emprops", "--quiet", "beat", "--loglevel", "WARNING",
                       "-s", str(Path(sup.state_dir) / "celerybeat-schedule")], cwd=ROOT, env=quiet)
    sup.spawn("flower", [PY, "-m", "celery", "-A", "emprops", "flower", f"--port={flower_port}",
                         f"--address={host}", f"--basic-auth=admin:{demo['admin_password']}",
                         "--logging=error"], cwd=ROOT, env={**env, "LOG_LEVEL": "ERROR"})
    _wait_http(port, host, web)
    _wait_http(content_port, host, content)
    print(f"API: http://{host}:{port}/api")
    print(f"Docs: http://{host}:{port}/api/docs")
    print(f"Admin: http://{host}:{port}/admin (user admin, password in var/admin-password)")
    print(f"Gallery: http://{host}:{port}/ (user demo, password in var/demo-password)")
    print(f"Flower: http://{host}:{flower_port} (user admin, same password)")
    print(f"Outputs: {env['USER_CONTENT_ORIGIN']}/media/ (user content, its own origin)")
    print("Demo collections: " + ", ".join(f"{c['title']} {c['id']}"
                                           for c in seeded["collections"]))
    print(f"API key: {demo['api_key']}")
    print(f"Staff key: {demo['staff_key']}", flush=True)
    while not stopping():
        for name, proc in sup.children:
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping.", file=sys.stderr)
                return 1
        time.sleep(0.5)
    return 0
