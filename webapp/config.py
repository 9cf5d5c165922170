"""Configuration read from the environment (12-factor); TestConfig for pytest.

``DATABASE_URL`` and ``REDIS_URL`` are required: the app refuses to start without them. The
local stack (``make run``, the top-level ``devstack`` package) runs PostgreSQL and Redis under
``instance/`` and passes their URLs; the tests pass their own.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = Path(os.environ.get("SEGMENTS_INSTANCE", ROOT / "instance"))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_list(name: str) -> list[str] | None:
    """A list setting, its items separated by commas and/or spaces; None when empty."""
    return [item for item in os.environ.get(name, "").replace(",", " ").split() if item] or None


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


class Config:
    """Production/development settings; every value can be overridden by an env var."""

    SECRET_KEY = os.environ.get("SECRET_KEY", "")  # required (32+ chars) unless testing
    DATABASE_URL = os.environ.get("DATABASE_URL", "")  # required: empty refuses to start
    REDIS_URL = os.environ.get("REDIS_URL", "")  # required: empty refuses to start
    SQLALCHEMY_DATABASE_URI = ""  # derived from DATABASE_URL in create_app
    # Pre-ping survives a database restart; measured at 1% of uncached read throughput.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": _env_bool("DB_POOL_PRE_PING", True), "pool_recycle": 1800}
    # Streaming replicas of DATABASE_URL for the hot reads (webapp/services/reads/replicas.py; none: every
    # read on the primary). REPLICA_READS: exact (a read without a Segments-Consistency token reads
    # the primary: no answer changes) or bounded (a replica within REPLICA_MAX_LAG_MS serves it).
    # A tokened read waits up to REPLICA_WAIT_MS for a replica to replay its token (at most
    # REPLICA_MAX_WAITERS reads per process waiting at once), then reads the primary (at most
    # REPLICA_MAX_FALLBACKS per process at once while replicas are behind); a replica that cannot
    # be reached is skipped for REPLICA_RETRY_SECONDS.
    DATABASE_REPLICA_URLS = _env_list("DATABASE_REPLICA_URLS") or []
    REPLICA_READS = os.environ.get("REPLICA_READS", "exact")
    REPLICA_MAX_LAG_MS = _env_int("REPLICA_MAX_LAG_MS", 1000)
    REPLICA_WAIT_MS = _env_int("REPLICA_WAIT_MS", 5)
    REPLICA_MAX_WAITERS = _env_int("REPLICA_MAX_WAITERS", 2)
    REPLICA_MAX_FALLBACKS = _env_int("REPLICA_MAX_FALLBACKS", 4)
    REPLICA_RETRY_SECONDS = float(os.environ.get("REPLICA_RETRY_SECONDS", "5"))
    REPORTS_DIR = os.environ.get("REPORTS_DIR", str(INSTANCE / "reports"))
    REPORT_RETENTION_DAYS = _env_int("REPORT_RETENTION_DAYS", 7)
    # Background membership operations (webapp/services/membership/bulk.py) and the purge: ids
    # per chunk (0: the built-in 2,000) and a pause after each chunk's commit, others' turn:
    # BULK_PAUSE_MS, or BULK_PAUSE_RATIO times the chunk's own time when that is longer (the
    # default, 1: the operation has the machine half the time; docs/configuration.md).
    BULK_CHUNK = _env_int("BULK_CHUNK", 0)
    BULK_PAUSE_MS = _env_int("BULK_PAUSE_MS", 0)
    BULK_PAUSE_RATIO = float(os.environ.get("BULK_PAUSE_RATIO", "1"))
    REPORT_PROGRESS_MS = _env_int("REPORT_PROGRESS_MS", 1000)
    # Months of membership history kept: the nightly job drops each monthly partition of
    # membership_events once its whole month is older than this. 0 = keep forever.
    HISTORY_RETENTION_MONTHS = _env_int("HISTORY_RETENTION_MONTHS", 0)
    # Days a deleted segment can be restored (its members and exclusions are kept that long;
    # the nightly job drops them afterwards).
    RESTORE_DAYS = _env_int("RESTORE_DAYS", 30)
    EXPIRY_CRON = os.environ.get("EXPIRY_CRON", "0 0 * * *")
    EXPIRY_BATCH_SIZE = _env_int("EXPIRY_BATCH_SIZE", 50_000)
    # A started job whose worker has sent no heartbeat for this long is orphaned (the worker
    # died with it) and is retried or failed by the next idle worker's registry cleaning,
    # which runs this often (RQ's default: 10 minutes after a heartbeat window of 90 s).
    JOB_ORPHAN_SECONDS = _env_int("JOB_ORPHAN_SECONDS", 60)
    # How often `flask scheduler` moves due periodic jobs onto the queue, and the longest wait
    # between its reconnection attempts while Redis is away (1 s, doubling up to this).
    SCHEDULER_INTERVAL_SECONDS = _env_int("SCHEDULER_INTERVAL_SECONDS", 30)
    SCHEDULER_RECONNECT_MAX_SECONDS = _env_int("SCHEDULER_RECONNECT_MAX_SECONDS", 30)
    MAX_CONTENT_LENGTH = _env_int("MAX_CONTENT_LENGTH", 32 * 1024 * 1024)
    # The one route allowed a larger body: a trait import's file (POST /api/v1/users/traits:import),
    # streamed to a temporary file, never held in memory (nginx allows it there only, 1g).
    TRAIT_IMPORT_MAX_BYTES = _env_int("TRAIT_IMPORT_MAX_BYTES", 1024 * 1024 * 1024)
    PER_PAGE_DEFAULT = 50
    PER_PAGE_MAX = 500
    # Redis keys of the reach cache (services/reads/reach.py: JSON entries); the read path needs no cache.
    CACHE_KEY_PREFIX = os.environ.get("CACHE_KEY_PREFIX", "segments:")
    # Rate limits per client (token name, else IP) on Redis, with an in-memory fallback while
    # Redis is unreachable. Empty = no limit. The hot read path has its own (default none).
    RATELIMIT_ENABLED = _env_bool("RATELIMIT_ENABLED", True)
    RATELIMIT_READ = os.environ.get("RATELIMIT_READ", "")
    RATELIMIT_WRITE = os.environ.get("RATELIMIT_WRITE", "300/minute")
    RATELIMIT_HOT_PATH = os.environ.get("RATELIMIT_HOT_PATH", "")
    RATELIMIT_REPORTS = os.environ.get("RATELIMIT_REPORTS", "20/minute")  # report requests per client
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_HEADER_LIMIT = "RateLimit-Limit"
    RATELIMIT_HEADER_REMAINING = "RateLimit-Remaining"
    RATELIMIT_HEADER_RESET = "RateLimit-Reset"
    RATELIMIT_HEADER_RETRY_AFTER = "Retry-After"
    RATELIMIT_KEY_PREFIX = "segments-rl"
    # "name:token[:scope],..." (scope read, reports or write; none = write); when set, API calls
    # must send "Authorization: Bearer <token>" and stay within the token's scope.
    API_TOKENS = os.environ.get("API_TOKENS", "")
    IDEMPOTENCY_TTL = _env_int("IDEMPOTENCY_TTL", 24 * 3600)
    # OpenFeature (OFREP): the shortest polling interval GET /ofrep/v1/configuration tells
    # providers (bulk evaluation with If-None-Match; every answer is exact whenever it is asked).
    OFREP_MIN_POLLING_INTERVAL_MS = _env_int("OFREP_MIN_POLLING_INTERVAL_MS", 1000)
    # /metrics (Prometheus text): open when empty (scraped on the internal network, never through
    # nginx), else only with "Authorization: Bearer <METRICS_TOKEN>".
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
    # Where the one JSON line per request goes: stderr, stdout or off (webapp.telemetry.observability.RequestLog).
    REQUEST_LOG = os.environ.get("REQUEST_LOG", "stderr")
    # How often each process adds its in-memory segment read counts to Redis and the metrics.
    READ_COUNTS_FLUSH_SECONDS = float(os.environ.get("READ_COUNTS_FLUSH_SECONDS", "5"))
    # The dashboard's user comes from the SSO proxy in front of it; DASHBOARD_OPEN serves it to
    # anyone (local use; the local stack of make run turns it on and the page says so).
    DASHBOARD_USER_HEADER = os.environ.get("DASHBOARD_USER_HEADER", "X-Forwarded-Email")
    DASHBOARD_OPEN = _env_bool("DASHBOARD_OPEN", False)
    TRUSTED_PROXIES = _env_int("TRUSTED_PROXIES", 0)  # reverse proxies whose X-Forwarded-* are believed
    # The host names this service answers for (Flask's TRUSTED_HOSTS; ".example.com" takes its
    # subdomains too): absolute links are built only for them, any other Host answers 400
    # (/healthz and /readyz excepted). Required in production; the local stack uses localhost.
    TRUSTED_HOSTS = _env_list("TRUSTED_HOSTS")
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)  # also Secure on any https request
    WTF_CSRF_CHECK_DEFAULT = True
    WTF_CSRF_TIME_LIMIT = _env_int("CSRF_TIME_LIMIT", 8 * 3600)
    # Webhooks (issue 27, docs/webhooks.md): one attempt's deadline, the answer read at most,
    # deliveries in flight per subscription and per delivery job, the retry backoff (doubling
    # from BASE up to MAX), how long a subscription may fail before it is disabled, and which
    # destinations are allowed besides public addresses (never loopback in production).
    WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "10"))
    WEBHOOK_MAX_RESPONSE_BYTES = _env_int("WEBHOOK_MAX_RESPONSE_BYTES", 65_536)
    WEBHOOK_CONCURRENCY = _env_int("WEBHOOK_CONCURRENCY", 4)
    WEBHOOK_POOL = _env_int("WEBHOOK_POOL", 16)
    WEBHOOK_RETRY_BASE_SECONDS = float(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "5"))
    WEBHOOK_RETRY_MAX_SECONDS = float(os.environ.get("WEBHOOK_RETRY_MAX_SECONDS", "3600"))
    WEBHOOK_DISABLE_AFTER_SECONDS = float(os.environ.get("WEBHOOK_DISABLE_AFTER_SECONDS", "86400"))
    WEBHOOK_LEASE_MARGIN_SECONDS = float(os.environ.get("WEBHOOK_LEASE_MARGIN_SECONDS", "30"))
    WEBHOOK_ALLOW_LOOPBACK = _env_bool("WEBHOOK_ALLOW_LOOPBACK", False)
    WEBHOOK_ALLOW_PRIVATE = _env_bool("WEBHOOK_ALLOW_PRIVATE", False)
    WEBHOOK_LINK_SECONDS = _env_int("WEBHOOK_LINK_SECONDS", 24 * 3600)  # a report link's lifetime
    # delivered deliveries kept this long (the dashboard, redelivering), then purged nightly
    WEBHOOK_RETENTION_DAYS = _env_int("WEBHOOK_RETENTION_DAYS", 7)
    # per-user changes per membership.changed delivery (they can be millions: batched)
    WEBHOOK_MEMBERSHIP_BATCH = _env_int("WEBHOOK_MEMBERSHIP_BATCH", 1000)
    # The service's address as its clients reach it (https://segments.example.com): the start of
    # links sent out of a request's reach (a report.finished webhook's download link).
    PUBLIC_URL = os.environ.get("PUBLIC_URL", "").rstrip("/")
    TESTING = False


class TestConfig(Config):
    """pytest: tests/conftest.py supplies DATABASE_URL and REDIS_URL of its own servers."""

    TESTING = True
    SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
    RATELIMIT_ENABLED = False  # the limiter tests switch it on
    RATELIMIT_REPORTS = ""  # (one Limiter serves every app the tests build: no limit leaks between them)
    DASHBOARD_OPEN = True  # the access tests switch it off
    TRUSTED_HOSTS = ["localhost", "127.0.0.1"]  # the test client's Host, and the servers tests start
    WEBHOOK_ALLOW_LOOPBACK = True  # the tests' receivers listen on 127.0.0.1 (only loopback)
    WEBHOOK_TIMEOUT_SECONDS = 2.0
    WEBHOOK_RETRY_BASE_SECONDS = 0.2
    WEBHOOK_RETRY_MAX_SECONDS = 1.0
    WEBHOOK_LEASE_MARGIN_SECONDS = 1.0
