"""ComfyUI servers (staff-registered): register one, check that it answers.

A registered server is trusted as the ComfyUI node trusts it (SPEC section 4: staff-registered
servers may be private or loopback addresses), so a check connects to the server's own host and
port as registered. It still goes through the SSRF guard: only that host:port (and the staff
allow-list, OUTBOUND_ALLOW_HOSTS) is trusted, so a redirect elsewhere is vetted like any
user-supplied URL.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction

from emprops.errors import Conflict, ValidationFailed
from emprops.netguard import UnsafeURL, safe_client
from workflows_app.models import Server

CHECK_TIMEOUT_S = 5.0
_MAX_ERROR_CHARS = 300


def server_url_errors(url: str) -> list[str]:
    """Why `url` cannot be a ComfyUI server's base URL (empty when it can)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ["Not a valid URL."]
    if parsed.scheme not in ("http", "https"):
        return ["Must start with http:// or https://."]
    if not parsed.host:
        return ["The URL has no host."]
    if parsed.query or parsed.fragment:
        return ["A server URL has no query or fragment."]
    return []


def server_create(*, name: str, url: str) -> Server:
    """Register a ComfyUI server; ValidationFailed (400) for a URL that is not http(s),
    Conflict (409) when the name is taken."""
    url = url.strip().rstrip("/")
    errors = server_url_errors(url)
    if errors:
        raise ValidationFailed(f"Invalid server URL: {errors[0]}", details={"url": errors})
    try:
        with transaction.atomic():
            return Server.objects.create(name=name, url=url)
    except IntegrityError:
        raise Conflict(f"A server named '{name}' already exists.",
                       details={"name": ["Already exists."]}) from None


def _trusted_hosts(url: str) -> list[str]:
    parsed = httpx.URL(url)
    host = parsed.host.lower()
    shown = f"[{host}]" if ":" in host else host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return [*settings.OUTBOUND_ALLOW_HOSTS, f"{shown}:{port}"]


def _summary(stats: Any) -> dict[str, Any]:
    system = stats.get("system") if isinstance(stats, dict) else None
    system = system if isinstance(system, dict) else {}
    devices = stats.get("devices") if isinstance(stats, dict) else None
    return {
        "comfyui_version": system.get("comfyui_version"),
        "python_version": system.get("python_version"),
        "pytorch_version": system.get("pytorch_version"),
        "devices": [
            {"name": d.get("name"), "type": d.get("type"), "vram_total": d.get("vram_total"),
             "vram_free": d.get("vram_free")}
            for d in (devices if isinstance(devices, list) else []) if isinstance(d, dict)
        ],
    }


def server_check(*, server: Server, timeout: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """`GET {url}/system_stats` of a registered server: `{name, url, ok: true, latency_ms,
    comfyui_version, python_version, pytorch_version, devices: [{name, type, vram_total,
    vram_free}]}`, or `{name, url, ok: false, latency_ms, error}` saying why it did not answer.
    Never raises for an unreachable or broken server: that is the answer."""
    result: dict[str, Any] = {"name": server.name, "url": server.url}
    errors = server_url_errors(server.url)
    if errors:
        return {**result, "ok": False, "latency_ms": None, "error": errors[0]}
    started = time.monotonic()
    error: str | None = None
    stats: Any = None
    try:
        with safe_client(allow_hosts=_trusted_hosts(server.url), timeout=timeout) as client:
            response = client.get(server.url.rstrip("/") + "/system_stats",
                                  headers={"Accept": "application/json"})
        if response.status_code != 200:
            error = f"GET /system_stats answered HTTP {response.status_code}"
        else:
            stats = response.json()
            if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict):
                error = "GET /system_stats did not answer ComfyUI's system stats"
    except UnsafeURL as exc:
        error = f"Refused by the SSRF guard: {exc}"
    except httpx.TimeoutException:
        error = f"No answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        error = f"Could not connect: {exc or type(exc).__name__}"
    except ValueError:
        error = "GET /system_stats did not answer JSON"
    latency_ms = round((time.monotonic() - started) * 1000)
    if error is not None:
        return {**result, "ok": False, "latency_ms": latency_ms,
                "error": error[:_MAX_ERROR_CHARS]}
    return {**result, "ok": True, "latency_ms": latency_ms, **_summary(stats)}
