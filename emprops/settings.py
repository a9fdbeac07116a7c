"""Settings: one file, driven by the environment, with embedded defaults.

`DATABASE_URL` and `REDIS_URL` come from the environment; `python -m emprops.embedded` sets them
for its children, and a plain `manage.py` falls back to the URLs the running supervisor wrote
to `var/services.json`.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from emprops.embedded import secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EMPROPS_VAR_DIR", BASE_DIR / "var"))
TESTING = os.environ.get("EMPROPS_TESTING") == "1"


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def _services() -> dict[str, str]:
    path = VAR_DIR / "services.json"
    try:
        data: dict[str, str] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


_svc = _services()
DATABASE_URL = os.environ.get("DATABASE_URL") or _svc.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL") or _svc.get("REDIS_URL", "redis://127.0.0.1:6379")
if not DATABASE_URL:
    raise RuntimeError(
        "No database: set DATABASE_URL, or start the embedded services with `make run` "
        "(or `python -m emprops.embedded exec -- <command>`)."
    )


def _database(url: str) -> dict[str, object]:
    u = urlparse(url)
    options: dict[str, object] = {k: v[0] for k, v in parse_qs(u.query).items()}
    if _env_bool("DB_POOL", False):
        options["pool"] = {"min_size": 1, "max_size": int(os.environ.get("DB_POOL_SIZE", "10"))}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(u.path.lstrip("/")) or "emprops",
        "USER": unquote(u.username or ""),
        "PASSWORD": unquote(u.password or ""),
        "HOST": u.hostname or "",
        "PORT": str(u.port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": 0 if options.get("pool") else int(os.environ.get("CONN_MAX_AGE", "0")),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": "test_emprops"},
    }


DATABASES = {"default": _database(DATABASE_URL)}

SECRET_KEY = os.environ.get("SECRET_KEY") or secret_key(VAR_DIR)
DEBUG = _env_bool("DEBUG", False)
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "*").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "corsheaders",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "emprops.accounts",
    "workflows_app",
    "collections_app",
    "jobs_app",
    "generation_app",
    "generation_app.collectors",
]

MIDDLEWARE = [
    "emprops.middleware.RequestIdMiddleware",
    "emprops.middleware.BodySizeLimitMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # after CORS (a browser can read the 415) and the body-size limit (which sizes chunked bodies)
    "emprops.middleware.MediaTypeMiddleware",
]

ROOT_URLCONF = "emprops.urls"
APPEND_SLASH = False
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ASGI_APPLICATION = "emprops.asgi.application"
WSGI_APPLICATION = None

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

# Storage: local files by default; S3 (or any django-storages backend) by environment.
_storage_backend = os.environ.get("STORAGE_BACKEND", "")
if os.environ.get("AWS_STORAGE_BUCKET_NAME") and not _storage_backend:
    _storage_backend = "storages.backends.s3.S3Storage"
STORAGES = {
    "default": {
        "BACKEND": _storage_backend or "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"file_overwrite": True} if "s3" in _storage_backend.lower() else {},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# django-storages reads these from settings, not from the environment
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME")
AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL")
AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME")
AWS_QUERYSTRING_AUTH = _env_bool("AWS_QUERYSTRING_AUTH", False)
CDN_URL = os.environ.get("CDN_URL", "")
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "")
# Where local outputs are served from: an origin that holds no sessions (emprops/usercontent.py;
# `make run` serves it on PORT + 1). Empty: /media/ on this origin, sandboxed and without scripts.
USER_CONTENT_ORIGIN = os.environ.get("USER_CONTENT_ORIGIN", "").rstrip("/")

# ---- Redis: broker, cache (throttling), events -------------------------------------------------
# Under pytest-xdist each test process (gw0, gw1 ...) and the Celery workers it starts get their
# own broker, cache and events databases (the test database is per process already).
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "") if TESTING else ""
REDIS_DB_OFFSET = int(os.environ.get("REDIS_DB_OFFSET") or (
    4 * int(_XDIST_WORKER[2:]) if _XDIST_WORKER[2:].isdigit() else 0))


def _redis_db(n: int) -> str:
    return f"{REDIS_URL.rstrip('/')}/{n + REDIS_DB_OFFSET}"


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _redis_db(1),
        "KEY_PREFIX": "emprops",
    }
}
EVENTS_REDIS_URL = _redis_db(2)

CELERY_BROKER_URL = _redis_db(0)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "engine"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # the database is the record of pending work; this only bounds how long Redis holds an
    # unacked message before redelivering it (the reaper re-announces much sooner)
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "900")),
    "queue_order_strategy": "priority",
    "priority_steps": list(range(10)),
    "sep": ":",
}
CELERY_TASK_DEFAULT_PRIORITY = 5
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# ---- DRF ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["emprops.api.EnvelopeRenderer"],
    # a JSON API: views that take uploads declare MultiPartParser (emprops.middleware's
    # MediaTypeMiddleware answers 415 for any other body, read or not)
    "DEFAULT_PARSER_CLASSES": ["emprops.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["emprops.authentication.ApiAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "emprops.api.EnvelopePagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "EXCEPTION_HANDLER": "emprops.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["emprops.api.UserRateThrottle", "emprops.api.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("RATE_LIMIT_USER", "1200/min"),
        "anon": os.environ.get("RATE_LIMIT_ANON", "120/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "EmProps Collection Generation API",
    "DESCRIPTION": (
        "Collections, workflows, a node-graph generation engine, jobs with live events and "
        "credits. Every JSON response is an envelope `{data, error}`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["emprops.api.envelope_schema_hook"],
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
    },
    "SECURITY": [{"ApiKey": []}, {"Bearer": []}],
}

# ---- auth -----------------------------------------------------------------------------------
JWT_SIGNING_KEY = os.environ.get("JWT_SIGNING_KEY") or SECRET_KEY
JWT_PUBLIC_KEY = os.environ.get("JWT_PUBLIC_KEY", "").replace("\\n", "\n")
JWT_ACCESS_LIFETIME = timedelta(minutes=int(os.environ.get("JWT_ACCESS_MINUTES", "60")))
JWT_REFRESH_LIFETIME = timedelta(days=int(os.environ.get("JWT_REFRESH_DAYS", "7")))
FREE_CREDITS = os.environ.get("FREE_CREDITS", "10")

CORS_ALLOWED_ORIGINS = [o for o in os.environ.get("CORS_ALLOWED_ORIGINS", "").split(",") if o]
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After"]

# ---- limits ---------------------------------------------------------------------------------
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", str(2 * 1024 * 1024)))
MAX_UPLOAD_BYTES = int(os.environ.get("MAX_UPLOAD_BYTES", str(20 * 1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_BYTES + 1024 * 1024
DEFAULT_MAX_GENERATIONS = int(os.environ.get("DEFAULT_MAX_GENERATIONS", "10"))
# the size of one GenerationInput (collection `data`, unified and batch requests alike)
MAX_STEPS_PER_COLLECTION = int(os.environ.get("MAX_STEPS_PER_COLLECTION", "200"))
MAX_VARIABLES = int(os.environ.get("MAX_VARIABLES", "100"))
MAX_VARIABLE_VALUES = int(os.environ.get("MAX_VARIABLE_VALUES", "1000"))
# how far ahead a one-off `run_at` may be (its credits are held until then)
MAX_RUN_AT_DAYS = int(os.environ.get("MAX_RUN_AT_DAYS", "30"))
MAX_RUNNING_GENERATIONS_PER_USER = int(os.environ.get("MAX_RUNNING_GENERATIONS_PER_USER", "8"))
MAX_JOB_RUN_SECONDS = int(os.environ.get("MAX_JOB_RUN_SECONDS", "3600"))
# credential checks from one client address that may end in a 401, per window; past it the
# address gets a 429 before its credential is looked at ("" turns the limit off)
RATE_LIMIT_AUTH_FAIL = os.environ.get("RATE_LIMIT_AUTH_FAIL", "30/min")
# reverse proxies in front of the app that append to X-Forwarded-For; 0 (the default): the client
# address is REMOTE_ADDR and X-Forwarded-For is ignored, since any client can send one
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))
NODE_LEASE_SECONDS = int(os.environ.get("NODE_LEASE_SECONDS", "60"))
NODE_MAX_ATTEMPTS = int(os.environ.get("NODE_MAX_ATTEMPTS", "4"))
# Nodes that call an upstream server (ComfyUI, third-party APIs: the io and service queues) retry
# transient errors with capped exponential backoff for this long, so an upstream restart or a
# short outage does not fail the job; other nodes retry NODE_MAX_ATTEMPTS times.
UPSTREAM_RETRY_WINDOW_SECONDS = float(os.environ.get("UPSTREAM_RETRY_WINDOW_SECONDS", "900"))
UPSTREAM_RETRY_MAX_BACKOFF_SECONDS = float(
    os.environ.get("UPSTREAM_RETRY_MAX_BACKOFF_SECONDS", "60"))
NODE_UNCLAIMED_SECONDS = int(os.environ.get("NODE_UNCLAIMED_SECONDS", "30"))
NO_CONSUMER_FAIL_SECONDS = int(os.environ.get("NO_CONSUMER_FAIL_SECONDS", "600"))
REAPER_INTERVAL_SECONDS = float(os.environ.get("REAPER_INTERVAL_SECONDS", "10"))

# ---- outbound ---------------------------------------------------------------------------------
OUTBOUND_ALLOW_HOSTS = [h for h in os.environ.get("OUTBOUND_ALLOW_HOSTS", "").split(",") if h]
LLM_BASE_URL = os.environ.get("LLM_BASE_URL", "")
LLM_API_KEY = os.environ.get("LLM_API_KEY", "")
LLM_MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
LLM_TIMEOUT_SECONDS = float(os.environ.get("LLM_TIMEOUT_SECONDS", "60"))
# direct_job's OpenAI-compatible service handlers
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_IMAGE_MODEL = os.environ.get("OPENAI_IMAGE_MODEL", "gpt-image-1")
OPENAI_TIMEOUT_SECONDS = float(os.environ.get("OPENAI_TIMEOUT_SECONDS", "120"))

# ---- ops ------------------------------------------------------------------------------------
# /metrics from other hosts than loopback needs `Authorization: Bearer <METRICS_TOKEN>`; unset:
# /metrics answers loopback only (404 elsewhere)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# ---- events ---------------------------------------------------------------------------------
EVENTS_HEARTBEAT_SECONDS = float(os.environ.get("EVENTS_HEARTBEAT_SECONDS", "15"))

# ---- gallery --------------------------------------------------------------------------------
# how long a signed gallery link (`/c/<id>?g=...`, in generate responses) keeps working
GALLERY_LINK_SECONDS = int(os.environ.get("GALLERY_LINK_SECONDS", str(7 * 24 * 3600)))
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# ---- logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "emprops.middleware.RequestIdLogFilter"},
        "redact": {"()": "emprops.middleware.RedactSecretsFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id", "redact"],
            "formatter": "plain",
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "uvicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# ---- webhooks and schedules -------------------------------------------------------------------
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "10"))
# waits after the 1st, 2nd, ... failed attempt; the last repeats until WEBHOOK_MAX_AGE_SECONDS
WEBHOOK_BACKOFF_SECONDS = [float(x) for x in os.environ.get(
    "WEBHOOK_BACKOFF_SECONDS", "5,30,120,600,1800,3600,7200").split(",") if x.strip()]
WEBHOOK_MAX_AGE_SECONDS = int(os.environ.get("WEBHOOK_MAX_AGE_SECONDS", str(24 * 3600)))
WEBHOOK_PROGRESS_INTERVAL_SECONDS = float(os.environ.get("WEBHOOK_PROGRESS_INTERVAL_SECONDS", "5"))
SCHEDULE_MIN_INTERVAL_SECONDS = int(os.environ.get("SCHEDULE_MIN_INTERVAL_SECONDS", "60"))

# ---- collectors (wallet sign-in, on-chain payments) --------------------------------------------
# domains a Sign-In with Ethereum message may name (empty: the request's own host)
SIWE_DOMAINS = [d for d in os.environ.get("SIWE_DOMAINS", "").split(",") if d]
SIWE_NONCE_SECONDS = int(os.environ.get("SIWE_NONCE_SECONDS", "600"))
CHAIN_RPC_TIMEOUT_SECONDS = float(os.environ.get("CHAIN_RPC_TIMEOUT_SECONDS", "10"))
# a pending purchase is rechecked this often, and given up once its transaction stays unknown
PURCHASE_RECHECK_SECONDS = float(os.environ.get("PURCHASE_RECHECK_SECONDS", "15"))
PURCHASE_PENDING_MAX_SECONDS = int(os.environ.get("PURCHASE_PENDING_MAX_SECONDS", str(24 * 3600)))

# One periodic task (reaper, due webhooks, due schedules in one pass) rather than three, so
# Flower is not flooded; what it did is counted in /metrics. The old task names stay registered
# for a rolling upgrade, and migration generation_app 0005 removes their database-beat entries.
CELERY_BEAT_SCHEDULE = {
    "housekeeping": {
        "task": "generation.housekeeping",
        "schedule": REAPER_INTERVAL_SECONDS,
        "options": {"queue": "engine", "expires": max(5.0, REAPER_INTERVAL_SECONDS * 2)},
    },
}
# Celery autodiscovers `tasks` modules only
CELERY_IMPORTS = ("generation_app.housekeeping",)
