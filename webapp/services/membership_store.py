"""Every membership write, each with its history rows, as set-based PostgreSQL statements.

This module is the only writer of ``memberships``, ``rollout_exclusions`` and
``membership_events``. Each write is one statement (data-modifying CTEs, ``INSERT ... ON
CONFLICT``) that appends its ``membership_events`` rows through :func:`_events`; history rows
are stamped with ``clock_timestamp()`` taken after the row locks, so history order is commit
order (callers may pass an explicit time ``at``: backfills and tests with a fixed clock).

Locking, in one global order so that no two writers deadlock:
1. the user (a transaction-scoped advisory lock, :func:`lock_user`) for per-user changes;
2. segment rows, in id order (share for per-user changes, exclusive for bulk and delete);
3. membership rows. The purge never waits: it skips rows another writer holds.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text

from webapp.models.enums import Reason
from webapp.models.types import UTCDateTime
from webapp.services.common import DbSession

COPY_CHUNK = 100_000
EVENT_COLUMNS = "user_id, segment_id, segment_slug, action, reason, occurred_at, actor"
TIMES = ("now", "at", "expiry")


@dataclass
class Counts:
    """Segment ids the user was added to, and those whose expiry changed."""

    added: set[int]
    updated: set[int]


def _events(select_sql: str) -> str:
    """``INSERT INTO membership_events`` fed by ``select_sql`` (columns as EVENT_COLUMNS)."""
    return f"INSERT INTO membership_events ({EVENT_COLUMNS}) {select_sql}"


def _run(session: DbSession, sql: str, params: Mapping[str, Any]) -> Any:
    """Execute ``sql`` with every timestamp parameter bound as an aware UTC timestamptz."""
    times = [bindparam(name, type_=UTCDateTime) for name in TIMES if f":{name}" in sql]
    return session.execute(text(sql).bindparams(*times), dict(params))


def lock_user(session: DbSession, user_id: int) -> None:
    """Serialise per-user changes: held until the transaction ends. (User ids use the
    one-bigint key space; other advisory locks here use the two-int one, which is distinct.)"""
    session.execute(text("SELECT pg_advisory_xact_lock(CAST(:user AS bigint))"), {"user": user_id})


def clock(session: DbSession) -> datetime:
    """The database's clock now (history stamps taken after a lock)."""
    value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value


# -- one user ------------------------------------------------------------------------------

_UPSERT = """
WITH src AS (
    SELECT CAST(:user AS bigint) AS user_id, segment_id, expires_at
    FROM unnest(CAST(:segments AS int[]), CAST(:expires AS timestamptz[])) AS t(segment_id, expires_at)
    ORDER BY segment_id
),
up AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT user_id, segment_id, :now, expires_at FROM src
    ON CONFLICT (user_id, segment_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
        WHERE memberships.expires_at IS DISTINCT FROM EXCLUDED.expires_at
    RETURNING user_id, segment_id, (xmax = 0) AS inserted,
              COALESCE(CAST(:at AS timestamptz), clock_timestamp()) AS at
),
unexcluded AS (
    DELETE FROM rollout_exclusions e USING src
    WHERE e.user_id = src.user_id AND e.segment_id = src.segment_id
),
ev AS ({events})
SELECT segment_id, inserted FROM up
""".format(events=_events(
    "SELECT up.user_id, up.segment_id, s.slug, 'added', :reason, up.at, :actor "
    "FROM up JOIN segments s ON s.id = up.segment_id WHERE up.inserted"))

_REMOVE = """
WITH del AS (
    DELETE FROM memberships
    WHERE user_id = :user AND segment_id = ANY(CAST(:segments AS int[]))
    RETURNING segment_id
),
exc AS (
    INSERT INTO rollout_exclusions (user_id, segment_id, created_at)
    SELECT :user, sid, :now FROM unnest(CAST(:rollout_segments AS int[])) AS sid ORDER BY sid
    ON CONFLICT DO NOTHING
    RETURNING segment_id
),
gone AS (SELECT segment_id FROM del UNION SELECT segment_id FROM exc),
ev AS ({events})
SELECT segment_id FROM gone
""".format(events=_events(
    "SELECT :user, gone.segment_id, s.slug, 'removed', :reason, "
    "COALESCE(CAST(:at AS timestamptz), clock_timestamp()), :actor "
    "FROM gone JOIN segments s ON s.id = gone.segment_id"))


def upsert(session: DbSession, user_id: int, expiries: Mapping[int, datetime | None], now: datetime,
           reason: Reason, actor: str, *, at: datetime | None = None) -> Counts:
    """Add the user to segments (segment id -> expiry) or update the expiry of ones they
    are in; one ``added`` event per new membership. Lifts rollout exclusions."""
    rows = _run(session, _UPSERT, {
        "user": user_id, "segments": list(expiries), "expires": list(expiries.values()),
        "now": now, "at": at, "reason": reason, "actor": actor})
    counts = Counts(set(), set())
    for segment_id, inserted in rows:
        (counts.added if inserted else counts.updated).add(segment_id)
    return counts


def remove(session: DbSession, user_id: int, segment_ids: Sequence[int], rollout_segment_ids: Sequence[int],
           now: datetime, reason: Reason, actor: str, *, at: datetime | None = None) -> set[int]:
    """Remove a user from segments and exclude them from ``rollout_segment_ids``; returns the
    segments the user actually left (one ``removed`` event each)."""
    rows = _run(session, _REMOVE, {
        "user": user_id, "segments": list(segment_ids), "rollout_segments": list(rollout_segment_ids),
        "now": now, "at": at, "reason": reason, "actor": actor})
    return {row[0] for row in rows}


# -- one segment, many users ---------------------------------------------------------------

def bulk_insert(session: DbSession, user_ids: Collection[int], segment_id: int, slug: str,
                expiry: datetime | None, now: datetime, reason: Reason, actor: str,
                *, at: datetime | None = None) -> tuple[int, int]:
    """Add many users to one segment; returns (added, expiry updated).

    The caller holds the segment row FOR UPDATE, so no other writer inserts into this
    segment meanwhile: plain anti-join INSERTs are safe and skip ON CONFLICT's speculative
    insertion on every row. The ids arrive through COPY into a temporary table.
    """
    _fill_bulk_ids(session, user_ids)
    params = {"segment": segment_id, "slug": slug, "now": now, "expiry": expiry,
              "at": at or clock(session), "reason": reason, "actor": actor}
    new_rows = ("FROM (SELECT DISTINCT user_id FROM bulk_ids) b WHERE NOT EXISTS (SELECT 1 FROM memberships m "
                "WHERE m.user_id = b.user_id AND m.segment_id = :segment)")
    updated = _run(session, "UPDATE memberships SET expires_at = :expiry WHERE segment_id = :segment "
                            "AND user_id IN (SELECT user_id FROM bulk_ids) "
                            "AND expires_at IS DISTINCT FROM :expiry", params).rowcount
    _run(session, _events(f"SELECT b.user_id, :segment, :slug, 'added', :reason, :at, :actor {new_rows}"), params)
    added = _run(session, "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
                          f"SELECT b.user_id, :segment, :now, :expiry {new_rows}", params).rowcount
    _run(session, "DELETE FROM rollout_exclusions WHERE segment_id = :segment "
                  "AND user_id IN (SELECT user_id FROM bulk_ids)", params)
    return added, updated


def _fill_bulk_ids(session: DbSession, user_ids: Collection[int]) -> None:
    session.execute(text("CREATE TEMP TABLE IF NOT EXISTS bulk_ids (user_id bigint) ON COMMIT DELETE ROWS"))
    session.execute(text("TRUNCATE bulk_ids"))
    ids = list(user_ids)
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy("COPY bulk_ids (user_id) FROM STDIN") as copy:
        for start in range(0, len(ids), COPY_CHUNK):
            copy.write("\n".join(map(str, ids[start:start + COPY_CHUNK])) + "\n")
    session.execute(text("ANALYZE bulk_ids"))


def remove_all_for_segment(session: DbSession, segment_id: int, slug: str, now: datetime, actor: str) -> int:
    """Every member leaves a segment being deleted (the caller holds its row FOR UPDATE).

    Rows already expired (purge not run yet) left at their expiry (``ttl``); the rest leave
    now (``segment_deleted``). Returns how many live members left."""
    params = {"segment": segment_id, "slug": slug, "now": now, "actor": actor}
    left = _run(session, """
WITH del AS (DELETE FROM memberships WHERE segment_id = :segment RETURNING user_id, expires_at),
ev AS ({events})
SELECT count(*) FILTER (WHERE expires_at IS NULL OR expires_at > :now) FROM del
""".format(events=_events(
        "SELECT user_id, :segment, :slug, 'removed', "
        "CASE WHEN expires_at <= :now THEN 'ttl' ELSE 'segment_deleted' END, "
        "CASE WHEN expires_at <= :now THEN expires_at ELSE :now END, "
        "CASE WHEN expires_at <= :now THEN 'system' ELSE :actor END FROM del")), params).scalar_one()
    _run(session, "DELETE FROM rollout_exclusions WHERE segment_id = :segment", params)
    return int(left)


# -- TTL expiry ----------------------------------------------------------------------------

_EXPIRE = """
WITH victims AS (
    SELECT user_id, segment_id FROM memberships
    WHERE expires_at <= :now {scope}
    ORDER BY expires_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
),
del AS (
    DELETE FROM memberships m USING victims v
    WHERE m.user_id = v.user_id AND m.segment_id = v.segment_id
    RETURNING m.user_id, m.segment_id, m.expires_at
),
ev AS ({events})
SELECT count(*) FROM del
"""
_EXPIRE_EVENTS = _events("SELECT del.user_id, del.segment_id, s.slug, 'removed', 'ttl', del.expires_at, 'system' "
                         "FROM del JOIN segments s ON s.id = del.segment_id")


def expire_batch(session: DbSession, now: datetime, limit: int, *, user_id: int | None = None,
                 segment_id: int | None = None) -> int:
    """Delete up to ``limit`` memberships expired at ``now``, skipping rows another
    transaction holds; each leaves a ``ttl`` event stamped with its true expiry time.
    Returns how many were removed (0: nothing expired is left that is not locked)."""
    scope, params = "", {"now": now, "limit": limit}
    if user_id is not None:
        scope += " AND user_id = :user"
        params["user"] = user_id
    if segment_id is not None:
        scope += " AND segment_id = :segment"
        params["segment"] = segment_id
    sql = _EXPIRE.format(scope=scope, events=_EXPIRE_EVENTS)
    return int(_run(session, sql, params).scalar_one())
