"""The project package.

`emprops.celery_app` loads on first use rather than at import, so `emprops.client` and
`python -m emprops` (the API client and CLI) import neither Django nor Celery. Web processes and
management commands bind `shared_task`s to our app through `AccountsConfig.ready()`, which imports
`emprops.celery`; `celery -A emprops` finds `emprops.celery` by itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ("celery_app",)


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        from emprops.celery import app

        return app
    raise AttributeError(f"module 'emprops' has no attribute {name!r}")
