"""Set-based membership writes that also append their history rows.

Each write is one statement on PostgreSQL (data-modifying CTEs, ``INSERT ... ON CONFLICT``),
so concurrent writers are serialised by row locks and every history row is stamped with
``clock_timestamp()`` taken after its row lock: history order equals commit order. (Callers
may pass an explicit event time ``at`` instead: backfills and tests with a fixed clock.)
SQLite (the embedded default) has a single writer, so there the same effect is reached
with plain sequential statements on a temporary table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from webapp.models.types import UTCDateTime


@dataclass
class Counts:
    """Segment ids the user was added to, and those whose expiry changed."""

    added: set[int]
    updated: set[int]


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- PostgreSQL ---------------------------------------------------------------------------

_PG_UPSERT = """
WITH src AS (
    SELECT CAST(:user AS bigint) AS user_id, segment_id, expires_at
    FROM unnest(CAST(:segments AS int[]), CAST(:expires AS timestamptz[])) AS t(segment_id, expires_at)
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
ev AS (
    INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor)
    SELECT up.user_id, up.segment_id, s.slug, 'added', :reason, up.at, :actor
    FROM up JOIN segments s ON s.id = up.segment_id WHERE up.inserted
)
SELECT segment_id, inserted FROM up
"""

_PG_REMOVE = """
WITH del AS (
    DELETE FROM memberships
    WHERE user_id = :user AND segment_id = ANY(CAST(:segments AS int[]))
    RETURNING segment_id
),
exc AS (
    INSERT INTO rollout_exclusions (user_id, segment_id, created_at)
    SELECT :user, sid, :now FROM unnest(CAST(:rollout_segments AS int[])) AS sid
    ON CONFLICT DO NOTHING
    RETURNING segment_id
),
gone AS (SELECT segment_id FROM del UNION SELECT segment_id FROM exc),
ev AS (
    INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor)
    SELECT :user, gone.segment_id, s.slug, 'removed', :reason,
           COALESCE(CAST(:at AS timestamptz), clock_timestamp()), :actor
    FROM gone JOIN segments s ON s.id = gone.segment_id
)
SELECT segment_id FROM gone
"""


def upsert(session: Session, user_id: int, expiries: dict[int, datetime | None], now: datetime,
           reason: str, actor: str, *, at: datetime | None = None) -> Counts:
    """Add the user to segments (segment id -> expiry) or update the expiry of ones they are
    in; write an ``added`` event per new membership."""
    if _is_pg(session):
        return _pg_upsert(session, user_id, expiries, now, reason, actor, at)
    return _sqlite_upsert(session, user_id, expiries, now, reason, actor, at or now)


def _pg_upsert(session, user_id, expiries, now, reason, actor, at) -> Counts:
    stmt = text(_PG_UPSERT).bindparams(bindparam("now", type_=UTCDateTime), bindparam("at", type_=UTCDateTime))
    result = session.execute(stmt, {
        "user": user_id, "segments": list(expiries), "expires": list(expiries.values()),
        "now": now, "at": at, "reason": reason, "actor": actor,
    })
    counts = Counts(set(), set())
    for segment_id, inserted in result:
        (counts.added if inserted else counts.updated).add(segment_id)
    return counts


def remove(session: Session, user_id: int, segment_ids: Sequence[int],
           rollout_segment_ids: Sequence[int], now: datetime, reason: str, actor: str,
           at: datetime | None = None) -> set[int]:
    """Remove a user from segments; exclude them from ``rollout_segment_ids``.

    Returns the segments the user actually left (each gets one ``removed`` event).
    """
    if _is_pg(session):
        stmt = text(_PG_REMOVE).bindparams(bindparam("now", type_=UTCDateTime),
                                           bindparam("at", type_=UTCDateTime))
        result = session.execute(stmt, {
            "user": user_id, "segments": list(segment_ids),
            "rollout_segments": list(rollout_segment_ids), "now": now, "at": at,
            "reason": reason, "actor": actor,
        })
        return {row[0] for row in result}
    return _sqlite_remove(session, user_id, segment_ids, rollout_segment_ids, at or now, reason, actor)


# -- SQLite (embedded default: one writer at a time) ---------------------------------------

def _sqlite_upsert(session, user_id, expiries, now, reason, actor, at) -> Counts:
    session.execute(text("CREATE TEMP TABLE IF NOT EXISTS src (user_id INTEGER, segment_id INTEGER, "
                         "expires_at TEXT, PRIMARY KEY (user_id, segment_id))"))
    session.execute(text("DELETE FROM src"))
    session.execute(text("INSERT INTO src VALUES (:u, :s, :e)").bindparams(bindparam("e", type_=UTCDateTime)),
                    [{"u": user_id, "s": sid, "e": until} for sid, until in expiries.items()])
    ts = bindparam("now", type_=UTCDateTime)
    updated = session.execute(text(
        "UPDATE memberships SET expires_at = src.expires_at FROM src "
        "WHERE memberships.user_id = src.user_id AND memberships.segment_id = src.segment_id "
        "AND memberships.expires_at IS NOT src.expires_at "
        "RETURNING memberships.user_id, memberships.segment_id")).all()
    added = session.execute(text(
        "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
        "SELECT user_id, segment_id, :now, expires_at FROM src WHERE true "
        "ON CONFLICT DO NOTHING RETURNING user_id, segment_id").bindparams(ts), {"now": now}).all()
    session.execute(text("DELETE FROM rollout_exclusions WHERE (user_id, segment_id) IN "
                         "(SELECT user_id, segment_id FROM src)"))
    _sqlite_events(session, added, "added", reason, actor, at)
    return Counts({sid for _, sid in added}, {sid for _, sid in updated})


def _sqlite_remove(session, user_id, segment_ids, rollout_segment_ids, now, reason, actor):
    gone = {r[0] for r in session.execute(
        text("DELETE FROM memberships WHERE user_id = :u AND segment_id IN :s RETURNING segment_id")
        .bindparams(bindparam("s", expanding=True)), {"u": user_id, "s": list(segment_ids) or [0]})}
    if rollout_segment_ids:
        stmt = text("INSERT INTO rollout_exclusions (user_id, segment_id, created_at) "
                    "VALUES (:u, :s, :now) ON CONFLICT DO NOTHING RETURNING segment_id"
                    ).bindparams(bindparam("now", type_=UTCDateTime))
        for sid in rollout_segment_ids:
            gone.update(r[0] for r in session.execute(stmt, {"u": user_id, "s": sid, "now": now}))
    _sqlite_events(session, [(user_id, sid) for sid in gone], "removed", reason, actor, now)
    return gone


def _sqlite_events(session, pairs, action, reason, actor, at) -> None:
    if not pairs:
        return
    stmt = text(
        "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, "
        "occurred_at, actor) SELECT :u, id, slug, :action, :reason, :at, :actor "
        "FROM segments WHERE id = :s").bindparams(bindparam("at", type_=UTCDateTime))
    session.execute(stmt, [{"u": u, "s": s, "action": action, "reason": reason, "at": at,
                            "actor": actor} for u, s in pairs])


# -- bulk add (one segment, many users) ----------------------------------------------------

COPY_CHUNK = 100_000


def bulk_insert(session: Session, user_ids: Sequence[int], segment_id: int, slug: str,
                expiry: datetime | None, now: datetime, reason: str, actor: str,
                at: datetime | None = None) -> tuple[int, int]:
    """Add many users to one segment: returns (added, expiry updated).

    The caller holds the segment row FOR UPDATE, so no other writer inserts into this
    segment meanwhile (per-user changes take a share lock on it first). That makes plain
    anti-join INSERTs safe and saves ON CONFLICT's speculative insertion on every row. The
    ids go to a temporary table (COPY on PostgreSQL, streamed in chunks) rather than one
    huge array parameter.
    """
    _fill_bulk_ids(session, user_ids)
    stamp = at or _db_clock(session)  # taken after the lock: history order = commit order
    ts = (bindparam("now", type_=UTCDateTime), bindparam("expiry", type_=UTCDateTime),
          bindparam("at", type_=UTCDateTime))
    params = {"segment": segment_id, "slug": slug, "now": now, "expiry": expiry, "at": stamp,
              "reason": reason, "actor": actor}
    new_rows = ("FROM (SELECT DISTINCT user_id FROM bulk_ids) b WHERE NOT EXISTS (SELECT 1 FROM memberships m "
                "WHERE m.user_id = b.user_id AND m.segment_id = :segment)")
    updated = session.execute(text(
        "UPDATE memberships SET expires_at = :expiry WHERE segment_id = :segment "
        "AND user_id IN (SELECT user_id FROM bulk_ids) AND expires_at IS DISTINCT FROM :expiry"
    ).bindparams(*ts[1:2]), params).rowcount
    session.execute(text(
        "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor) "
        f"SELECT b.user_id, :segment, :slug, 'added', :reason, :at, :actor {new_rows}").bindparams(ts[2]), params)
    added = session.execute(text(
        f"INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
        f"SELECT b.user_id, :segment, :now, :expiry {new_rows}").bindparams(*ts[:2]), params).rowcount
    session.execute(text("DELETE FROM rollout_exclusions WHERE segment_id = :segment "
                         "AND user_id IN (SELECT user_id FROM bulk_ids)"), params)
    return added, updated


def _fill_bulk_ids(session: Session, user_ids: Sequence[int]) -> None:
    if _is_pg(session):
        session.execute(text("CREATE TEMP TABLE IF NOT EXISTS bulk_ids (user_id bigint) ON COMMIT DELETE ROWS"))
        session.execute(text("TRUNCATE bulk_ids"))
        cursor = session.connection().connection.driver_connection.cursor()
        with cursor.copy("COPY bulk_ids (user_id) FROM STDIN") as copy:
            for start in range(0, len(user_ids), COPY_CHUNK):
                chunk = user_ids[start:start + COPY_CHUNK]
                copy.write("\n".join(map(str, chunk)) + "\n")
        session.execute(text("ANALYZE bulk_ids"))
        return
    session.execute(text("CREATE TEMP TABLE IF NOT EXISTS bulk_ids (user_id INTEGER)"))
    session.execute(text("DELETE FROM bulk_ids"))
    session.execute(text("INSERT INTO bulk_ids VALUES (:u)"), [{"u": u} for u in user_ids])


def _db_clock(session: Session) -> datetime:
    if _is_pg(session):
        return session.execute(text("SELECT clock_timestamp()")).scalar_one()
    return datetime.now(UTC)


# -- TTL expiry ----------------------------------------------------------------------------

_PG_EXPIRE = """
WITH victims AS (
    SELECT user_id, segment_id FROM memberships
    WHERE expires_at <= :now {scope}
    ORDER BY expires_at LIMIT :limit
),
del AS (
    DELETE FROM memberships m USING victims v
    WHERE m.user_id = v.user_id AND m.segment_id = v.segment_id AND m.expires_at <= :now
    RETURNING m.user_id, m.segment_id, m.expires_at
),
ev AS (
    INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, occurred_at, actor)
    SELECT del.user_id, del.segment_id, s.slug, 'removed', 'ttl', del.expires_at, 'system'
    FROM del JOIN segments s ON s.id = del.segment_id
)
SELECT count(*) FROM del
"""


def expire_batch(session: Session, now: datetime, limit: int, *, user_id: int | None = None,
                 segment_id: int | None = None) -> int:
    """Delete up to ``limit`` memberships expired at ``now``; each leaves a ``ttl`` event
    stamped with its true expiry time. Returns how many were removed."""
    scope, params = "", {"now": now, "limit": limit}
    if user_id is not None:
        scope += " AND user_id = :user"
        params["user"] = user_id
    if segment_id is not None:
        scope += " AND segment_id = :segment"
        params["segment"] = segment_id
    ts = bindparam("now", type_=UTCDateTime)
    if _is_pg(session):
        return session.execute(text(_PG_EXPIRE.format(scope=scope)).bindparams(ts), params).scalar_one()
    victims = session.execute(text(
        f"SELECT user_id, segment_id, expires_at FROM memberships WHERE expires_at <= :now {scope} "
        "ORDER BY expires_at LIMIT :limit").bindparams(ts), params).all()
    if not victims:
        return 0
    session.execute(text(
        "INSERT INTO membership_events (user_id, segment_id, segment_slug, action, reason, "
        "occurred_at, actor) SELECT :u, id, slug, 'removed', 'ttl', :at, 'system' "
        "FROM segments WHERE id = :s"), [{"u": u, "s": s, "at": e} for u, s, e in victims])
    session.execute(text("DELETE FROM memberships WHERE user_id = :u AND segment_id = :s"),
                    [{"u": u, "s": s} for u, s, _ in victims])
    return len(victims)
