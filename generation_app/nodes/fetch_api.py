"""`fetch_api`: a step backed by a third-party HTTP API (SPEC sections 4 and 5).

The workflow's `data` holds the request template (staff-defined):

    body    the JSON body, into which `inputs` ([{"id", "pathJq", "is_required"?}]) write the
            step's form values (`seed` falls back to the generation seed; form defaults fill
            missing values)
    api     {"url", "method", "headers", "successResponseCode" (int or list),
             "fetchType": "wait" | "polling",
             "wait": {"outputExprJq"}            (or "outputExprJq" beside fetchType)
             "polling": {"method", "url" with {param} placeholders, "params": {name: {"exprJq"}},
                         "headers"?, "continueWhenExpr", "stopWhenExpr", "outputExprJq",
                         "successResponseCode", "timeout" (s), "interval"? (s)}}

`{{NAME}}` in a header value is the user's stored secret for this workflow, else the server's
environment variable NAME. The output expression gives a URL, which is downloaded and stored as
`<workflow name>.<ext>` (or, for a text workflow, the text itself).

Every request (the call, the polls, the download) goes through the SSRF guard: the URLs come from
staff templates filled with third-party answers, so only public addresses and the staff
allow-list (`OUTBOUND_ALLOW_HOSTS`) are reachable. Transient failures (connection errors,
timeouts, 429 and 5xx) are retryable; other answers fail the step at once.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from emprops import jqbox, sandbox
from emprops.netguard import Resolver, UnsafeURL, safe_client
from generation_app.nodes.base import Node, NodeError, NodeOutput, RunContext, StoredFile

REQUEST_TIMEOUT_S = 60.0
# The existing platform waits 10 s between polls; a workflow may ask for less with `interval`.
DEFAULT_POLL_INTERVAL_S = 10.0
MIN_POLL_INTERVAL_S = 0.05
DEFAULT_POLL_TIMEOUT_S = 600.0
# Consecutive transient poll failures tolerated before the step is retried from the start
# (a retry submits the third-party job again, so a single blip should not cause one).
MAX_TRANSIENT_POLL_ERRORS = 3
CONDITION_TIMEOUT_S = 1.0
MAX_JSON_BYTES = 10 * 1024 * 1024
MAX_OUTPUT_BYTES = 200 * 1024 * 1024
SNIPPET_CHARS = 200
ANY_2XX: frozenset[int] = frozenset(range(200, 300))

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_PREFERRED_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "text/plain": ".txt",
    "text/html": ".html",
    "application/json": ".json",
}
_GENERIC_MIME_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


class FetchApiNode(Node):
    """Calls the workflow's API, waits or polls for the result, and stores the output."""

    name: ClassVar[str] = "fetch_api"
    version: ClassVar[str] = "1"
    # an outside service: served from the cache only when its workflow says `"cacheable": true`
    deterministic: ClassVar[bool] = False

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        sleep: Callable[[float], None] = time.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # `resolver` and `environ` stand in for DNS and os.environ in tests.
        self.resolver = resolver
        self.sleep = sleep
        self.environ = environ

    def run(self, payload: Mapping[str, Any], ctx: RunContext) -> NodeOutput:
        workflow = ctx.workflow
        if not workflow:
            raise NodeError("fetch_api ran without its workflow", failure_type="INTERNAL")
        wf_name = str(workflow.get("name") or "fetch_api")
        data = workflow.get("data") or {}
        api = data.get("api")
        if not isinstance(api, Mapping) or not api.get("url"):
            raise NodeError(f"Workflow {wf_name} has no API to call (data.api.url)")
        fetch_type = str(api.get("fetchType") or "wait")
        if fetch_type not in ("wait", "polling"):
            raise NodeError(f"Workflow {wf_name}: unknown fetchType {fetch_type!r}")

        values = form_values(payload, data.get("form"))
        body = fill_template(data.get("body"), data.get("inputs"), values, seed=ctx.seed)
        headers, secrets = fill_headers(
            api.get("headers"),
            user_secret=ctx.user_secret,
            environ=self.environ,
            workflow_name=wf_name,
        )
        with Upstream(
            allow_hosts=ctx.config.get("OUTBOUND_ALLOW_HOSTS") or (),
            resolver=self.resolver,
            secrets=[*secrets, *headers.values()],
        ) as http:
            ctx.report_progress(0.05)
            method = str(api.get("method") or "POST").upper()
            submit_headers = dict(headers)
            if ctx.run_key and not any(k.lower() == "idempotency-key" for k in headers):
                # stable across redeliveries: APIs that honour it return the first job, not a new one
                submit_headers["Idempotency-Key"] = ctx.run_key
            response = http.send(
                method,
                str(api["url"]),
                headers=submit_headers,
                body=body if method not in ("GET", "HEAD") else None,
                success=success_codes(api.get("successResponseCode"), ANY_2XX),
                what="API request",
            )
            answer = response.json_body()
            ctx.report_progress(0.2)
            if fetch_type == "polling":
                result = self._poll(api, answer, headers, http, ctx, wf_name)
                polling = api.get("polling") or {}
                expression = polling.get("outputExprJq") or _wait_expression(api)
            else:
                result = answer
                expression = _wait_expression(api)
            if not expression:
                raise NodeError(f"Workflow {wf_name} has no outputExprJq")
            value = jq_first(str(expression), result, what="outputExprJq")
            return self._output(value, workflow, http, ctx)

    # ---- polling -------------------------------------------------------------------------------

    def _poll(
        self,
        api: Mapping[str, Any],
        first: Any,
        headers: Mapping[str, str],
        http: Upstream,
        ctx: RunContext,
        wf_name: str,
    ) -> Any:
        """Poll until `continueWhenExpr` is false; the last poll's JSON. Raises on stop/timeout."""
        polling = api.get("polling")
        if not isinstance(polling, Mapping) or not polling.get("url"):
            raise NodeError(f"Workflow {wf_name} polls but has no data.api.polling.url")
        params = {
            str(name): jq_first(str((spec or {}).get("exprJq") or ""), first, what=f"param {name}")
            for name, spec in (polling.get("params") or {}).items()
        }
        url = polling_url(str(polling["url"]), params)
        poll_headers, secrets = fill_headers(
            polling.get("headers"),
            user_secret=ctx.user_secret,
            environ=self.environ,
            workflow_name=wf_name,
        )
        http.secrets.extend([*secrets, *poll_headers.values()])
        poll_headers.update(headers)  # as on the existing platform: the API's headers win
        method = str(polling.get("method") or "GET").upper()
        success = success_codes(polling.get("successResponseCode"), frozenset({200}))
        timeout = _positive(polling.get("timeout"), DEFAULT_POLL_TIMEOUT_S)
        interval = max(
            MIN_POLL_INTERVAL_S, _positive(polling.get("interval"), DEFAULT_POLL_INTERVAL_S)
        )
        continue_expr = polling.get("continueWhenExpr")
        stop_expr = polling.get("stopWhenExpr")
        output_expr = polling.get("outputExprJq") or _wait_expression(api)
        started = time.monotonic()
        deadline = started + timeout
        transient = 0
        while True:
            self._wait(interval, deadline, timeout, ctx)
            try:
                response = http.send(
                    method,
                    url,
                    headers=poll_headers,
                    body=None,
                    success=success,
                    what="polling request",
                )
                data = response.json_body()
            except NodeError as exc:
                if not exc.retryable or transient >= MAX_TRANSIENT_POLL_ERRORS:
                    raise
                transient += 1
                continue
            transient = 0
            if stop_expr and _condition(str(stop_expr), data, "stopWhenExpr"):
                raise NodeError(
                    f"Polling stopped (the API answered: {http.snippet(_json_text(data))})",
                    failure_type="UPSTREAM_ERROR",
                )
            if continue_expr:
                keep_going = _condition(str(continue_expr), data, "continueWhenExpr")
            else:  # without a continue condition, poll until the output is there
                keep_going = output_expr is not None and jq_first(
                    str(output_expr), data, what="outputExprJq"
                ) in (None, "")
            if not keep_going:
                return data
            elapsed = time.monotonic() - started
            ctx.report_progress(0.2 + 0.7 * min(1.0, elapsed / timeout))

    def _wait(self, seconds: float, deadline: float, timeout: float, ctx: RunContext) -> None:
        """Sleep before the next poll, watching for cancellation and the polling deadline."""
        end = time.monotonic() + seconds
        while True:
            if ctx.is_cancelled():
                raise NodeError("Cancelled", failure_type="INTERNAL")
            now = time.monotonic()
            if now >= deadline:
                raise NodeError(
                    f"Polling did not finish within {timeout:g} s", failure_type="TIMEOUT"
                )
            if now >= end:
                return
            self.sleep(min(end - now, deadline - now, 0.1))

    # ---- the output ----------------------------------------------------------------------------

    def _output(
        self, value: Any, workflow: Mapping[str, Any], http: Upstream, ctx: RunContext
    ) -> NodeOutput:
        name = safe_filename(str(workflow.get("name") or "fetch_api"))
        declared = str(workflow.get("output_mime_type") or "")
        if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
            url = value.strip()
            ctx.report_progress(0.9)
            response = http.download(url, what="output download")
            mime = response.mime_type
            if mime in _GENERIC_MIME_TYPES:
                mime = (
                    declared
                    or mimetypes.guess_type(urlsplit(url).path)[0]
                    or "application/octet-stream"
                )
            filename = name + extension_for(mime, url)
            stored = StoredFile(filename=filename, content=response.content, mime_type=mime)
            return NodeOutput(mime_type=mime, files=[stored], src_file=filename)
        if declared.startswith("text/") and value not in (None, ""):
            text = value if isinstance(value, str) else _json_text(value)
            filename = name + extension_for(declared, "")
            stored = StoredFile(filename=filename, content=text.encode(), mime_type=declared)
            return NodeOutput(mime_type=declared, data=text, files=[stored], src_file=filename)
        if value in (None, ""):
            raise NodeError(
                "The API's answer has no output (outputExprJq gave nothing)",
                failure_type="UPSTREAM_ERROR",
            )
        raise NodeError(
            f"The API's output is not a URL: {http.snippet(_json_text(value))}",
            failure_type="UPSTREAM_ERROR",
        )


# ---- HTTP -------------------------------------------------------------------------------------


@dataclass
class UpstreamResponse:
    status_code: int
    content: bytes
    mime_type: str

    def json_body(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError:
            raise NodeError(
                "The API answered with a body that is not JSON", failure_type="UPSTREAM_ERROR"
            ) from None


@dataclass
class Upstream:
    """One node run's requests to third-party URLs, all vetted by the SSRF guard.

    Errors become NodeErrors whose messages never carry `secrets` (header values): a snippet of
    an upstream body is redacted first, since some APIs echo the request's headers back.
    """

    allow_hosts: Collection[str] = ()
    resolver: Resolver | None = None
    secrets: list[str] = field(default_factory=list)
    timeout: float = REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        self.client = safe_client(
            allow_hosts=list(self.allow_hosts), resolver=self.resolver, timeout=self.timeout
        )

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def download(self, url: str, *, what: str) -> UpstreamResponse:
        """GET an output file, without the API's headers: it may live on another host (a CDN)."""
        return self.send("GET", url, headers={}, body=None, success=ANY_2XX, what=what,
                         limit=MAX_OUTPUT_BYTES)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Any,
        success: Collection[int],
        what: str,
        limit: int = MAX_JSON_BYTES,
    ) -> UpstreamResponse:
        """The response to one request if its status is in `success`, else a NodeError."""
        kwargs: dict[str, Any] = {"headers": dict(headers)}
        if body is not None:
            kwargs["json"] = body
        try:
            with self.client.stream(method, url, **kwargs) as response:
                content = _read_capped(response, limit, what)
                status = response.status_code
                mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
        except UnsafeURL as exc:
            host = f" for host {exc.host!r}" if exc.host else ""
            raise NodeError(
                f"The {what} was refused{host}: {exc.reason}", failure_type="VALIDATION_ERROR"
            ) from None
        except httpx.TimeoutException:
            raise NodeError(
                f"The {what} timed out", retryable=True, failure_type="TIMEOUT"
            ) from None
        except httpx.TooManyRedirects:
            raise NodeError(
                f"The {what} was redirected too many times", failure_type="UPSTREAM_ERROR"
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError):
            raise NodeError(
                f"The {what} could not be made: the URL or a header is not valid",
                failure_type="VALIDATION_ERROR",
            ) from None
        except httpx.HTTPError as exc:
            raise NodeError(f"The {what} failed: {type(exc).__name__}", retryable=True) from None
        if status not in success:
            snippet = self.snippet(content.decode("utf-8", "replace"))
            message = f"The {what} got HTTP {status}" + (f": {snippet}" if snippet else "")
            if status == 429 or status >= 500:
                raise NodeError(message, retryable=True)
            raise NodeError(message, failure_type="UPSTREAM_ERROR")
        return UpstreamResponse(status_code=status, content=content, mime_type=mime)

    def snippet(self, text: str) -> str:
        """A short, single-line excerpt of an upstream text with every secret redacted."""
        return redact(" ".join(text.split()), self.secrets)[:SNIPPET_CHARS]


def _read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise NodeError(
                f"The {what} answered with more than {limit} bytes", failure_type="UPSTREAM_ERROR"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (and each secret's bearer token) replaced by [redacted]."""
    pieces: set[str] = set()
    for secret in secrets:
        for piece in (secret, *secret.split()):
            if len(piece) >= 6:
                pieces.add(piece)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "[redacted]")
    return text


def success_codes(value: Any, default: frozenset[int]) -> frozenset[int]:
    """The status codes a template accepts: an int, a list of ints, or `default` when unset."""
    if value in (None, "", []):
        return default
    items = value if isinstance(value, list | tuple) else [value]
    try:
        return frozenset(int(item) for item in items)
    except (TypeError, ValueError):
        raise NodeError(f"successResponseCode must be an integer or a list: {value!r}") from None


# ---- templates --------------------------------------------------------------------------------


def form_values(payload: Mapping[str, Any], form: Any) -> dict[str, Any]:
    """The step's values, with the form's defaults where a value is missing (None or "")."""
    values = dict(payload)
    fields = form.get("fields") if isinstance(form, Mapping) else None
    for form_field in fields or []:
        if not isinstance(form_field, Mapping) or "id" not in form_field:
            continue
        field_id = str(form_field["id"])
        if _missing(values.get(field_id)) and form_field.get("default") is not None:
            values[field_id] = form_field["default"]
    return values


def fill_template(template: Any, inputs: Any, values: Mapping[str, Any], *, seed: int) -> Any:
    """A copy of `template` with each input's value assigned at its `pathJq`.

    `seed` falls back to the generation seed; an input without a value keeps the template's own
    value, unless it `is_required` (then all missing ones are listed in one NodeError). A string
    written over a number or boolean literal takes that literal's type.
    """
    document = copy.deepcopy(template) if template is not None else {}
    if inputs in (None, ""):
        return document
    if not isinstance(inputs, list):
        raise NodeError("The workflow's inputs must be a list of {id, pathJq}")
    missing: list[str] = []
    for spec in inputs:
        if not isinstance(spec, Mapping) or not spec.get("id") or not spec.get("pathJq"):
            raise NodeError(f"Each workflow input needs an id and a pathJq: {spec!r}")
        field_id, path = str(spec["id"]), str(spec["pathJq"])
        value = values.get(field_id)
        if field_id == "seed" and _missing(value):
            value = seed
        if _missing(value) and spec.get("default") is not None:
            value = spec["default"]
        if _missing(value):
            if spec.get("is_required"):
                missing.append(field_id)
            continue
        current = _first_or_none(path, document)
        document = _assign(path, document, _coerce(value, current))
    if missing:
        raise NodeError("Missing required fields: " + ", ".join(missing))
    return document


# The platform's own credentials are never sent to a third party, whatever a template names.
_PLATFORM_SECRETS = frozenset({
    "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "JWT_SIGNING_KEY", "SECRETS_ENCRYPTION_KEY",
    "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "CELERY_BROKER_URL",
})


def _platform_secret(name: str) -> bool:
    upper = name.upper()
    return upper in _PLATFORM_SECRETS or upper.startswith(("DJANGO_", "EMPROPS_", "PG", "DB_"))


def fill_headers(
    headers: Any,
    *,
    user_secret: str | None,
    environ: Mapping[str, str] | None,
    workflow_name: str,
) -> tuple[dict[str, str], list[str]]:
    """(headers with `{{NAME}}` filled, the secret values used). The values never appear in errors.

    A placeholder takes the user's secret for this workflow, else the environment variable NAME.
    """
    if headers in (None, ""):
        return {}, []
    if not isinstance(headers, Mapping):
        raise NodeError("The API's headers must be an object")
    env = os.environ if environ is None else environ
    secrets: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        from_env = "" if _platform_secret(variable) else env.get(variable, "").strip()
        secret = (user_secret or "").strip() or from_env
        if not secret:
            raise NodeError(
                f"The API key {variable} is not set: store your key for workflow "
                f"'{workflow_name}' (PUT /api/secrets/{workflow_name}), or ask staff to "
                f"set {variable} on the server"
            )
        secrets.append(secret)
        return secret

    filled = {str(name): _PLACEHOLDER.sub(substitute, str(raw)) for name, raw in headers.items()}
    return filled, secrets


def polling_url(template: str, params: Mapping[str, Any]) -> str:
    """The polling URL with each `{name}` filled from the first answer.

    A value that is the whole URL's start (e.g. `{url}` from `urls.get`) goes in as it is;
    anywhere else it is percent-encoded, so an id cannot reach another path or host.
    """
    url = template
    for name, value in params.items():
        placeholder = "{" + name + "}"
        text = "" if value is None else value if isinstance(value, str) else _json_text(value)
        if url.startswith(placeholder):
            url = text + url[len(placeholder) :]
        url = url.replace(placeholder, quote(text, safe=""))
    return url


def jq_first(expression: str, data: Any, *, what: str) -> Any:
    """The first result of a staff jq expression over `data` (None when there is none)."""
    if not expression.strip():
        raise NodeError(f"The workflow's {what} has no jq expression")
    try:
        return jqbox.first(expression, data)
    except jqbox.JqEmpty:
        return None
    except jqbox.JqProgramError as exc:
        raise NodeError(f"The workflow's {what} is not valid jq ({expression}): {exc}") from None
    except jqbox.JqLimitError as exc:
        raise NodeError(f"The workflow's {what} ({expression}) {exc}",
                        failure_type="VALIDATION_ERROR") from None
    except jqbox.JqUnavailable as exc:
        raise NodeError(str(exc), retryable=True) from None
    except jqbox.JqError as exc:
        raise NodeError(f"The workflow's {what} ({expression}) failed: {exc}",
                        failure_type="UPSTREAM_ERROR") from None


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "output"


def extension_for(mime: str, url: str) -> str:
    if mime in _PREFERRED_EXTENSIONS:
        return _PREFERRED_EXTENSIONS[mime]
    guessed = mimetypes.guess_extension(mime) if mime else None
    if guessed:
        return guessed
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower() if url else ""
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"


# ---- helpers ----------------------------------------------------------------------------------


def _assign(path: str, document: Any, value: Any) -> Any:
    # The value travels as a jq variable, never as program text.
    try:
        return jqbox.first(f"{path} = $value", document, args={"value": value})
    except jqbox.JqProgramError as exc:
        raise NodeError(f"The workflow input path {path} is not a jq path: {exc}") from None
    except jqbox.JqUnavailable as exc:
        raise NodeError(str(exc), retryable=True) from None
    except jqbox.JqError as exc:
        reason = "no result" if isinstance(exc, jqbox.JqEmpty) else str(exc)
        raise NodeError(f"The workflow input path {path} cannot be assigned: {reason}") from None


def _first_or_none(path: str, document: Any) -> Any:
    try:
        return jqbox.first(path, document)
    except jqbox.JqUnavailable as exc:
        raise NodeError(str(exc), retryable=True) from None
    except jqbox.JqError:
        return None


def _coerce(value: Any, current: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if isinstance(current, bool):
        return text.lower() in ("true", "1", "yes", "on")
    if isinstance(current, int | float):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                continue
    return value


def _condition(expression: str, data: Any, what: str) -> bool:
    try:
        return sandbox.eval_condition(expression, data, timeout_s=CONDITION_TIMEOUT_S)
    except sandbox.SandboxCrash:
        raise NodeError(
            f"The {what} could not be evaluated (sandbox unavailable)",
            retryable=True,
            failure_type="INTERNAL",
        ) from None
    except sandbox.SandboxError as exc:
        raise NodeError(f"The workflow's {what} failed ({exc.kind}): {str(exc)[:200]}") from None
    except (TypeError, ValueError):
        raise NodeError(
            f"The poll answer cannot be given to {what}: not JSON", failure_type="UPSTREAM_ERROR"
        ) from None


def _wait_expression(api: Mapping[str, Any]) -> str | None:
    wait = api.get("wait")
    if isinstance(wait, Mapping) and wait.get("outputExprJq"):
        return str(wait["outputExprJq"])
    expression = api.get("outputExprJq")
    return str(expression) if expression else None


def _positive(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


def _missing(value: Any) -> bool:
    return value is None or value == ""


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
