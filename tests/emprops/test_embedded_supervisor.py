"""The embedded supervisor's stale-PID cleanup: orphans of a dead supervisor are killed, the
services of a live one are left alone."""

import json
import subprocess
import sys

import pytest

from emprops.embedded import Supervisor


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_kill_stale_refuses_a_dir_whose_supervisor_is_alive(tmp_path):
    # given: pids.json written by a supervisor that is still running, naming its child
    owner, child = _sleeper(), _sleeper()
    try:
        (tmp_path / "pids.json").write_text(json.dumps({"supervisor": owner.pid,
                                                        "children": [child.pid]}))
        # when
        with pytest.raises(SystemExit, match=f"running supervisor \\(PID {owner.pid}\\)"):
            Supervisor(tmp_path).kill_stale()
        # then: the live platform's child and its record are untouched
        assert child.poll() is None
        assert json.loads((tmp_path / "pids.json").read_text())["children"] == [child.pid]
    finally:
        for proc in (owner, child):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("record", ["dict", "legacy list"])
def test_kill_stale_kills_the_orphans_of_a_dead_supervisor(tmp_path, record):
    # given: a supervisor that exited and left a child behind
    owner, child = _sleeper(), _sleeper()
    owner.kill()
    owner.wait()
    data = ({"supervisor": owner.pid, "children": [child.pid]} if record == "dict"
            else [child.pid])
    (tmp_path / "pids.json").write_text(json.dumps(data))
    try:
        # when
        Supervisor(tmp_path).kill_stale()
        # then
        assert child.wait(timeout=5) == -9
        assert not (tmp_path / "pids.json").exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
