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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import psycopg
from sqlalchemy import URL, Engine

from webapp.models.enums import Source
from webapp.models.membership import live
from webapp.models.segment import LIVE_SEGMENT_SQL
from webapp.services import rollout
from webapp.services.common import DbSession, check_user_id, utcnow

# Driver-level SQL (psycopg parameters): the hot path skips the ORM. Kinds: 0 explicit
# membership, 1 rollout exclusion, 2 the catalog version (always present).
USER_ROWS = """
SELECT 0, segment_id, expires_at FROM memberships WHERE user_id = %(user)s
UNION ALL SELECT 1, segment_id, NULL FROM rollout_exclusions WHERE user_id = %(user)s
UNION ALL SELECT 2, version, NULL FROM catalog_version
"""
CATALOG = f"""
SELECT v.version, s.id, s.slug, s.salt, s.rollout_basis_points
FROM catalog_version v LEFT JOIN segments s ON s.{LIVE_SEGMENT_SQL}
"""
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
    # live segments with a rollout above 0%: (id, the answer's entry, prefix(salt), basis points)
    rollouts: tuple[tuple[tuple[int, ActiveSegment], Any, int], ...]


_lock = threading.Lock()
_kept: dict[URL, Catalog] = {}  # per database (one app, or several in tests)


Execute = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]


def active_segments(session: DbSession, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """Segments the user is in at ``now``, sorted by slug, as ``session`` sees them (its own
    uncommitted writes included; a catalog read here is never kept).

    Explicit memberships count until ``expires_at`` (exclusive) whether or not the purge has
    run; rollout segments count when the user's bucket is under the percentage and the user
    was not explicitly removed from that segment.
    """
    connection = session.connection()
    return _read(lambda sql, params: connection.exec_driver_sql(sql, params).all(),
                 connection.engine.url, user_id, now, keep=False)


def hot_read(engine: Engine, user_id: int, now: datetime | None = None) -> list[ActiveSegment]:
    """:func:`active_segments` of committed data for a request that writes nothing: straight
    on a pooled driver connection in autocommit mode (no ORM, no BEGIN/ROLLBACK, no pre-ping:
    a connection the server dropped is replaced and the read retried once)."""
    for attempt in (1, 2):
        connection = engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            if not driver.autocommit:  # (the read engine connects in autocommit mode)
                driver.autocommit = True
            return _read(_executor(driver), engine.url, user_id, now, keep=True)
        except psycopg.OperationalError:
            connection.invalidate()
            if attempt == 2:
                raise
        finally:
            connection.close()  # back to the pool (or discarded, if invalidated)
    raise AssertionError("unreachable")


def _executor(driver: psycopg.Connection[Any]) -> Execute:
    def execute(sql: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        with driver.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    return execute


def _read(execute: Execute, key: URL, user_id: int, now: datetime | None, *, keep: bool) -> list[ActiveSegment]:
    check_user_id(user_id)
    now = now or utcnow()
    catalog = _kept.get(key)
    for _ in range(MAX_ATTEMPTS):
        rows = execute(USER_ROWS, {"user": user_id})
        version = next(sid for kind, sid, _ in rows if kind == 2)
        if catalog is None or catalog.version != version:
            catalog = _catalog(execute(CATALOG, {}))
            if keep:
                with _lock:
                    _kept[key] = catalog
            if catalog.version != version:
                continue  # the catalog moved on between the two statements: read the user again
        return _evaluate(catalog, rows, user_id, now)
    raise RuntimeError("the segment catalog kept changing during one read")


def _catalog(rows: Sequence[Sequence[Any]]) -> Catalog:
    """Rows of CATALOG (at least one: the version, with NULLs when no segment is live)."""
    segments = {sid: CatalogSegment(sid, slug, salt, bp) for _, sid, slug, salt, bp in rows if sid is not None}
    rollouts = tuple(((s.id, ActiveSegment(s.slug, Source.ROLLOUT, None)), rollout.prefix(s.salt),
                      s.rollout_basis_points) for s in segments.values() if s.rollout_basis_points > 0)
    return Catalog(rows[0][0], segments, rollouts)


def _evaluate(catalog: Catalog, rows: Sequence[Sequence[Any]], user_id: int, now: datetime) -> list[ActiveSegment]:
    explicit: dict[int, datetime | None] = {}
    excluded: set[int] = set()
    for kind, sid, expires_at in rows:
        if kind == 0 and live(expires_at, now):
            explicit[sid] = expires_at
        elif kind == 1:
            excluded.add(sid)
    found = [ActiveSegment(catalog.segments[sid].slug, Source.EXPLICIT, until)
             for sid, until in explicit.items() if sid in catalog.segments]
    found += [entry for sid, entry in rollout.covering(catalog.rollouts, user_id)
              if sid not in explicit and sid not in excluded]
    return sorted(found, key=attrgetter("slug"))
