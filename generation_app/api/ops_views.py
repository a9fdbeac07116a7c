"""`/healthz` and `/metrics`: for load balancers and Prometheus, outside /api (no envelope on
success, no API authentication, no throttling)."""

from __future__ import annotations

import ipaddress
import secrets

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from emprops.api import api_not_found
from emprops.middleware import envelope_error
from generation_app.metrics import registry
from generation_app.services.health import health_check


@never_cache
@require_safe
async def healthz(request: HttpRequest) -> HttpResponse:
    """200 when every part answers, 503 naming the parts that did not."""
    # in a thread of its own: the checks wait up to ~3 s and must not hold the thread that
    # every synchronous view of this process shares
    result = await sync_to_async(health_check, thread_sensitive=False)()
    return JsonResponse(result, status=200 if result["status"] == "ok" else 503)


def _loopback_without_proxy(request: HttpRequest) -> bool:
    # Behind a reverse proxy on the same host every request comes from loopback, so loopback
    # counts only when no proxy is declared and the request names no forwarded client.
    if settings.TRUSTED_PROXY_COUNT or "HTTP_X_FORWARDED_FOR" in request.META \
            or "HTTP_FORWARDED" in request.META:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. Open to loopback (a scraper on the host); from elsewhere it needs
    `Authorization: Bearer <METRICS_TOKEN>` (401 without it), and with no METRICS_TOKEN set it
    does not exist for other hosts (404)."""
    token = settings.METRICS_TOKEN
    presented = _bearer(request)
    if token and presented is not None:
        allowed = secrets.compare_digest(presented.encode(), token.encode())
    else:
        allowed = _loopback_without_proxy(request)
    if not allowed:
        if not token:
            return api_not_found(request)
        response = envelope_error("Authentication required: Authorization: Bearer <token>.",
                                  401, request=request)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
