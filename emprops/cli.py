"""`emprops` (`python -m emprops`): the API from a terminal, built on `emprops.client`.

Imports neither Django nor Celery, like the client. Results a script wants (saved file paths, ids,
JSON) go to stdout; progress and messages go to stderr; errors are one line on stderr and the exit
code says what happened (EPILOG).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from emprops.client import (
    APIError,
    AuthError,
    Client,
    ConnectionFailed,
    Event,
    InsufficientCredits,
    Job,
    JobFailed,
    NotFound,
    Output,
)
from emprops.client.client import DEFAULT_BASE_URL
from emprops.client.models import outputs_of

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
EXIT_NOT_FOUND, EXIT_CREDITS, EXIT_API, EXIT_INTERRUPTED = 4, 5, 6, 130

EPILOG = """\
exit codes:
  0    ok
  1    the job failed (or was cancelled)
  2    usage error
  3    authentication failed (401/403)
  4    not found (404)
  5    insufficient credits (402)
  6    any other API error, or the server cannot be reached
  130  interrupted (Ctrl-C)

credentials: --url/--api-key, else $EMPROPS_URL/$EMPROPS_API_KEY, else what `emprops login`
saved in ~/.config/emprops/config.json, else (in a checkout) the demo key `make run` wrote to
var/demo-api-key. Inputs: `--input k=v` sends v as a string, `--input k:=v` as JSON (numbers,
booleans, lists)."""

ROOT = Path(__file__).resolve().parent.parent


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


# ---- configuration --------------------------------------------------------------------------

def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "emprops" / "config.json"


def demo_key_path() -> Path | None:
    """The demo key `make run` writes, when this package runs from a checkout."""
    return ROOT / "var" / "demo-api-key" if (ROOT / "manage.py").exists() else None


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Usage(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def save_config(*, url: str, api_key: str) -> Path:
    """Write the config readable by its owner only (it holds a key)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "api_key": api_key}, out)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def credentials(args: argparse.Namespace) -> tuple[str, str | None]:
    config = load_config()
    url = getattr(args, "url", None) or os.environ.get("EMPROPS_URL") or config.get("url") or DEFAULT_BASE_URL
    key = getattr(args, "api_key", None) or os.environ.get("EMPROPS_API_KEY") or config.get("api_key")
    if not key:
        demo = demo_key_path()
        if demo is not None and demo.exists():
            key = demo.read_text().strip() or None
    return url, key


# ---- argument parsing -------------------------------------------------------------------------

def _pairs(values: Iterable[str] | None) -> dict[str, Any]:
    """`k=v` (a string) and `k:=v` (JSON) into a dict."""
    out: dict[str, Any] = {}
    for item in values or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.rstrip(":"):
            raise Usage(f"--input {item!r}: expected KEY=VALUE or KEY:=JSON")
        if key.endswith(":"):
            try:
                out[key[:-1]] = json.loads(raw)
            except ValueError:
                raise Usage(f"--input {item!r}: the value is not JSON") from None
        else:
            out[key] = raw
    return out


def _variables(values: Iterable[str] | None) -> list[dict[str, Any]] | None:
    """`--var who=cat,owl`: a pick variable over those strings."""
    if not values:
        return None
    out = []
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name or not raw:
            raise Usage(f"--var {item!r}: expected NAME=VALUE[,VALUE...]")
        out.append({"name": name, "type": "pick", "value_type": "strings",
                    "value": {"values": raw.split(",")}})
    return out


def build_parser() -> argparse.ArgumentParser:
    # --url/--api-key are accepted before or after the command; SUPPRESS keeps a subcommand's
    # parser from overwriting a value given before it
    common = _Parser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"API base URL (default {DEFAULT_BASE_URL})")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="an ek_ API key")
    parser = _Parser(prog="emprops", parents=[common], epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="The EmProps API from a terminal.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str) -> _Parser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

    command("login", "check the key and save URL + key to ~/.config/emprops/config.json "
                     "(asks for the key when --api-key is not given)")

    wf = command("workflows", "list or search workflows, show a workflow's form")
    wf_sub = wf.add_subparsers(dest="action", parser_class=_Parser)
    wf_sub.add_parser("list", parents=[common], help="the workflows you can use")
    p = wf_sub.add_parser("search", parents=[common], help="workflows matching a query")
    p.add_argument("query")
    p = wf_sub.add_parser("form", parents=[common], help="a workflow's inputs and an example")
    p.add_argument("name")

    p = command("quote", "what generating would cost, in credits")
    p.add_argument("workflow")
    p.add_argument("--input", action="append", metavar="K=V", help="a form value (repeatable)")
    p.add_argument("--count", type=int, default=1)

    p = command("generate", "generate from a workflow (or a saved collection), follow the job "
                            "live and save its files")
    p.add_argument("workflow", nargs="?", help="workflow name or id")
    p.add_argument("--collection", metavar="ID", help="generate from this collection instead")
    p.add_argument("--input", action="append", metavar="K=V", help="a form value (repeatable)")
    p.add_argument("--var", action="append", metavar="NAME=A,B",
                   help="a pick variable: each generation picks one of the values (repeatable)")
    p.add_argument("--count", type=int, help="how many generations")
    p.add_argument("--out", metavar="DIR", help="save each output here as <gid>-<step>-<name>")
    p.add_argument("--idempotency-key", metavar="KEY", help="sending it again returns the same job")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")

    jobs = command("jobs", "list, show, follow, cancel or retry jobs")
    jobs_sub = jobs.add_subparsers(dest="action", parser_class=_Parser)
    p = jobs_sub.add_parser("list", parents=[common], help="your jobs, newest first")
    p.add_argument("--status", choices=["pending", "processing", "completed", "failed",
                                        "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    for name, text in (("show", "a job's state and outputs"),
                       ("tail", "a job's events, live, until it is finished"),
                       ("cancel", "cancel a job"), ("retry", "re-run a job's failed generations")):
        p = jobs_sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        if name == "show":
            p.add_argument("--json", action="store_true", help="the job as JSON")
        if name == "retry":
            p.add_argument("--refresh-workflows", action="store_true",
                           help="plan against the workflows as they are now")
    return parser


# ---- commands ---------------------------------------------------------------------------------

def cmd_login(client: Client, args: argparse.Namespace, url: str, key: str | None) -> int:
    if not getattr(args, "api_key", None):
        if sys.stdin.isatty():
            key = getpass.getpass("API key (ek_...): ").strip() or key
        elif not key:
            key = sys.stdin.readline().strip() or None
    if not key:
        raise Usage("no API key: pass --api-key ek_...")
    with Client(url, api_key=key, timeout=client.timeout) as checked:
        me = checked.me()
    path = save_config(url=url, api_key=key)
    _say(f"logged in to {url} as {me.get('username')} ({me.get('available')} credits "
         f"available); saved to {path}")
    return EXIT_OK


def cmd_workflows(client: Client, args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "form":
        form = client.workflows.form(args.name)
        print(json.dumps({"workflow_id": form.workflow_id, "name": form.name,
                          "fields": [{k: f.get(k) for k in ("id", "name", "type", "is_required",
                                                            "default") if k in f}
                                     for f in form.fields],
                          "example": form.example}, indent=2))
        return EXIT_OK
    rows = client.workflows.search(args.query) if action == "search" else client.workflows.list()
    if not rows:
        _say("no workflows (built-in nodes such as `prompt` work in generate and quote too)")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "label", "type", "output", "credits", box=None)
    for w in rows:
        table.add_row(w.name, w.label, w.type, w.output_mime_type or "",
                      "" if w.cost is None else f"{w.cost:g}")
    Console(highlight=False).print(table)
    return EXIT_OK


def cmd_quote(client: Client, args: argparse.Namespace) -> int:
    quote = client.workflows.quote(args.workflow, inputs=_pairs(args.input), count=args.count)
    print(f"{quote.total_cost:g} credits for {quote.generations} generation(s) "
          f"({quote.per_generation:g} each)")
    return EXIT_OK


def cmd_generate(client: Client, args: argparse.Namespace) -> int:
    if bool(args.workflow) == bool(args.collection):
        raise Usage("give a WORKFLOW or --collection ID (one of them)")
    if args.count is not None and args.count < 1:
        raise Usage("--count must be at least 1")
    if args.collection:
        if args.input or args.var:
            raise Usage("--input and --var go with a WORKFLOW, not --collection")
        job = client.collections.generate(args.collection, count=args.count)
    else:
        job = client.generate(workflow=args.workflow, inputs=_pairs(args.input),
                              variables=_variables(args.var), count=args.count,
                              idempotency_key=args.idempotency_key)
    _say(f"job {job.id}: {job.generations or '?'} generation(s)")
    if job.waiting is None:  # the generate response has no `waiting`: the job detail does
        job.refresh()
    if job.urls.get("gallery"):
        _say(f"gallery: {job.urls['gallery']}")
    if _waiting_line(job.waiting):
        _say(str(_waiting_line(job.waiting)))
    if args.no_wait:
        print(job.id)
        return EXIT_OK
    try:
        return _follow(client, job, Path(args.out) if args.out else None)
    except KeyboardInterrupt:
        _say(f"interrupted: job {job.id} goes on; `emprops jobs cancel {job.id}` stops it")
        return EXIT_INTERRUPTED


def _follow(client: Client, job: Job, out: Path | None) -> int:
    """Show one progress bar per generation, driven by the job's events, and save each
    generation's files as soon as it completes."""
    saved: dict[str, Path] = {}

    def save(outputs: Iterable[Output]) -> None:
        if out is None:
            return
        for o in outputs:
            if o.src and o.filename not in saved:
                saved[o.filename] = client.download(o, out)
                print(saved[o.filename], flush=True)

    display = _Display(count=job.generations or 0,
                       steps=len((job.data.get("quote") or {}).get("breakdown") or []) or 1)
    with display:
        try:
            for ev in job.events():
                for gid, outputs in display.apply(ev):
                    save(outputs_of([outputs], client.base_url))
                    display.note(gid, "saved" if out is not None else "done")
        except (AuthError, NotFound):
            raise
        except APIError as exc:  # no stream (a buffering proxy, a restart): poll instead
            display.message(f"event stream unavailable ({exc.message}); polling")
            try:
                job.wait()
            except JobFailed:
                pass
    job.refresh()
    save(job.outputs)
    if job.status != "completed":
        _say(f"job {job.id} {job.status}" + (f": {job.error_message}" if job.error_message else ""))
        return EXIT_JOB_FAILED
    where = f" in {out}" if out is not None else ""
    _say(f"job {job.id} completed: {len(job.outputs)} output(s), {len(saved)} file(s) saved{where}")
    if out is None:
        for o in job.outputs:
            print(o.src or json.dumps(o.data))
    return EXIT_OK


class _Display:
    """Per-generation progress on stderr: rich bars on a terminal, plain lines otherwise."""

    def __init__(self, *, count: int, steps: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.steps = steps
        self.done: dict[int, int] = {}
        self.progress: Any = None
        self.tasks: dict[int, Any] = {}
        self.count = count

    def __enter__(self) -> _Display:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self.progress = Progress(TextColumn("generation {task.fields[gid]:>3}"), BarColumn(),
                                     TaskProgressColumn(), TextColumn("{task.fields[state]}"),
                                     console=self.console,
                                     # saved paths go to stdout: through the bars on a
                                     # terminal, straight into a file or pipe otherwise
                                     redirect_stdout=sys.stdout.isatty())
            self.progress.start()
            for gid in range(self.count):
                self._task(gid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _task(self, gid: int) -> Any:
        if gid not in self.tasks:
            self.tasks[gid] = self.progress.add_task("", total=self.steps, gid=gid,
                                                     state="waiting")
        return self.tasks[gid]

    def note(self, gid: int, state: str, *, completed: int | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self._task(gid), state=state, completed=completed)
        elif state in ("saved", "done") or state.startswith("failed"):
            self.console.print(f"generation {gid}: {state}", markup=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)

    def apply(self, ev: Event) -> list[tuple[int, Mapping[str, Any]]]:
        """Reflect one event; returns the (gid, GenerationOutput) of generations it completed."""
        rows = ev.data if ev.event == "history_init" else [ev.data] if ev.event == "job_history" \
            else []
        if ev.event == "job_update" and isinstance(ev.data, dict) and ev.data.get("status") in (
                "pending", "cancelled"):
            for waiting in range(self.count):
                if self.done.get(waiting, 0) < self.steps:
                    self.note(waiting, "queued" if ev.data["status"] == "pending" else "cancelled")
        completed: list[tuple[int, Mapping[str, Any]]] = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            data = row.get("data") or {}
            gid, message = data.get("gid"), str(row.get("message") or "")
            if not isinstance(gid, int):
                continue
            if message == "Node started":
                self.note(gid, f"running {data.get('node', '')}")
            elif message.startswith("Node ") and message.endswith(" completed"):
                self.done[gid] = min(self.steps, self.done.get(gid, 0) + 1)
                self.note(gid, "running", completed=self.done[gid])
            elif row.get("status") == "completed" and isinstance(data.get("outputs"), dict):
                self.done[gid] = self.steps
                self.note(gid, "completed", completed=self.steps)
                completed.append((gid, data["outputs"]))
            elif row.get("status") == "failed":
                self.note(gid, f"failed: {data.get('error') or message}")
        return completed


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "list":
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "status", "progress", "created", "name", box=None)
        for job in client.jobs.list(status=args.status if args.action else None,
                                    limit=args.limit if args.action else 20):
            table.add_row(job.id, job.status, f"{job.progress}%", job.created_at or "", job.name)
        Console(highlight=False, width=200).print(table)
        return EXIT_OK
    if action == "show":
        job = client.jobs.get(args.id)
        if args.json:
            print(json.dumps({"id": job.id, "status": job.status, "progress": job.progress,
                              "name": job.name, "error_message": job.error_message,
                              "created_at": job.created_at, "completed_at": job.completed_at,
                              "data": job.data}, indent=2))
        else:
            print(f"{job.id}  {job.status}  {job.progress}%  {job.name}")
            if _waiting_line(job.waiting):
                print(_waiting_line(job.waiting))
            if job.error_message:
                print(f"error: {job.error_message}")
            for o in job.outputs:
                print(f"  generation {o.generation_id} step {o.step_id} ({o.node_name}): "
                      f"{o.src or json.dumps(o.data)}")
        return EXIT_OK
    if action == "tail":
        job = Job(id=args.id, status="", progress=0, _client=client)
        snapshot: Event | None = None
        for i, ev in enumerate(job.events()):
            if i == 0 and ev.event == "job_update":
                snapshot = ev  # the state now: shown after the history that led to it
                continue
            _print_event(ev)
            if snapshot is not None and ev.event == "history_init":
                _print_event(snapshot)
                snapshot = None
        if snapshot is not None:
            _print_event(snapshot)
        return EXIT_OK if job.status == "completed" else EXIT_JOB_FAILED
    if action == "cancel":
        job = client.jobs.cancel(args.id)
    else:
        job = client.jobs.retry(args.id, refresh_workflows=args.refresh_workflows)
    print(f"{job.id}  {job.status}")
    return EXIT_OK


def _waiting_line(waiting: Mapping[str, Any] | None) -> str | None:
    """`waiting: position N, about M s (queued)` for a job that waits, else None."""
    if not isinstance(waiting, Mapping) or not waiting.get("state"):
        return None
    parts = []
    if waiting.get("position") is not None:
        parts.append(f"position {waiting['position']}")
    if waiting.get("estimate_seconds") is not None:
        parts.append(f"about {float(waiting['estimate_seconds']):.0f} s")
    when = waiting.get("run_at") or waiting.get("retry_at")
    if when:
        parts.append(f"at {when}")
    state = str(waiting["state"]).replace("_", " ")
    return f"waiting: {', '.join(parts)} ({state})" if parts else f"waiting ({state})"


def _print_event(ev: Event) -> None:
    if ev.event == "job_update" and isinstance(ev.data, dict):
        error = f"  {ev.data['error_message']}" if ev.data.get("error_message") else ""
        print(f"[{ev.id}] job {ev.data.get('status')} {ev.data.get('progress')}%{error}",
              flush=True)
        return
    rows = ev.data if ev.event == "history_init" else [ev.data]
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict):
            gid = (row.get("data") or {}).get("gid")
            where = f" (generation {gid})" if gid is not None else ""
            print(f"[{ev.id}] {row.get('status')}: {row.get('message')}{where}", flush=True)


# ---- entry point ------------------------------------------------------------------------------

def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _fail(text: str, code: int) -> int:
    _say("emprops: " + " ".join(text.split()))  # one line, always
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        url, key = credentials(args)
        if args.command != "login" and not key:
            raise Usage("no API key: run `emprops login`, pass --api-key, or set EMPROPS_API_KEY")
        with Client(url, api_key=key) as client:
            if args.command == "login":
                return cmd_login(client, args, url, key)
            if args.command == "workflows":
                return cmd_workflows(client, args)
            if args.command == "quote":
                return cmd_quote(client, args)
            if args.command == "generate":
                return cmd_generate(client, args)
            return cmd_jobs(client, args)
    except Usage as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except ConnectionFailed as exc:
        if exc.unreachable:
            return _fail(f"cannot reach {url}: is `make run` running?", EXIT_API)
        return _fail(str(exc), EXIT_API)
    except AuthError as exc:
        return _fail(f"authentication failed: {exc} (check the key, or run `emprops login`)",
                     EXIT_AUTH)
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except InsufficientCredits as exc:
        if exc.required is None:
            return _fail(str(exc), EXIT_CREDITS)
        return _fail(f"{exc.message} (needs {exc.required} credits, {exc.available} available; "
                     f"request {exc.request_id})", EXIT_CREDITS)
    except APIError as exc:
        detail = f" {json.dumps(exc.details)}" if exc.details else ""
        return _fail(f"{exc}{detail}", EXIT_API)
    except TimeoutError as exc:
        return _fail(str(exc), EXIT_API)
    except OSError as exc:  # writing a file, reading the config
        return _fail(f"{exc}", EXIT_API)
