"""Cache of a user's active segments (the hot read path), on Flask-Caching.

Keys carry two generation tokens: one per user (bumped after a write to that user
commits) and one global (bumped when a segment is deleted, a rollout changes or a bulk add
lands). Invalidation is one SET, never a scan, and a read that raced a write stores its
result under the old generation, where nobody looks again. An entry lives at most until
the earliest ``expires_at`` it contains, and a hit holding an expired membership is
treated as a miss. When the cache backend is down, reads and writes go to the database.
"""
from __future__ import annotations

import math
from datetime import datetime

from flask import current_app
from sqlalchemy.orm import Session

from webapp.extensions import cache
from webapp.services.common import utcnow
from webapp.services.invalidation import GLOBAL_GENERATION, outage, user_generation
from webapp.services.memberships import ActiveSegment, active_segments


def cached_active_segments(session: Session, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """Same answer as :func:`active_segments`, served from the cache when possible."""
    now = now or utcnow()
    try:
        generations = cache.get_many(GLOBAL_GENERATION, user_generation(user_id))
        key = "segments:{}:{}:{}".format(user_id, *(g or 0 for g in generations))
        hit = cache.get(key)
        outage.ok()
    except Exception as exc:  # backend down: the database answers
        outage.failed(exc)
        return active_segments(session, user_id, now)
    if hit is not None and all(expires is None or expires > now for _, _, expires in hit):
        return [ActiveSegment(*entry) for entry in hit]
    result = active_segments(session, user_id, now)
    timeout = current_app.config["CACHE_DEFAULT_TIMEOUT"]
    expiries = [a.expires_at for a in result if a.expires_at is not None]
    if expiries:
        timeout = max(1, min(timeout, math.ceil((min(expiries) - now).total_seconds())))
    try:
        cache.set(key, [(a.slug, a.source, a.expires_at) for a in result], timeout=timeout)
    except Exception as exc:
        outage.failed(exc)
    return result
