"""ASGI entry point, served by uvicorn (SSE streams need an async server).

Static files (admin, Swagger UI from the sidecar) are served by Django's ASGI static handler,
which needs no collectstatic step and keeps the middleware chain fully async.
"""

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

application = ASGIStaticFilesHandler(get_asgi_application())
