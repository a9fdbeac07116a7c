"""The CLI (`python -m emprops`, emprops/cli.py) against a real uvicorn server and Celery worker:
as a subprocess where the proof is the process (exit code, stdout, a one-line stderr), in process
for the rest."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from emprops import cli
from emprops.accounts.models import CreditsBalance
from emprops.accounts.services import api_key_create
from jobs_app.models import Job
from tests.workers import ROOT, free_port


def live(test: Callable[..., None]) -> Callable[..., None]:
    """Runs against the module's uvicorn server and Celery worker."""
    marked = pytest.mark.usefixtures("transactional_db")(test)
    return pytest.mark.server(pytest.mark.worker(pytest.mark.timeout(120)(marked)))


@pytest.fixture
def no_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """No saved login, no key in the environment, no checkout's demo key."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EMPROPS_URL", raising=False)
    monkeypatch.delenv("EMPROPS_API_KEY", raising=False)
    monkeypatch.setattr(cli, "ROOT", tmp_path / "checkout")
    return tmp_path


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emprops", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=90, env={**os.environ, **env})


@live
def test_generate_follows_the_job_and_saves_each_file(live_platform, make_user, tmp_path):
    alice = make_user("alice")
    _, key = api_key_create(user=alice, name="cli")
    env = {"EMPROPS_URL": live_platform.url, "EMPROPS_API_KEY": key,
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = tmp_path / "out"

    proc = _run("generate", "prompt", "--input", "prompt=hello", "--count", "2", "--out", str(out),
                env=env)

    assert proc.returncode == 0, proc.stderr
    job = Job.objects.get(user=alice)
    assert job.status == "completed"
    step = job.data["outputs"][0]["steps"][0]["id"]
    names = [f"0-{step}-prompt.txt", f"1-{step}-prompt.txt"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert [(out / n).read_text() for n in names] == ["hello", "hello"]
    assert sorted(proc.stdout.splitlines()) == [str(out / n) for n in names]
    assert f"job {job.id} completed: 2 output(s), 2 file(s) saved in {out}" in proc.stderr
    assert f"gallery: {live_platform.url}/c/{job.data['collectionId']}?g=" in proc.stderr
    assert "Traceback" not in proc.stderr

    # the same job, followed again from the terminal: its events, then exit 0
    tail = _run("jobs", "tail", str(job.id), env=env)
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines()[-1].endswith("job completed 100%")


@live
def test_a_bad_key_exits_3_with_one_line(live_platform, tmp_path):
    proc = _run("jobs", "list", env={"EMPROPS_URL": live_platform.url,
                                     "EMPROPS_API_KEY": "ek_" + "x" * 40,
                                     "XDG_CONFIG_HOME": str(tmp_path / "config")})

    assert proc.returncode == 3
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("emprops: authentication failed: ")


@live
def test_login_saves_the_key_for_the_owner_only_and_later_commands_use_it(
        live_platform, make_user, no_config, capsys):
    alice = make_user("alice")
    _, key = api_key_create(user=alice, name="cli")

    code = cli.main(["login", "--url", live_platform.url, "--api-key", key])

    assert code == 0, capsys.readouterr().err
    path = no_config / "config" / "emprops" / "config.json"
    assert json.loads(path.read_text()) == {"url": live_platform.url, "api_key": key}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "as alice" in capsys.readouterr().err
    assert cli.main(["jobs", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == [
        "id", "status", "progress", "created", "name"]


@live
def test_without_a_login_a_checkout_uses_the_demo_key_make_run_wrote(
        live_platform, make_user, no_config, capsys):
    _, key = api_key_create(user=make_user("demo"), name="demo")
    checkout = no_config / "checkout"
    (checkout / "var").mkdir(parents=True)
    (checkout / "manage.py").write_text("")
    (checkout / "var" / "demo-api-key").write_text(key + "\n")

    assert cli.main(["--url", live_platform.url, "workflows", "search", "nothing"]) == 0
    assert capsys.readouterr().err == (
        "no workflows (built-in nodes such as `prompt` work in generate and quote too)\n")


@live
def test_exit_codes_say_what_happened(live_platform, make_user, no_config, capsys):
    alice = make_user("alice")
    _, key = api_key_create(user=alice, name="cli")
    base = ["--url", live_platform.url, "--api-key", key]

    assert cli.main([*base, "jobs", "show", str(uuid.uuid4())]) == 4
    assert re.fullmatch(r"emprops: Job not found\. \(HTTP 404, request [\w-]+\)\n",
                        capsys.readouterr().err)

    CreditsBalance.objects.filter(user=alice).update(balance=0)
    assert cli.main([*base, "generate", "prompt", "--input", "prompt=x", "--count", "3"]) == 5
    assert re.fullmatch(r"emprops: .+ \(needs 3\.0000 credits, 0\.0000 available; "
                        r"request [\w-]+\)\n", capsys.readouterr().err)

    assert cli.main([*base, "generate"]) == 2
    assert cli.main([*base, "generate", "prompt", "--input", "novalue"]) == 2
    assert cli.main(["jobs", "list"]) == 2  # no key anywhere
    assert cli.main(["jobs", "nonsense"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "emprops: error: give a WORKFLOW or --collection ID (one of them)",
        "emprops: error: --input 'novalue': expected KEY=VALUE or KEY:=JSON",
        "emprops: error: no API key: run `emprops login`, pass --api-key, or set EMPROPS_API_KEY",
        "emprops jobs: error: argument action: invalid choice: 'nonsense' (choose from 'list', "
        "'show', 'tail', 'cancel', 'retry') (see emprops jobs --help)",
    ]

    gone = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["--url", gone, "--api-key", key, "jobs", "list"]) == 6
    assert capsys.readouterr().err == f"emprops: cannot reach {gone}: is `make run` running?\n"
    assert not Job.objects.exists()


def test_help_documents_the_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in ("0    ok", "1    the job failed", "2    usage error", "3    authentication",
                 "4    not found", "5    insufficient credits", "6    any other API error",
                 "130  interrupted"):
        assert line in text


@pytest.mark.parametrize(("waiting", "line"), [
    ({"state": "queued", "position": 3, "estimate_seconds": 12.4},
     "waiting: position 3, about 12 s (queued)"),
    ({"state": "waiting_for_slot", "position": 0, "estimate_seconds": None},
     "waiting: position 0 (waiting for slot)"),
    ({"state": "scheduled", "position": None, "estimate_seconds": 60.0,
      "run_at": "2030-01-01T00:00:00Z"},
     "waiting: about 60 s, at 2030-01-01T00:00:00Z (scheduled)"),
    ({"state": None, "position": None, "estimate_seconds": None}, None),
    (None, None),
])
def test_the_waiting_line_says_the_place_in_line_and_the_estimate(waiting, line):
    assert cli._waiting_line(waiting) == line
