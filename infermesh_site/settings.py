"""Django settings for infermesh, read from the environment with embedded defaults.

With nothing set, one machine runs everything: SQLite in `MESH_DATA_DIR`, an in-memory
channel layer and in-process agents. docs/configuration.md lists every variable.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
import whitenoise.compress
from django.core.exceptions import ImproperlyConfigured

from infermesh_site.env import env_bool, env_choice, env_int, env_list, env_str
from meshcore.replication.addresses import raft_address_problem

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

MESH_DATA_DIR = Path(env_str("MESH_DATA_DIR") or BASE_DIR / "var").resolve()


def _generated_secret(secret_file: Path) -> str:
    """A random secret made once and kept, owner-only, in `secret_file` (so it survives restarts)."""
    if secret_file.exists():
        return secret_file.read_text().strip()
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(50)
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    return secret


SECRET_KEY = env_str("SECRET_KEY")
QUICKSTART_SECRET_FILE = MESH_DATA_DIR / "secret_key"
if not SECRET_KEY and QUICKSTART_SECRET_FILE.is_file():
    # The key scripts/quickstart made: manage.py commands run beside it find it by themselves.
    SECRET_KEY = QUICKSTART_SECRET_FILE.read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE, or write {QUICKSTART_SECRET_FILE}) "
            "to a long random value, "
            "for example the output of: python -c 'import secrets; print(secrets.token_urlsafe(50))'. "
            "Only a DEBUG=1 run generates one by itself."
        )
    SECRET_KEY = _generated_secret(MESH_DATA_DIR / "debug_secret_key")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"CSRF_TRUSTED_ORIGINS entry {_origin!r} needs a scheme, for example https://mesh.example.com."
        )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "meshcore",
    "dashboard",
    "agents",
]

MIDDLEWARE = [
    "meshcore.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "meshcore.idempotency.IdempotencyKeyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: makes Django run the whole stack above in one thread (see meshcore/sync_stack.py).
    "meshcore.sync_stack.SyncStackMiddleware",
]

ROOT_URLCONF = "infermesh_site.urls"
ASGI_APPLICATION = "infermesh_site.asgi.application"

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


def _database_from_url(url: str | None) -> dict:
    if not url:
        MESH_DATA_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{MESH_DATA_DIR / 'infermesh.sqlite3'}"
    try:
        database = dj_database_url.parse(url)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"DATABASE_URL cannot be used ({error}). Use postgres://USER@HOST:PORT/NAME or sqlite:///ABSOLUTE/PATH."
        ) from None
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers go on while one writer commits; IMMEDIATE avoids upgrade deadlocks.
        database["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
            "transaction_mode": "IMMEDIATE",
        }
        database["CONN_MAX_AGE"] = 0
    elif database["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI each request runs in a thread of its own, so connections kept per thread pile
        # up until PostgreSQL refuses clients; a pool per process bounds them and reuses them.
        database["CONN_MAX_AGE"] = 0
        database["CONN_HEALTH_CHECKS"] = True  # a connection that broke while pooled is replaced
        database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env_int("MESH_DB_POOL_SIZE", 20, minimum=2, maximum=1000),
            "timeout": env_int("MESH_DB_POOL_TIMEOUT", 10, minimum=1, maximum=600),
            "name": "infermesh",
        }
    return database


if env_str("MESH_DB_CONN_MAX_AGE") is not None:
    raise ImproperlyConfigured(
        "MESH_DB_CONN_MAX_AGE is no longer read: PostgreSQL connections now come from a pool "
        "(MESH_DB_POOL_SIZE per process, MESH_DB_POOL_TIMEOUT seconds to wait for one). Unset it."
    )


DATABASES = {"default": _database_from_url(env_str("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "meshcore.User"

REDIS_URL = env_str("REDIS_URL") or None
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"REDIS_URL={REDIS_URL!r} is not a Redis URL; use redis://HOST:PORT/DB, rediss:// for TLS, or unix://."
    )

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "infermesh"},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Sessions must work on every replica: kept in Redis when there is one, else in signed cookies
# (which every replica can check because they share SECRET_KEY).
SESSION_ENGINE = (
    "django.contrib.sessions.backends.cache" if REDIS_URL else "django.contrib.sessions.backends.signed_cookies"
)

# Celery: the agents' broker. Unset means the collectors run inside `serve` instead.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
# Agents on GPU hosts need a broker; without one, `serve` runs the local agent itself.
MESH_BROKER_SET = bool(env_str("CELERY_BROKER_URL"))
CELERY_TASK_IGNORE_RESULT = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or MESH_DATA_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# In DEBUG, whitenoise serves straight from the apps so no collectstatic is needed.
WHITENOISE_USE_FINDERS = DEBUG
# Source maps (the API docs' bundles carry megabytes of them) are fetched only by a browser's developer
# tools: compressing them in advance doubled collectstatic's time for nothing a user waits on.
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = (*whitenoise.compress.Compressor.SKIP_COMPRESS_EXTENSIONS, "map")
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/admin/login/"

# HTTPS: off by default for the loopback quick start; docs/configuration.md lists the production set.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
if env_bool("MESH_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "meshcore.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["meshcore.api.permissions.ReadAuthenticatedWriteStaff"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "meshcore.api.pagination.MeshPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "meshcore.api.errors.mesh_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_THROTTLE_RATES": {},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "infermesh API",
    "DESCRIPTION": "Control plane of the infermesh GPU inference mesh: nodes, models, runtimes, policies and tokens.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"HealthEnum": "meshcore.models.Health"},
}

# Mesh process settings.
# uvicorn (httptools, uvloop) by default: it took 1.5-2x the telemetry ingest rate of daphne (README, Benchmarks).
MESH_ASGI_SERVER = env_choice("MESH_ASGI_SERVER", "uvicorn", ("uvicorn", "daphne"))
MESH_LOG_FORMAT = env_choice("MESH_LOG_FORMAT", "text", ("text", "json"))
MESH_LOG_LEVEL = env_choice("MESH_LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
MESH_API_PAGE_SIZE = env_int("MESH_API_PAGE_SIZE", 50, minimum=1, maximum=1000)
# Events: kept this many days and at most this many rows; pruned every MESH_EVENT_PRUNE_INTERVAL seconds.
MESH_EVENT_RETENTION_DAYS = env_int("MESH_EVENT_RETENTION_DAYS", 7, minimum=1)
MESH_EVENT_RETENTION_MAX = env_int("MESH_EVENT_RETENTION_MAX", 100_000, minimum=1)
MESH_EVENT_PRUNE_INTERVAL = env_int("MESH_EVENT_PRUNE_INTERVAL", 300, minimum=1, maximum=86_400)

# The router and /proxy (docs/proxy.md).
MESH_PROXY_ALLOW_ANONYMOUS = env_bool("MESH_PROXY_ALLOW_ANONYMOUS", False)
MESH_PROXY_MAX_BODY_BYTES = env_int("MESH_PROXY_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)
# Used for a model no load_balancing policy names (a policy sets its own).
MESH_PROXY_STRATEGY = env_choice(
    "MESH_PROXY_STRATEGY", "score_based", ("score_based", "least_request", "round_robin", "random")
)
MESH_PROXY_RETRIES = env_int("MESH_PROXY_RETRIES", 1, minimum=0, maximum=10)
# The retry budget: retries in flight at most 20% of the requests in flight, or this many (Envoy's default 3).
MESH_PROXY_RETRY_BUDGET_MIN = env_int("MESH_PROXY_RETRY_BUDGET_MIN", 3, minimum=0, maximum=10_000)
MESH_PROXY_TIMEOUT_MS = env_int("MESH_PROXY_TIMEOUT_MS", 30_000, minimum=1, maximum=600_000)
# Outlier ejection: this many failures in a row eject a target for EJECTION_S x times ejected, at most MAX.
MESH_PROXY_EJECT_AFTER_FAILURES = env_int("MESH_PROXY_EJECT_AFTER_FAILURES", 5, minimum=1, maximum=1000)
MESH_PROXY_EJECTION_S = env_int("MESH_PROXY_EJECTION_S", 30, minimum=1, maximum=3600)
MESH_PROXY_MAX_EJECTION_S = env_int("MESH_PROXY_MAX_EJECTION_S", 300, minimum=1, maximum=86400)
MESH_PROXY_SEQUENCE_IDLE_S = env_int("MESH_PROXY_SEQUENCE_IDLE_S", 600, minimum=1, maximum=86400)
# A node whose last report is older than this (or than 3 of its report intervals) routes nothing.
MESH_ROUTING_STALE_MS = env_int("MESH_ROUTING_STALE_MS", 3000, minimum=100, maximum=600_000)
# GET /metrics without a staff API token.
MESH_METRICS_PUBLIC = env_bool("MESH_METRICS_PUBLIC", False)

# Live fleet state (docs/telemetry.md): agent reports, the live state store, the local agent.
MESH_TELEMETRY_PATH = env_choice("MESH_TELEMETRY_PATH", "lean", ("lean", "django"))
MESH_TELEMETRY_HISTORY_POINTS = env_int("MESH_TELEMETRY_HISTORY_POINTS", 300, minimum=10, maximum=86400)
MESH_LIVE_STATE_PREFIX = env_str("MESH_LIVE_STATE_PREFIX") or "infermesh:live:"
# Runtime discovery: a Triton an agent reports that nobody registered is registered through the
# log (event RUNTIME_DISCOVERED); off, it is ignored until an operator registers it.
MESH_RUNTIME_DISCOVERY = env_bool("MESH_RUNTIME_DISCOVERY", True)
# The embedded agent collects for this machine inside `serve` when no broker is configured.
MESH_LOCAL_AGENT = env_choice("MESH_LOCAL_AGENT", "auto", ("auto", "on", "off"))
MESH_LOCAL_NODE = env_str("MESH_LOCAL_NODE") or ""
MESH_LOCAL_TRITON_URLS = env_list("MESH_LOCAL_TRITON_URLS", ["http://127.0.0.1:8100"])
# Their metrics endpoints, in the same order; default: port 8002 on the same host.
MESH_LOCAL_TRITON_METRICS_URLS = env_list("MESH_LOCAL_TRITON_METRICS_URLS", [])
for _name, _urls in (
    ("MESH_LOCAL_TRITON_URLS", MESH_LOCAL_TRITON_URLS),
    ("MESH_LOCAL_TRITON_METRICS_URLS", MESH_LOCAL_TRITON_METRICS_URLS),
):
    for _url in _urls:
        if not _url.split("=", 1)[-1].startswith(("http://", "https://")):
            raise ImproperlyConfigured(f"{_name} has {_url!r}; give comma-separated http(s) URLs (NAME=URL names one).")
MESH_LOCAL_GPUS = env_choice("MESH_LOCAL_GPUS", "auto", ("auto", "nvml", "simulated"))
MESH_LOCAL_AGENT_INTERVAL_MS = env_int("MESH_LOCAL_AGENT_INTERVAL_MS", 1000, minimum=100, maximum=60_000)

# Replication of desired state (Raft, PySyncObj). docs/replication.md explains each setting.
MESH_REPLICATION = env_choice("MESH_REPLICATION", "raft", ("raft", "local"))
MESH_RAFT_ADDRESS = env_str("MESH_RAFT_ADDRESS") or "127.0.0.1:4321"
MESH_RAFT_PEERS = env_list("MESH_RAFT_PEERS", [])
MESH_RAFT_DIR = Path(env_str("MESH_RAFT_DIR") or MESH_DATA_DIR / "raft")
MESH_RAFT_STORAGE = env_choice("MESH_RAFT_STORAGE", "disk", ("disk", "memory"))
MESH_RAFT_WRITE_TIMEOUT = env_int("MESH_RAFT_WRITE_TIMEOUT", 10, minimum=1, maximum=300)
MESH_RAFT_SNAPSHOT_ENTRIES = env_int("MESH_RAFT_SNAPSHOT_ENTRIES", 20_000, minimum=10)
MESH_RAFT_PROFILE = env_choice("MESH_RAFT_PROFILE", "tuned", ("tuned", "pysyncobj-defaults"))
# What a replica encrypts its Raft messages with; it reads both. "fernet" (PySyncObj's) while replicas of
# releases before infermesh's own cipher remain in the cluster (meshcore/replication/cipher.py).
MESH_RAFT_CIPHER = env_choice("MESH_RAFT_CIPHER", "aes-gcm-siv", ("aes-gcm-siv", "fernet"))
for _name, _addresses in (("MESH_RAFT_ADDRESS", [MESH_RAFT_ADDRESS]), ("MESH_RAFT_PEERS", MESH_RAFT_PEERS)):
    for _address in _addresses:
        # The same check as a cluster member added through the API or `manage.py cluster_member`.
        if _problem := raft_address_problem(_address):
            raise ImproperlyConfigured(f"{_name}: {_problem}")
if MESH_RAFT_ADDRESS in MESH_RAFT_PEERS:
    raise ImproperlyConfigured("MESH_RAFT_PEERS lists this replica's own MESH_RAFT_ADDRESS; list only the others.")
MESH_RAFT_PASSWORD = env_str("MESH_RAFT_PASSWORD") or ""
if MESH_RAFT_PEERS and len(MESH_RAFT_PASSWORD) < 16:
    raise ImproperlyConfigured(
        "MESH_RAFT_PEERS names other replicas but MESH_RAFT_PASSWORD is not set (or shorter than 16 characters). "
        "PySyncObj unpickles whatever arrives on its port, so an unencrypted Raft port is remote code execution: "
        "set the same long random MESH_RAFT_PASSWORD (or MESH_RAFT_PASSWORD_FILE) on every replica."
    )


if not MESH_RAFT_PASSWORD and MESH_REPLICATION == "raft":
    # A lone replica still encrypts its port, with a password nobody else needs to know.
    MESH_RAFT_PASSWORD = _generated_secret(MESH_RAFT_DIR / "password")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "meshcore.request_id.RequestIdLogFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "meshcore.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": MESH_LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": MESH_LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": MESH_LOG_LEVEL, "propagate": False},
        "daphne": {"level": "WARNING"},
        "uvicorn.error": {"level": "WARNING"},
    },
}
