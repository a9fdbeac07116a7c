"""ASGI entry point, served by uvicorn (SSE streams need an async server)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emprops.settings")

application = get_asgi_application()
