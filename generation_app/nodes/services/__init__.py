"""direct_job service handlers: plugins named by `service_required`, each on `service.<name>`.

The registry maps a service name to the dotted path of its handler, imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

SERVICE_HANDLERS: dict[str, str] = {
    "openai_text": "generation_app.nodes.services.openai_compat:text_handler",
    "openai_image": "generation_app.nodes.services.openai_compat:image_handler",
}


def registered_services() -> list[str]:
    return sorted(SERVICE_HANDLERS)


def load_handler(service: str) -> Any:
    module_path, _, attr = SERVICE_HANDLERS[service].partition(":")
    return getattr(import_module(module_path), attr)
