"""ASGI entry point, served by uvicorn (SSE streams need an async server).

Static files (admin, Swagger UI from the sidecar) are served by Django's ASGI static handler,
which needs no collectstatic step and keeps the middleware chain fully async. Bodies over the
largest any route accepts are refused as they arrive (emprops/bodycap.py), before Django spools
them.
"""

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from emprops.bodycap import BodyCap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

django_application = get_asgi_application()


def _hard_cap() -> int:
    from django.conf import settings

    # the largest body any route accepts (uploads); the middleware applies each route's own
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


application = BodyCap(ASGIStaticFilesHandler(django_application), _hard_cap)
