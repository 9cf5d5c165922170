"""Cache of a user's active segments (the hot read path), on Flask-Caching.

Each entry stores the two generation tokens it was computed under: one per user (bumped
after a write to that user commits) and one global (bumped when a segment is deleted, a
rollout changes or a bulk add lands). A read fetches the entry and both current tokens in
one MGET and uses the entry only if the tokens match, so invalidation is one SET, never a
scan, and a read that raced a write can never serve what it computed. An entry lives at
most until the earliest ``expires_at`` it contains, and a hit holding an expired
membership is a miss. When the cache backend is down, the database answers.
"""
from __future__ import annotations

import math
from datetime import datetime

from flask import current_app
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from webapp.extensions import cache
from webapp.services.common import utcnow
from webapp.services.invalidation import GLOBAL_GENERATION, outage, user_generation
from webapp.services.memberships import ActiveSegment, active_segments


def _entry_key(user_id: int) -> str:
    return f"segments:{user_id}"


def cached_active_segments(session: Session, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """Same answer as :func:`active_segments`, served from the cache when possible."""
    now = now or utcnow()
    try:
        everyone, user, entry = cache.get_many(GLOBAL_GENERATION, user_generation(user_id), _entry_key(user_id))
        outage.ok()
    except Exception as exc:  # backend down: the database answers
        outage.failed(exc)
        return active_segments(_read_connection(session), user_id, now)
    if entry is not None and entry[0] == (everyone, user) and all(e is None or e > now for _, _, e in entry[1]):
        return [ActiveSegment(*item) for item in entry[1]]
    result = active_segments(_read_connection(session), user_id, now)
    timeout = current_app.config["CACHE_DEFAULT_TIMEOUT"]
    expiries = [a.expires_at for a in result if a.expires_at is not None]
    if expiries:
        timeout = max(1, min(timeout, math.ceil((min(expiries) - now).total_seconds())))
    try:
        cache.set(_entry_key(user_id), ((everyone, user), [(a.slug, a.source, a.expires_at) for a in result]),
                  timeout=timeout)
    except Exception as exc:
        outage.failed(exc)
    return result


def _read_connection(session: Session) -> Session | Connection:
    """Read outside a transaction when nothing else is in one: no BEGIN/ROLLBACK round
    trips on the hot path. (A session already in a transaction, or bound to an outer
    connection as in the tests, is used as it is.)"""
    current = session() if isinstance(session, scoped_session) else session
    if current.in_transaction() or isinstance(current.get_bind(), Connection):
        return current
    return current.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
