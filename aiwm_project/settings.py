"""Django settings for AIWM, read from the environment (every variable is listed in the README)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("AIWM_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()


def _persistent_secret(name: str) -> str:
    """A random secret kept in var/ so the embedded default survives restarts without configuration."""
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _persistent_secret("django-secret-key")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])

# --- Behind a TLS-terminating proxy (production): AIWM_HTTPS=true. The proxy says the request came
# over HTTPS in X-Forwarded-Proto (it must set or strip that header itself); cookies (the admin's
# session and CSRF) are then secure-only, plain HTTP is redirected (but /api/health, which load
# balancers probe over HTTP), and browsers are told to keep to HTTPS (HSTS). The admin's login
# form is posted from the proxy's public origin: list it in CSRF_TRUSTED_ORIGINS.
AIWM_HTTPS = env.bool("AIWM_HTTPS", default=False)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
if AIWM_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("AIWM_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^api/health$"]
    SECURE_HSTS_SECONDS = env.int("AIWM_HSTS_SECONDS", default=31_536_000)
    # Whether HSTS covers the domain's other hosts, and the browsers' preload list, are the operator's
    # choice (both are hard to undo): off unless asked for, and then the deploy check's reminders
    # (security.W005, W021) are silenced on purpose, not ignored by accident.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("AIWM_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.bool("AIWM_HSTS_PRELOAD", default=False)
    SILENCED_SYSTEM_CHECKS = [
        *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    ]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "aiwm_project",
    "nodes",
    "models_registry",
    "agents",
    "deployments",
    "executions",
    "conversations",
    "inference",
    "gateway",
    "console",
]

MIDDLEWARE = [
    "aiwm_project.middleware.CorrelationIdMiddleware",
    "aiwm_project.middleware.RequestMetricsMiddleware",
    # Before the guard and CommonMiddleware: a preflight is answered here, without a token.
    "corsheaders.middleware.CorsMiddleware",
    "aiwm_project.middleware.ApiRequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "aiwm_project.urls"
ASGI_APPLICATION = "aiwm_project.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# --- Database: SQLite file in var/ by default, PostgreSQL in production (DATABASE_URL). ---
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'aiwm.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A process-wide psycopg pool (Django's native one). Under ASGI each request's sync work runs
    # on a thread of its own, so Django's per-thread persistent connections (CONN_MAX_AGE > 0) are
    # never reused and pile up to the server's connection limit; without either, every request
    # opens a connection (bench/node_list.py: the pool is ~25 % more requests/s). A request holds a
    # connection from its first query to its end; past DB_POOL_MAX_SIZE in flight, requests wait
    # up to DB_POOL_TIMEOUT seconds. Size it so that web processes x size (+ workers) stays below
    # PostgreSQL's max_connections (100 by default). DB_POOL_MAX_SIZE=0: no pool, DB_CONN_MAX_AGE.
    _pool_size = env.int("DB_POOL_MAX_SIZE", default=10)
    if _pool_size > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses persistent connections with a pool
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, _pool_size),
            "max_size": _pool_size,
            "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
        }
    else:
        DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=0))
    # With the pool: each connection is checked when lent, so one the server ended (a restart, a
    # terminated backend) is replaced rather than handed to a request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default writes from several threads (requests, the socket thread's telemetry
    # flush, the sweep). A deferred transaction that reads then writes fails at once with
    # "database is locked" when another writer got there first; an IMMEDIATE one takes the write
    # lock up front and waits for it (up to `timeout` seconds) like PostgreSQL would.
    # Write-ahead logging: readers neither block the writer nor wait for it (in the default rollback
    # journal a commit waits for every reader to finish, and readers wait out SQLite's busy sleeps
    # of up to 100 ms). synchronous stays FULL: a commit that was acknowledged survives a power cut.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        transaction_mode="IMMEDIATE", timeout=20, init_command="PRAGMA journal_mode=WAL"
    )
# Threads that handle HTTP requests (aiwm_project.http_handler). On PostgreSQL each holds at most
# one connection, so by default as many as the pool lends; more would only wait for a connection.
# SQLite has one writer at a time: ten threads under 20 clients of mixed lists and creates meant
# writers waiting out SQLite's busy sleeps (create p99 ~1 s); two keep one request's commit (its
# fsync, without the GIL) overlapping the next one's work, and the rest queue in order on the event
# loop (p99 ~230 ms; bench/embedded_mix.py, BENCHMARKS.md).
_pool = DATABASES["default"].get("OPTIONS", {}).get("pool")
_default_threads = _pool["max_size"] if _pool else 2 if DATABASES["default"]["ENGINE"].endswith("sqlite3") else 10
HTTP_WORKER_THREADS = env.int("HTTP_WORKER_THREADS", default=_default_threads)
if env.str("AIWM_TEST_DB_NAME", default=""):
    # Lets several test runs share one PostgreSQL server without clobbering each other's test DB.
    DATABASES["default"]["TEST"] = {"NAME": env.str("AIWM_TEST_DB_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: unset means the embedded default (in-memory layers, in-process work). ---
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Redis pub/sub ignores database numbers: the Socket.IO channel is named after the database, so two
# installations on one Redis server (different databases) never see each other's emits.
AIWM_SOCKETIO_CHANNEL = env.str(
    "AIWM_SOCKETIO_CHANNEL", default=f"aiwm-socketio-{urlparse(REDIS_URL).path.strip('/') or '0'}"
)

# Prometheus series of several processes (web workers, Celery workers of this host) are kept in
# files of one folder and summed by /metrics (aiwm_project.metrics). One process needs none. The
# client reads PROMETHEUS_MULTIPROC_DIR when it is imported, after these settings.
AIWM_METRICS_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="") or env.str(
    "AIWM_METRICS_DIR", default=str(VAR_DIR / "prometheus") if REDIS_URL else ""
)
if AIWM_METRICS_DIR:
    Path(AIWM_METRICS_DIR).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = AIWM_METRICS_DIR
# /metrics: with a token every client needs it (loopback too); with an allow-list only those
# addresses (or networks) are answered; with neither, only loopback clients.
AIWM_METRICS_TOKEN = env.str("AIWM_METRICS_TOKEN", default="")
AIWM_METRICS_ALLOWED_IPS = env.list("AIWM_METRICS_ALLOWED_IPS", default=[])
for _entry in AIWM_METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_entry.strip(), strict=False)
    except ValueError as exc:
        raise ImproperlyConfigured(f"AIWM_METRICS_ALLOWED_IPS: {_entry!r} is not an address or network") from exc

# Live events (GET /api/events): how many recent events a reconnecting browser can resume from,
# how far one subscriber may fall behind before it is dropped (it reconnects and resumes), the
# keep-alive comment's period, and a query ticket's lifetime (EventSource cannot send headers).
AIWM_EVENTS_WINDOW = env.int("AIWM_EVENTS_WINDOW", default=2000)
AIWM_EVENTS_QUEUE = env.int("AIWM_EVENTS_QUEUE", default=1000)
AIWM_EVENTS_KEEPALIVE_SECONDS = env.float("AIWM_EVENTS_KEEPALIVE_SECONDS", default=15.0)
AIWM_EVENTS_TICKET_SECONDS = env.int("AIWM_EVENTS_TICKET_SECONDS", default=60)
AIWM_EVENTS_STREAM = env.str("AIWM_EVENTS_STREAM", default=f"aiwm-events-{urlparse(REDIS_URL).path.strip('/') or '0'}")

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"

# --- Identity (IAM-issued JWTs) ---
IAM_JWT_SECRET = env.str("IAM_JWT_SECRET", default="")
IAM_PUBLIC_KEY = env.str("IAM_PUBLIC_KEY", default="")  # PEM; literal or a path to a file
IAM_JWKS_URL = env.str("IAM_JWKS_URL", default="")
IAM_ISSUER = env.str("IAM_ISSUER", default="")
IAM_AUDIENCE = env.str("IAM_AUDIENCE", default="")
IAM_LEEWAY_SECONDS = env.int("IAM_LEEWAY_SECONDS", default=30)
_external_iam = bool(IAM_JWKS_URL or IAM_PUBLIC_KEY or IAM_JWT_SECRET)
IAM_JWT_ALGORITHMS = env.list(
    "IAM_JWT_ALGORITHMS", default=["RS256", "ES256"] if (IAM_JWKS_URL or IAM_PUBLIC_KEY) else ["HS256"]
)
# The embedded default signs its own tokens (local login) with a generated secret kept in var/.
AIWM_LOCAL_LOGIN = env.bool("AIWM_LOCAL_LOGIN", default=not _external_iam)
if not IAM_JWT_SECRET and not (IAM_JWKS_URL or IAM_PUBLIC_KEY):
    IAM_JWT_SECRET = _persistent_secret("jwt-secret")
AIWM_TOKEN_TTL_SECONDS = env.int("AIWM_TOKEN_TTL_SECONDS", default=8 * 3600)

# --- API ---
AIWM_PORT = env.int("AIWM_PORT", default=3003)
AIWM_MAX_BODY_BYTES = env.int("AIWM_MAX_BODY_BYTES", default=1024 * 1024)
AIWM_MAX_JSON_DEPTH = env.int("AIWM_MAX_JSON_DEPTH", default=32)
DATA_UPLOAD_MAX_MEMORY_SIZE = AIWM_MAX_BODY_BYTES
# The request head (aiwm_project.server): a longer URL is a 414, a larger head a 431.
AIWM_MAX_URL_BYTES = env.int("AIWM_MAX_URL_BYTES", default=8 * 1024)
AIWM_MAX_HEADER_BYTES = env.int("AIWM_MAX_HEADER_BYTES", default=32 * 1024)
# Addresses whose X-Forwarded-For/-Proto the server believes (the TLS proxy); "*" for any.
AIWM_FORWARDED_ALLOW_IPS = env.str("AIWM_FORWARDED_ALLOW_IPS", default="127.0.0.1")
AIWM_SERVER_VERSION = "1.0.0"
AIWM_CONTROLLER_ID = env.str("AIWM_CONTROLLER_ID", default="controller-main")
AIWM_HEARTBEAT_INTERVAL_MS = env.int("AIWM_HEARTBEAT_INTERVAL_MS", default=30000)
AIWM_METRICS_INTERVAL_MS = env.int("AIWM_METRICS_INTERVAL_MS", default=60000)
AIWM_METRICS_RETENTION_DAYS = env.int("AIWM_METRICS_RETENTION_DAYS", default=7)
# How long a node message id is remembered for at-most-once processing (nodes.services.inbound_prune).
AIWM_INBOUND_RETENTION_HOURS = env.int("AIWM_INBOUND_RETENTION_HOURS", default=72)
# Node gateway: node tokens are signed by AIWM itself (not the IAM), with their own secret.
AIWM_NODE_TOKEN_SECRET = env.str("AIWM_NODE_TOKEN_SECRET", default="") or _persistent_secret("node-token-secret")
AIWM_NODE_TOKEN_TTL_DAYS = env.int("AIWM_NODE_TOKEN_TTL_DAYS", default=365)
AIWM_NODE_MAX_MESSAGE_BYTES = env.int("AIWM_NODE_MAX_MESSAGE_BYTES", default=1024 * 1024)
# Per connection: sustained messages per second and burst; past them a message gets an error frame.
AIWM_NODE_RATE_PER_SECOND = env.float("AIWM_NODE_RATE_PER_SECOND", default=20.0)
AIWM_NODE_RATE_BURST = env.int("AIWM_NODE_RATE_BURST", default=100)
# Errors one connection may cause (bad frames, floods) before it is closed.
AIWM_NODE_MAX_ERRORS = env.int("AIWM_NODE_MAX_ERRORS", default=50)
AIWM_NODE_OFFLINE_AFTER_HEARTBEATS = 3
# Heartbeats and metric points are written in batches this often (gateway.telemetry).
AIWM_TELEMETRY_FLUSH_MS = env.int("AIWM_TELEMETRY_FLUSH_MS", default=50)
AIWM_SWEEP_INTERVAL_SECONDS = env.float("AIWM_SWEEP_INTERVAL_SECONDS", default=10.0)
# A command sent to a connected node and not acknowledged within this is sent again (same
# messageId), at most AIWM_COMMAND_MAX_ATTEMPTS times in all; its step's timeout still applies.
AIWM_COMMAND_ACK_TIMEOUT_SECONDS = env.int("AIWM_COMMAND_ACK_TIMEOUT_SECONDS", default=60)
AIWM_COMMAND_MAX_ATTEMPTS = env.int("AIWM_COMMAND_MAX_ATTEMPTS", default=5)

# --- The inference gateway at /v1 (inference.gateway; docs/decisions.md "The inference gateway").
# Requests in flight per deployment, by its backend ("" for any other): llama.cpp's server
# generates one answer at a time, so a second request would only wait inside it.
AIWM_GATEWAY_CONCURRENCY = {
    "llama.cpp": env.int("AIWM_GATEWAY_LLAMA_CPP_CONCURRENCY", default=1),
    "vllm": env.int("AIWM_GATEWAY_VLLM_CONCURRENCY", default=256),
    "": env.int("AIWM_GATEWAY_CONCURRENCY", default=64),
}
AIWM_GATEWAY_QUEUE_SECONDS = env.float("AIWM_GATEWAY_QUEUE_SECONDS", default=60.0)  # waiting for a free slot
AIWM_GATEWAY_CONNECT_TIMEOUT = env.float("AIWM_GATEWAY_CONNECT_TIMEOUT", default=5.0)
AIWM_GATEWAY_FIRST_BYTE_TIMEOUT = env.float("AIWM_GATEWAY_FIRST_BYTE_TIMEOUT", default=300.0)
AIWM_GATEWAY_IDLE_TIMEOUT = env.float("AIWM_GATEWAY_IDLE_TIMEOUT", default=120.0)
# Usage records (GET /api/usage) older than this are dropped by the sweep; the counters they moved
# on models and deployments stay. At a thousand requests a second a day is 86 million rows.
AIWM_USAGE_RETENTION_DAYS = env.int("AIWM_USAGE_RETENTION_DAYS", default=90)

# --- Conversations that run (POST /api/conversations/:id/chat: inference.chat). The prompt's
# history is cut to fit AIWM_CHAT_CONTEXT_TOKENS (estimated at four characters a token) with
# AIWM_CHAT_MAX_TOKENS left for the answer; llama.cpp's server defaults to a 2,048-token context.
AIWM_CHAT_CONTEXT_TOKENS = env.int("AIWM_CHAT_CONTEXT_TOKENS", default=2048)
AIWM_CHAT_MAX_TOKENS = env.int("AIWM_CHAT_MAX_TOKENS", default=512)
AIWM_CHAT_TOOL_ROUNDS = env.int("AIWM_CHAT_TOOL_ROUNDS", default=4)  # model calls that may call tools, per turn
# Where `api` tools may be called: host names, `*.suffix`, IP addresses or CIDR blocks; `*` is any
# public address. Loopback, private, link-local (the cloud metadata service) and other special
# addresses are refused unless an entry names them exactly. Empty (the default): no api tool runs.
AIWM_TOOL_ALLOWED_HOSTS = env.list("AIWM_TOOL_ALLOWED_HOSTS", default=[])
AIWM_TOOL_TIMEOUT_SECONDS = env.float("AIWM_TOOL_TIMEOUT_SECONDS", default=15.0)
AIWM_TOOL_MAX_RESPONSE_BYTES = env.int("AIWM_TOOL_MAX_RESPONSE_BYTES", default=256 * 1024)

# --- CORS: a browser frontend on another origin (docs/decisions.md). No credentials: the API takes
# bearer tokens, not cookies, so a cross-origin page can do nothing it couldn't with a token it holds.
# Default: any http://localhost:<port> / http://127.0.0.1:<port> (a portal dev server); set
# AIWM_CORS_ALLOWED_ORIGINS (comma-separated origins) to allow exactly those origins instead.
CORS_ALLOWED_ORIGINS = env.list("AIWM_CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOWED_ORIGIN_REGEXES = [] if CORS_ALLOWED_ORIGINS else [r"^http://(localhost|127\.0\.0\.1)(:\d+)?$"]
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = ["accept", "authorization", "content-type", "x-correlation-id"]
CORS_EXPOSE_HEADERS = ["x-correlation-id"]
CORS_URLS_REGEX = r"^/(api/|auth/|api-docs/schema)"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["aiwm_project.auth.IAMJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["aiwm_project.permissions.RolePermission"],
    "DEFAULT_PARSER_CLASSES": ["aiwm_project.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "aiwm_project.api.pagination.PagePagination",
    "DEFAULT_FILTER_BACKENDS": ["aiwm_project.api.filters.FilterSortBackend"],
    "DEFAULT_SCHEMA_CLASS": "aiwm_project.api.schema.AIWMAutoSchema",
    "EXCEPTION_HANDLER": "aiwm_project.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "PAGE_SIZE": 10,
}

SPECTACULAR_SETTINGS = {
    # One name for a choice set used by several fields (an execution's `status`, a lifecycle answer's
    # `executionStatus`), so generated clients get one type.
    "ENUM_NAME_OVERRIDES": {"ExecutionStatusEnum": "executions.choices.ExecutionStatus"},
    "TITLE": "AIWM - AI Workflow Manager API",
    "DESCRIPTION": (
        "Control plane for a fleet of GPU servers: nodes, models, agents, instructions, tools, "
        "deployments, executions, conversations and messages. Authenticate with an IAM JWT "
        "(`Authorization: Bearer <token>`); in the embedded default get one from `POST /auth/login`. "
        "Node daemons speak the node protocol at `/ws/node`: its AsyncAPI document is "
        "[/api-docs/asyncapi.yaml](/api-docs/asyncapi.yaml).\n\n"
        "**Live events** — `GET /api/events` is a Server-Sent Events stream of the caller's organization: "
        "`node.status`, `node.heartbeat`, `deployment.status`, `execution.progress`, `command.status`. Each "
        "event's `data` is JSON with `type`, `orgId`, the entity's `_id` and business id (`nodeId`, "
        "`deploymentId`, `executionId`, `messageId`) and the changed fields. Authenticate with the bearer "
        "header (fetch-based clients) or, from a browser `EventSource`, with a single-use ticket: "
        "`POST /api/events/ticket` then `new EventSource('/api/events?ticket=' + ticket)`. Reconnecting "
        "with `Last-Event-ID` (EventSource does it) replays what was missed within the last "
        "AIWM_EVENTS_WINDOW events; older than that, a `reset` event says to reload the state. A comment "
        "line every 15 s keeps proxies from closing an idle stream."
    ),
    "VERSION": AIWM_SERVER_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api",
    "GET_LIB_DOC_EXCLUDES": "aiwm_project.api.schema.lib_doc_excludes",
}

# --- Static files (Swagger UI assets ship in drf-spectacular-sidecar; no CDN) ---
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
FORMAT_MODULE_PATH = ["aiwm_project.formats"]  # the admin's times with seconds and the zone

# plain: one readable line per record; json: one JSON object per line, for log collectors.
AIWM_LOG_FORMAT = env.str("AIWM_LOG_FORMAT", default="plain").strip().lower()
if AIWM_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"AIWM_LOG_FORMAT must be plain or json, not {AIWM_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "aiwm_project.correlation.CorrelationIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"},
        "json": {"()": "aiwm_project.correlation.JsonLogFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": AIWM_LOG_FORMAT, "filters": ["correlation"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# The embedded default runs the periodic sweep in the web process (Celery beat does with Redis).
AIWM_IN_PROCESS_SWEEP = env.bool("AIWM_IN_PROCESS_SWEEP", default=True)
# Garbage collector settings of the web process (aiwm_project.asgi.tune_gc_for_a_socket_server).
AIWM_GC_TUNING = env.bool("AIWM_GC_TUNING", default=True)
AIWM_GC_YOUNG_THRESHOLD = env.int("AIWM_GC_YOUNG_THRESHOLD", default=50_000)
