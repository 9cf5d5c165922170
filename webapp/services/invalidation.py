"""Cache invalidation by generation tokens (see segment_cache), run after commit.

A bump stores a new, never reused token (nanosecond clock) without expiry; even if the
backend evicts a token, no old entry can come back under a later one.
"""
from __future__ import annotations

import time

from webapp.extensions import cache
from webapp.redis_client import OutageLog
from webapp.transaction import after_commit

GLOBAL_GENERATION = "gen:all"
outage = OutageLog("cache")


def user_generation(user_id: int) -> str:
    return f"gen:user:{user_id}"


def bump(key: str) -> None:
    try:
        cache.set(key, time.time_ns(), timeout=0)
        outage.ok()
    except Exception as exc:  # backend down: entries still die by their timeout
        outage.failed(exc)


def user_changed(user_id: int) -> None:
    """Forget the user's cached segments once the current transaction commits."""
    after_commit(lambda: bump(user_generation(user_id)))


def everyone_changed() -> None:
    """Forget every cached user once the current transaction commits."""
    after_commit(lambda: bump(GLOBAL_GENERATION))
