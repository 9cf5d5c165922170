"""The hot read path: which segments is user N in now?

Exact by construction, with no cache to invalidate. Each process keeps the segment catalog
(live segments: id, slug, salt, rollout) in memory, labelled with the ``catalog_version`` it
was read under. One statement returns the user's own rows (explicit memberships by primary
key, rollout exclusions) *and* the current catalog version, from one snapshot. If the
version differs from the one in memory the catalog is reloaded (its version read in the same
statement as its rows) and the read repeats. Every transaction that changes the catalog
increments the version before it commits, so a read never combines a user's rows with an
older catalog than the one they were written against. Nothing on this path touches Redis.

Reads inside a write transaction (a change's response) see that transaction's own rows and
catalog; a catalog read there is never kept, since the transaction may still roll back.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, scoped_session

from webapp.models.enums import Source
from webapp.services import rollout
from webapp.services.common import DbSession, check_user_id, utcnow

USER_ROWS = text("""
SELECT 0, segment_id, expires_at FROM memberships WHERE user_id = :user
UNION ALL SELECT 1, segment_id, NULL FROM rollout_exclusions WHERE user_id = :user
UNION ALL SELECT 2, version, NULL FROM catalog_version
""")
CATALOG = text("""
SELECT v.version, s.id, s.slug, s.salt, s.rollout_basis_points
FROM catalog_version v LEFT JOIN segments s ON s.deleted_at IS NULL
""")
MAX_ATTEMPTS = 5  # a catalog that changes five times during one read is re-read that often


@dataclass(frozen=True)
class ActiveSegment:
    slug: str
    source: Source
    expires_at: datetime | None


@dataclass(frozen=True)
class CatalogSegment:
    id: int
    slug: str
    salt: str
    rollout_basis_points: int


@dataclass(frozen=True)
class Catalog:
    version: int
    segments: dict[int, CatalogSegment]
    rollouts: tuple[CatalogSegment, ...]  # live segments with a rollout above 0%


_lock = threading.Lock()
_kept: dict[str, Catalog] = {}  # per database URL (one app, or several in tests)


def active_segments(db: Session | scoped_session[Any] | Connection, user_id: int,
                    now: datetime | None = None, *, keep_catalog: bool = False) -> list[ActiveSegment]:
    """Segments the user is in at ``now``, sorted by slug.

    Explicit memberships count until ``expires_at`` (exclusive) whether or not the purge has
    run; rollout segments count when the user's bucket is under the percentage and the user
    was not explicitly removed from that segment. ``keep_catalog``: ``db`` sees committed data
    only (autocommit), so a catalog it loads may be kept for later reads.
    """
    check_user_id(user_id)
    now = now or utcnow()
    bind = db.get_bind() if isinstance(db, (Session, scoped_session)) else db
    key = str(bind.url if isinstance(bind, Engine) else bind.engine.url)
    catalog = _kept.get(key)
    for _ in range(MAX_ATTEMPTS):
        rows = db.execute(USER_ROWS, {"user": user_id}).all()
        version = next(sid for kind, sid, _ in rows if kind == 2)
        if catalog is None or catalog.version != version:
            catalog = load_catalog(db)
            if keep_catalog:
                with _lock:
                    _kept[key] = catalog
            if catalog.version != version:
                continue  # the catalog moved on between the two statements: read the user again
        return _evaluate(catalog, rows, user_id, now)
    raise RuntimeError("the segment catalog kept changing during one read")


def hot_read(session: DbSession | scoped_session[Session], user_id: int) -> list[ActiveSegment]:
    """:func:`active_segments` for a request that writes nothing: on a connection in
    autocommit mode (no BEGIN/ROLLBACK round trips). A session already in a transaction,
    or bound to an outer connection as in the tests, is used as it is."""
    current = session() if isinstance(session, scoped_session) else session
    if current.in_transaction() or isinstance(current.get_bind(), Connection):
        return active_segments(current, user_id)
    connection = current.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return active_segments(connection, user_id, keep_catalog=True)


def load_catalog(db: Session | scoped_session[Any] | Connection) -> Catalog:
    rows = db.execute(CATALOG).all()  # at least one row: the version, with NULLs when no segment is live
    segments = {sid: CatalogSegment(sid, slug, salt, bp) for _, sid, slug, salt, bp in rows if sid is not None}
    version = rows[0][0]
    rollouts = tuple(s for s in segments.values() if s.rollout_basis_points > 0)
    return Catalog(version, segments, rollouts)


def _evaluate(catalog: Catalog, rows: Sequence[Any], user_id: int, now: datetime) -> list[ActiveSegment]:
    explicit: dict[int, datetime | None] = {}
    excluded: set[int] = set()
    for kind, sid, expires_at in rows:
        if kind == 0 and (expires_at is None or expires_at > now):
            explicit[sid] = expires_at
        elif kind == 1:
            excluded.add(sid)
    found = [ActiveSegment(catalog.segments[sid].slug, Source.EXPLICIT, until)
             for sid, until in explicit.items() if sid in catalog.segments]
    found += [ActiveSegment(s.slug, Source.ROLLOUT, None) for s in catalog.rollouts
              if s.id not in explicit and s.id not in excluded
              and rollout.in_rollout(s.salt, user_id, s.rollout_basis_points)]
    return sorted(found, key=lambda a: a.slug)
